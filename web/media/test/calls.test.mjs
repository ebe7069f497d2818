// Unit tests of the SDK's calls layer (web/client/src/calls.ts, bundled here
// with esbuild) in Node: the real mediasoup-client with its FakeHandler, and
// a scripted CallSignaling that answers like the Parley SFU (payloads from
// `go run ./internal/media/cmd/mediafixtures`, or PARLEY_MEDIA_FIXTURES).
// They pin down the orderings a browser test cannot force: announcements
// before the receive transport exists, a producer closed while its consume
// is in flight, the call ending during join, error replies.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync } from 'node:fs';
import { fileURLToPath, pathToFileURL } from 'node:url';
import path from 'node:path';

import { build } from 'esbuild';
import { Device } from 'mediasoup-client';
import { FakeHandler } from 'mediasoup-client/handlers/FakeHandler';
import * as fakeParameters from 'mediasoup-client/fakeParameters';
import { FakeMediaStreamTrack } from 'fake-mediastreamtrack';

const here = path.dirname(fileURLToPath(import.meta.url));
const webMedia = path.resolve(here, '..');
const repoRoot = path.resolve(webMedia, '..', '..');

// calls.ts → node_modules/.cache (inside web/media, so that its
// mediasoup-client import resolves to the same module as ours).
const outfile = path.join(webMedia, 'node_modules', '.cache', 'parley-calls-test', 'calls.mjs');
mkdirSync(path.dirname(outfile), { recursive: true });
await build({
  entryPoints: [path.join(repoRoot, 'web', 'client', 'src', 'calls.ts')],
  bundle: true, format: 'esm', platform: 'node', target: 'node20',
  external: ['mediasoup-client'], outfile, logLevel: 'warning',
});
const { Call, CallError, videoEncodings, supportsSimulcast, RTP_STREAM_ID_URI } = await import(`${pathToFileURL(outfile).href}?t=${Date.now()}`);

const fx = process.env.PARLEY_MEDIA_FIXTURES
  ? JSON.parse(readFileSync(process.env.PARLEY_MEDIA_FIXTURES, 'utf8'))
  : JSON.parse(execFileSync('go', ['run', './internal/media/cmd/mediafixtures'], {
    cwd: repoRoot, encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'],
  }));

const ROOM = 'r1';
const ME = 'conn-me';
const tick = () => new Promise((r) => setTimeout(r, 0));

async function until(what, fn, ms = 3000) {
  const end = Date.now() + ms;
  while (!fn()) {
    if (Date.now() > end) throw new Error(`timed out: ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

function codeError(code) {
  return Object.assign(new Error(`${code}: scripted`), { code });
}

// A CallSignaling scripted like the SFU: media:join sends
// router_capabilities, then its reply, then one new_producer per entry of
// `existing` synchronously (before the Call's continuation runs, the
// earliest they can come). `hold` names request types whose replies wait
// for release(type).
class FakeServer {
  constructor({ existing = [], existingData = [], caps = fx.rtp_capabilities, forceRelay = false, errors = {}, hold = [], noSctp = false } = {}) {
    this.connectionId = ME;
    this.existing = existing;
    this.existingData = existingData;
    this.noSctp = noSctp;
    this.dataProducers = new Map(); // data producer id → {label, protocol}
    for (const d of existingData) this.dataProducers.set(d.data_producer_id, d);
    this.caps = caps;
    this.forceRelay = forceRelay;
    this.errors = errors; // request type → error code
    this.hold = new Set(hold);
    this.held = [];
    this.requests = [];
    this.handlers = new Map();
    this.producers = new Map(); // producer id → kind, for consumer_created
    this.nextId = 0;
    for (const p of existing) this.producers.set(p.producer_id, p.kind);
  }

  on(type, fn) {
    if (!this.handlers.has(type)) this.handlers.set(type, new Set());
    this.handlers.get(type).add(fn);
    return () => this.handlers.get(type).delete(fn);
  }

  emit(type, data) {
    for (const fn of [...(this.handlers.get(type) ?? [])]) fn(data);
  }

  listeners() {
    let n = 0;
    for (const s of this.handlers.values()) n += s.size;
    return n;
  }

  announce(p) {
    this.producers.set(p.producer_id, p.kind);
    this.emit('media:new_producer', p);
  }

  announceData(d) {
    this.dataProducers.set(d.data_producer_id, d);
    this.emit('media:new_data_producer', d);
  }

  release(type) {
    const held = this.held.filter((h) => h.type === type);
    this.held = this.held.filter((h) => h.type !== type);
    for (const h of held) h.go();
  }

  request(type, data) {
    this.requests.push({ type, data });
    assert.equal(data.room_id, ROOM, `${type} carries room_id`);
    return new Promise((resolve, reject) => {
      const go = () => {
        if (this.errors[type]) return reject(codeError(this.errors[type]));
        const id = `q${++this.nextId}`;
        switch (type) {
          case 'media:join': {
            this.emit('media:router_capabilities', { rtp_capabilities: this.caps });
            const tc = structuredClone({ ...fx.transport_created, force_relay: this.forceRelay });
            if (this.noSctp) {
              delete tc.send_transport.sctpParameters;
              delete tc.recv_transport.sctpParameters;
            }
            resolve({ type: 'media:transport_created', id, data: tc });
            for (const p of this.existing) this.emit('media:new_producer', p);
            for (const d of this.existingData) this.emit('media:new_data_producer', d);
            return;
          }
          case 'media:connect_transport':
            return resolve({ type: 'media:transport_connected', id, data: { transport_id: data.transport_id } });
          case 'media:produce':
            return resolve({ type: 'media:produce_result', id, data: { id: `prod-${this.nextId}` } });
          case 'media:consume': {
            const kind = this.producers.get(data.producer_id);
            if (!kind) return reject(codeError('not_found'));
            const cc = structuredClone(fx[`consumer_created_${kind}`]);
            cc.id = `cons-${this.nextId}`;
            cc.producer_id = data.producer_id;
            cc.producer_paused = this.pausedProducers?.has(data.producer_id) ?? false;
            cc.rtp_parameters.mid = String(this.nextId);
            return resolve({ type: 'media:consumer_created', id, data: cc });
          }
          case 'media:restart_ice':
            return resolve({ type: 'media:ice_restarted', id, data: {
              transport_id: data.transport_id,
              ice_parameters: { usernameFragment: `ufrag-${this.nextId}`, password: `pwd-${this.nextId}-0123456789abcdef`, iceLite: true },
            } });
          case 'media:get_stats':
            return resolve({ type: 'media:stats', id, data: { items: this.statsItems ?? [] } });
          case 'media:produce_data':
            return resolve({ type: 'media:produce_data_result', id, data: { id: `dprod-${this.nextId}` } });
          case 'media:consume_data': {
            const d = this.dataProducers.get(data.data_producer_id);
            if (!d) return reject(codeError('not_found'));
            return resolve({ type: 'media:data_consumer_created', id, data: {
              id: `dcons-${this.nextId}`, data_producer_id: data.data_producer_id,
              sctp_stream_parameters: { streamId: this.nextId, ordered: true }, label: d.label, protocol: d.protocol,
            } });
          }
          default:
            return resolve({ type: 'ack', id });
        }
      };
      if (this.hold.has(type)) this.held.push({ type, go });
      else go();
    });
  }
}

function fakeDevice() {
  return new Device({ handlerFactory: FakeHandler.createFactory(fakeParameters) });
}

function newCall(server, opts = {}) {
  const call = new Call(server, ROOM, { Device: fakeDevice(), ...opts });
  const events = [];
  for (const ev of ['track', 'track_ended', 'peer_left', 'active_speaker', 'paused', 'resumed', 'closed', 'local_track_ended', 'error', 'ice_restarted', 'layers_changed']) {
    call.on(ev, (d) => events.push({ ev, ...d }));
  }
  return { call, events };
}

const peer = (n, kind, extra = {}) => ({
  producer_id: `peer${n}-${kind}`, user_id: `user${n}`, connection_id: `conn${n}`, kind,
  source: kind === 'audio' ? 'mic' : 'webcam', ...extra,
});

// The router's own capabilities carry rtp-stream-id (simulcast); noRidCaps
// is a router without it.
const ridCaps = () => structuredClone(fx.rtp_capabilities);
const noRidCaps = () => {
  const caps = structuredClone(fx.rtp_capabilities);
  caps.headerExtensions = caps.headerExtensions.filter((e) => e.uri !== RTP_STREAM_ID_URI && !e.uri.endsWith('repaired-rtp-stream-id'));
  return caps;
};

test('announcements that come before the receive transport are consumed; mine and other rooms are not', async () => {
  const server = new FakeServer({
    existing: [
      peer(2, 'audio'), peer(2, 'video'),
      { ...peer(9, 'video'), connection_id: ME },          // my own connection
      { ...peer(8, 'video'), room_id: 'another-room' },    // another call of this connection
    ],
  });
  const { call, events } = newCall(server);
  await call.join();
  assert.equal(call.state, 'joined');
  await until('two tracks', () => events.filter((e) => e.ev === 'track').length === 2);
  await tick();
  const tracks = events.filter((e) => e.ev === 'track');
  assert.deepEqual(tracks.map((t) => [t.producerId, t.kind, t.source, t.userId, t.connectionId]).sort(), [
    ['peer2-audio', 'audio', 'mic', 'user2', 'conn2'],
    ['peer2-video', 'video', 'webcam', 'user2', 'conn2'],
  ]);
  for (const t of tracks) {
    assert.ok(t.consumerId.startsWith('cons-'));
    assert.equal(t.track.kind, t.kind);
  }
  const consumed = server.requests.filter((r) => r.type === 'media:consume').map((r) => r.data.producer_id);
  assert.deepEqual(consumed.sort(), ['peer2-audio', 'peer2-video']);
  assert.equal(server.requests[0].type, 'media:join');
  // A later announcement is consumed at once, a repeated one only once.
  server.announce(peer(3, 'video'));
  server.announce(peer(3, 'video'));
  await until('third track', () => events.filter((e) => e.ev === 'track').length === 3);
  await tick();
  assert.equal(server.requests.filter((r) => r.type === 'media:consume').length, 3);
  assert.equal(call.remoteTracks.length, 3);
  assert.deepEqual(events.filter((e) => e.ev === 'error'), []);
});

test('transports: ice_servers passed through, force_relay means relay, else the option or all', async () => {
  for (const [forceRelay, option, want] of [[true, undefined, 'relay'], [true, 'all', 'relay'], [false, undefined, 'all'], [false, 'relay', 'relay']]) {
    const server = new FakeServer({ forceRelay });
    const { call } = newCall(server, option ? { iceTransportPolicy: option } : {});
    const seen = [];
    for (const m of ['createSendTransport', 'createRecvTransport']) {
      const orig = call.device[m].bind(call.device);
      call.device[m] = (o) => { seen.push(o); return orig(o); };
    }
    await call.join();
    assert.equal(seen.length, 2);
    for (const o of seen) {
      assert.equal(o.iceTransportPolicy, want, `force_relay ${forceRelay}, option ${option}`);
      assert.deepEqual(o.iceServers, fx.transport_created.ice_servers);
    }
    assert.equal(call.sendTransport.id, fx.transport_created.send_transport.id);
    assert.equal(call.recvTransport.id, fx.transport_created.recv_transport.id);
    await call.leave();
  }
});

test('produce: source defaults, simulcast exactly when the router has rtp-stream-id', async () => {
  for (const [caps, wantLayers] of [[noRidCaps(), 1], [ridCaps(), 3]]) {
    const server = new FakeServer({ caps });
    const { call } = newCall(server);
    await call.join();
    assert.equal(call.simulcast, wantLayers > 1);
    const mic = await call.produce(new FakeMediaStreamTrack({ kind: 'audio' }));
    const cam = await call.produce(new FakeMediaStreamTrack({ kind: 'video', settings: { width: 1280, height: 720 } }));
    const screen = await call.produce(new FakeMediaStreamTrack({ kind: 'video' }), {
      source: 'screen', encodings: [{ maxBitrate: 2_000_000 }],
    });
    const produces = server.requests.filter((r) => r.type === 'media:produce').map((r) => r.data);
    assert.deepEqual(produces.map((d) => [d.kind, d.source]), [['audio', 'mic'], ['video', 'webcam'], ['video', 'screen']]);
    assert.equal(produces[0].rtp_parameters.encodings.length, 1);
    assert.equal(produces[1].rtp_parameters.encodings.length, wantLayers);
    assert.equal(produces[2].rtp_parameters.encodings.length, 1, 'explicit encodings win');
    assert.equal(produces[2].rtp_parameters.encodings[0].maxBitrate, 2_000_000);
    assert.equal(server.requests.filter((r) => r.type === 'media:connect_transport').length, 1);
    assert.deepEqual([mic.source, cam.source, screen.source], ['mic', 'webcam', 'screen']);
    assert.ok(mic.id.startsWith('prod-'));
    assert.equal(call.localProducers.length, 3);
    await call.leave();
  }
  assert.equal(supportsSimulcast(ridCaps()), true);
  assert.equal(supportsSimulcast(noRidCaps()), false);
  assert.deepEqual(videoEncodings(ridCaps(), 720).map((e) => e.scaleResolutionDownBy), [4, 2, 1]);
  assert.deepEqual(videoEncodings(ridCaps(), 360).map((e) => e.scaleResolutionDownBy), [2, 1]);
  assert.equal(videoEncodings(ridCaps(), 180), undefined);
  assert.equal(videoEncodings(noRidCaps(), 720), undefined);
});

test('pause/resume: unsupported keeps the local state quietly, other errors reject', async () => {
  const server = new FakeServer({ errors: { 'media:producer_pause': 'unsupported', 'media:producer_resume': 'unsupported' } });
  const { call } = newCall(server);
  await call.join();
  const cam = await call.produce(new FakeMediaStreamTrack({ kind: 'video' }));
  await cam.pause();
  assert.equal(cam.paused, true);
  assert.equal(cam.track.enabled, false);
  await cam.resume();
  assert.equal(cam.paused, false);
  const sent = server.requests.filter((r) => r.type.startsWith('media:producer_')).map((r) => [r.type, r.data.producer_id]);
  assert.deepEqual(sent, [['media:producer_pause', cam.id], ['media:producer_resume', cam.id]]);

  server.errors['media:producer_pause'] = 'forbidden';
  await assert.rejects(cam.pause(), (e) => e.code === 'forbidden');
  assert.equal(cam.paused, true, 'the local pause stays');
  delete server.errors['media:producer_resume'];
  await cam.resume();
  assert.equal(cam.paused, false);
});

test('close and a track that ends: media:producer_close, local_track_ended', async () => {
  const server = new FakeServer({ errors: {} });
  const { call, events } = newCall(server);
  await call.join();
  const cam = await call.produce(new FakeMediaStreamTrack({ kind: 'video' }));
  const screenTrack = new FakeMediaStreamTrack({ kind: 'video' });
  const screen = await call.produce(screenTrack, { source: 'screen' });
  await cam.close();
  await cam.close(); // twice is harmless
  assert.equal(cam.closed, true);
  screenTrack.remoteStop(); // "stop sharing"
  await until('screen closed', () => screen.closed && server.requests.filter((r) => r.type === 'media:producer_close').length === 2);
  assert.deepEqual(server.requests.filter((r) => r.type === 'media:producer_close').map((r) => r.data.producer_id), [cam.id, screen.id]);
  assert.deepEqual(events.filter((e) => e.ev === 'local_track_ended').map((e) => [e.producerId, e.source, e.reason]), [
    [cam.id, 'webcam', 'closed'], [screen.id, 'screen', 'track_ended'],
  ]);
  assert.equal(call.localProducers.length, 0);
  // not_found (already gone on the server) is not an error.
  const mic = await call.produce(new FakeMediaStreamTrack({ kind: 'audio' }));
  server.errors['media:producer_close'] = 'not_found';
  await mic.close();
});

test('producer_closed, a close during consume, peer_left, paused/resumed, active_speaker', async () => {
  const server = new FakeServer({ existing: [peer(2, 'audio'), peer(2, 'video'), peer(3, 'audio')] });
  const { call, events } = newCall(server);
  await call.join();
  await until('three tracks', () => call.remoteTracks.length === 3);

  server.emit('media:producer_closed', { producer_id: 'peer2-video', user_id: 'user2' });
  const ended = events.filter((e) => e.ev === 'track_ended');
  assert.deepEqual(ended.map((e) => [e.producerId, e.reason, e.connectionId]), [['peer2-video', 'producer_closed', 'conn2']]);
  assert.equal(ended[0].track.readyState, 'ended');

  // Closed while its media:consume is in flight: no 'track', the consumer is dropped.
  server.hold.add('media:consume');
  server.announce(peer(4, 'video'));
  await until('consume sent', () => server.held.length === 1);
  server.emit('media:producer_closed', { producer_id: 'peer4-video', user_id: 'user4' });
  server.release('media:consume');
  await tick(); await tick();
  assert.ok(!events.some((e) => e.producerId === 'peer4-video'), JSON.stringify(events.map((e) => [e.ev, e.producerId])));
  // The same when its peer leaves meanwhile.
  server.announce(peer(5, 'video'));
  await until('consume sent', () => server.held.length === 1);
  server.emit('media:peer_left', { room_id: ROOM, user_id: 'user5', connection_id: 'conn5' });
  server.release('media:consume');
  await tick(); await tick();
  assert.ok(!events.some((e) => e.ev === 'track' && e.producerId === 'peer5-video'));
  server.hold.clear();

  // paused / resumed follow the owner; the local consumer too.
  server.emit('media:producer_paused', { producer_id: 'peer3-audio', user_id: 'user3' });
  const p = events.find((e) => e.ev === 'paused');
  assert.equal(p.producerId, 'peer3-audio');
  assert.equal(p.track.enabled, false);
  server.emit('media:producer_resumed', { producer_id: 'peer3-audio', user_id: 'user3' });
  assert.equal(events.find((e) => e.ev === 'resumed').producerId, 'peer3-audio');

  // active_speaker: of another room ignored, local flag.
  const mic = await call.produce(new FakeMediaStreamTrack({ kind: 'audio' }));
  server.emit('media:active_speaker', { room_id: 'other', producer_id: 'peer3-audio', user_id: 'user3', connection_id: 'conn3' });
  server.emit('media:active_speaker', { room_id: ROOM, producer_id: 'peer3-audio', user_id: 'user3', connection_id: 'conn3' });
  server.emit('media:active_speaker', { room_id: ROOM, producer_id: mic.id, user_id: 'me', connection_id: ME });
  assert.deepEqual(events.filter((e) => e.ev === 'active_speaker').map((e) => [e.producerId, e.local]), [['peer3-audio', false], [mic.id, true]]);

  // peer_left: track_ended for each of its tracks, then peer_left.
  const before = events.length;
  server.emit('media:peer_left', { room_id: ROOM, user_id: 'user2', connection_id: 'conn2' });
  assert.deepEqual(events.slice(before).map((e) => [e.ev, e.producerId ?? e.connectionId, e.reason]), [
    ['track_ended', 'peer2-audio', 'peer_left'], ['peer_left', 'conn2', undefined],
  ]);
  assert.deepEqual(call.remoteTracks.map((t) => t.producerId), ['peer3-audio']);
  assert.deepEqual(events.filter((e) => e.ev === 'error'), []);
});

test('layers: setPreferredLayers sends media:set_preferred_layers; layers_changed follows its track', async () => {
  const server = new FakeServer({ existing: [peer(2, 'video')], hold: ['media:consume'] });
  const { call, events } = newCall(server);
  await call.join();
  await until('consume sent', () => server.held.length === 1);
  server.release('media:consume');
  const early = `cons-${server.nextId}`;
  // Sent by the server right after consumer_created: before the consumer is ready here.
  server.emit('media:consumer_layers_changed', { consumer_id: early, spatial_layer: 2, temporal_layer: 2 });
  await until('track', () => events.some((e) => e.ev === 'layers_changed'));
  assert.deepEqual(events.map((e) => e.ev), ['track', 'layers_changed']);
  const track = events[0];
  assert.equal(track.consumerId, early);
  assert.deepEqual([events[1].producerId, events[1].spatialLayer, events[1].temporalLayer], ['peer2-video', 2, 2]);

  server.emit('media:consumer_layers_changed', { consumer_id: early, spatial_layer: 0, temporal_layer: 1 });
  server.emit('media:consumer_layers_changed', { room_id: 'other', consumer_id: early, spatial_layer: 1, temporal_layer: 1 });
  server.emit('media:consumer_layers_changed', { consumer_id: 'unknown', spatial_layer: 1, temporal_layer: 1 });
  assert.deepEqual(events.filter((e) => e.ev === 'layers_changed').map((e) => [e.spatialLayer, e.temporalLayer]), [[2, 2], [0, 1]]);

  await call.setPreferredLayers(early, 0);
  await call.setPreferredLayers(early, 2, 1);
  const reqs = server.requests.filter((r) => r.type === 'media:set_preferred_layers').map((r) => r.data);
  assert.deepEqual(reqs, [
    { room_id: ROOM, consumer_id: early, spatial_layer: 0 },
    { room_id: ROOM, consumer_id: early, spatial_layer: 2, temporal_layer: 1 },
  ]);
  server.errors['media:set_preferred_layers'] = 'not_found';
  await assert.rejects(call.setPreferredLayers('nope', 1), (e) => e.code === 'not_found');
  await call.leave();
  await assert.rejects(call.setPreferredLayers(early, 1), (e) => e.code === 'bad_state');
});

test('room_closed: closed, everything torn down, other rooms ignored', async () => {
  const server = new FakeServer({ existing: [peer(2, 'video')] });
  const { call, events } = newCall(server);
  await call.join();
  await call.produce(new FakeMediaStreamTrack({ kind: 'audio' }));
  await until('track', () => call.remoteTracks.length === 1);
  const send = call.sendTransport;
  server.emit('media:room_closed', { room_id: 'another-room' });
  assert.equal(call.state, 'joined');
  server.emit('media:room_closed', { room_id: ROOM });
  assert.equal(call.state, 'closed');
  assert.equal(send.closed, true);
  assert.equal(call.sendTransport, null);
  assert.deepEqual(events.filter((e) => ['track_ended', 'local_track_ended', 'closed'].includes(e.ev)).map((e) => [e.ev, e.reason]), [
    ['track_ended', 'room_closed'], ['local_track_ended', 'room_closed'], ['closed', 'room_closed'],
  ]);
  assert.equal(server.listeners(), 0, 'unsubscribed');
  // No media:leave for a call that ended.
  await call.leave();
  assert.ok(!server.requests.some((r) => r.type === 'media:leave'));
});

test('the call ends during join: join rejects, state closed', async () => {
  const server = new FakeServer({ hold: ['media:join'] });
  const { call, events } = newCall(server);
  const joining = call.join();
  assert.equal(call.state, 'joining');
  await until('join sent', () => server.held.length === 1);
  server.emit('media:room_closed', { room_id: ROOM });
  server.release('media:join');
  await assert.rejects(joining, (e) => e instanceof CallError && e.code === 'closed');
  assert.equal(call.state, 'closed');
  assert.equal(call.sendTransport, null);
  assert.deepEqual(events.map((e) => e.ev), ['closed']);
});

test('a refused join: the signaling error, back to idle, join again', async () => {
  const server = new FakeServer({ errors: { 'media:join': 'not_found' } });
  const { call } = newCall(server);
  await assert.rejects(call.join(), (e) => e.code === 'not_found');
  assert.equal(call.state, 'idle');
  assert.equal(server.listeners(), 0);
  delete server.errors['media:join'];
  await call.join();
  assert.equal(call.state, 'joined');
});

test('leave: media:leave, local teardown, join again; disconnected closes', async () => {
  const server = new FakeServer({ existing: [peer(2, 'video')] });
  const { call, events } = newCall(server);
  await call.join();
  const mic = await call.produce(new FakeMediaStreamTrack({ kind: 'audio' }));
  await until('track', () => call.remoteTracks.length === 1);
  await call.leave();
  assert.equal(call.state, 'left');
  assert.equal(mic.closed, true);
  assert.equal(server.requests.at(-1).type, 'media:leave');
  assert.deepEqual(events.filter((e) => e.ev.endsWith('track_ended')).map((e) => [e.ev, e.reason]), [
    ['track_ended', 'left'], ['local_track_ended', 'left'],
  ]);
  assert.ok(!events.some((e) => e.ev === 'closed'));
  assert.equal(server.listeners(), 0);
  await assert.rejects(call.produce(new FakeMediaStreamTrack({ kind: 'audio' })), (e) => e.code === 'bad_state');

  // The same Call joins again (the device stays loaded) and sees the peer again.
  await call.join();
  await until('track again', () => call.remoteTracks.length === 1);
  server.emit('disconnected', { code: 1006, reason: '', willReconnect: true });
  assert.equal(call.state, 'closed');
  assert.deepEqual(events.filter((e) => e.ev === 'closed').map((e) => e.reason), ['disconnected']);
  assert.equal(events.filter((e) => e.ev === 'track').length, events.filter((e) => e.ev === 'track_ended').length,
    'every track ended once');
});

test('the call ends while producing: produce rejects, nothing kept', async () => {
  const server = new FakeServer({ hold: ['media:produce'] });
  const { call } = newCall(server);
  await call.join();
  const producing = call.produce(new FakeMediaStreamTrack({ kind: 'audio' }));
  await until('produce sent', () => server.held.length === 1);
  server.emit('media:room_closed', { room_id: ROOM });
  server.release('media:produce');
  await assert.rejects(producing);
  assert.equal(call.localProducers.length, 0);
  assert.equal(call.state, 'closed');
});

test('remote tracks: a paused producer starts paused; pauseRemote/resumeRemote; the owner resuming keeps my pause', async () => {
  const server = new FakeServer({ existing: [peer(2, 'video'), peer(3, 'audio')] });
  server.pausedProducers = new Set(['peer2-video']);
  const { call, events } = newCall(server);
  await call.join();
  await until('two tracks', () => call.remoteTracks.length === 2);
  const video = call.remoteTracks.find((t) => t.producerId === 'peer2-video');
  const audio = call.remoteTracks.find((t) => t.producerId === 'peer3-audio');
  assert.equal(video.producerPaused, true, 'consumer_created producer_paused');
  assert.equal(video.track.enabled, false);
  assert.ok(events.some((e) => e.ev === 'paused' && e.producerId === 'peer2-video'));
  assert.equal(audio.producerPaused, false);

  await call.pauseRemote(audio);
  assert.equal(audio.pausedByMe, true);
  assert.equal(audio.track.enabled, false);
  // The owner pausing and resuming does not undo my pause.
  server.emit('media:producer_paused', { producer_id: 'peer3-audio', user_id: 'user3' });
  server.emit('media:producer_resumed', { producer_id: 'peer3-audio', user_id: 'user3' });
  assert.equal(audio.track.enabled, false);
  await call.resumeRemote('peer3-audio');
  assert.equal(audio.pausedByMe, false);
  assert.equal(audio.track.enabled, true);
  // Mine resumed while the owner's pause holds: still paused.
  await call.pauseRemote(video);
  await call.resumeRemote(video);
  assert.equal(video.track.enabled, false);
  server.emit('media:producer_resumed', { producer_id: 'peer2-video', user_id: 'user2' });
  assert.equal(video.track.enabled, true);
  assert.deepEqual(server.requests.filter((r) => r.type.startsWith('media:consumer_')).map((r) => [r.type, r.data.consumer_id]), [
    ['media:consumer_pause', audio.consumerId], ['media:consumer_resume', audio.consumerId],
    ['media:consumer_pause', video.consumerId], ['media:consumer_resume', video.consumerId],
  ]);
  await assert.rejects(call.pauseRemote('nope'), (e) => e.code === 'not_found');
  // unsupported keeps the local state quietly.
  server.errors['media:consumer_pause'] = 'unsupported';
  await call.pauseRemote(video);
  assert.equal(video.track.enabled, false);
});

test('getStats: media:get_stats with the ids asked for, the items back', async () => {
  const server = new FakeServer();
  const { call } = newCall(server);
  await assert.rejects(call.getStats(), (e) => e.code === 'bad_state');
  await call.join();
  server.statsItems = [{ type: 'webrtc-transport', transportId: call.sendTransport.id }];
  assert.deepEqual(await call.getStats(), server.statsItems);
  await call.getStats({ producerId: 'p1', consumerId: 'c1', transportId: 't1' });
  const asked = server.requests.filter((r) => r.type === 'media:get_stats').map((r) => r.data);
  assert.deepEqual(asked, [{ room_id: ROOM }, { room_id: ROOM, transport_id: 't1', producer_id: 'p1', consumer_id: 'c1' }]);
});

test('ICE restart: restartIce(), and on its own after failed or a lasting disconnected', async () => {
  const server = new FakeServer();
  const { call, events } = newCall(server, { iceRestartDelayMs: 50 });
  await call.join();
  const send = call.sendTransport;
  const recv = call.recvTransport;
  const taken = [];
  for (const [d, t] of [['send', send], ['recv', recv]]) {
    const orig = t.restartIce.bind(t);
    t.restartIce = async (o) => { taken.push([d, o.iceParameters.usernameFragment]); return orig(o); };
  }
  await call.restartIce();
  const restarts = () => server.requests.filter((r) => r.type === 'media:restart_ice').map((r) => r.data.transport_id);
  assert.deepEqual(restarts(), [send.id, recv.id]);
  assert.equal(taken.length, 2);
  assert.ok(taken.every(([, u]) => u.startsWith('ufrag-')));
  assert.deepEqual(events.filter((e) => e.ev === 'ice_restarted').map((e) => [e.direction, e.automatic]), [['send', false], ['recv', false]]);

  // failed: at once (after the least delay since the last restart).
  send.handler.setConnectionState('failed');
  await until('automatic restart after failed', () => restarts().length === 3);
  assert.equal(restarts()[2], send.id);
  await until('ice_restarted', () => events.filter((e) => e.ev === 'ice_restarted').length === 3);
  assert.deepEqual(events.filter((e) => e.ev === 'ice_restarted').at(-1), { ev: 'ice_restarted', direction: 'send', automatic: true });
  // disconnected, then connected again within the delay: nothing.
  recv.handler.setConnectionState('disconnected');
  recv.handler.setConnectionState('connected');
  await new Promise((r) => setTimeout(r, 120));
  assert.equal(restarts().length, 3);
  // disconnected that lasts: a restart.
  recv.handler.setConnectionState('disconnected');
  await until('automatic restart after disconnected', () => restarts().length === 4);
  assert.equal(restarts()[3], recv.id);
  // A refused restart is an 'error' event (not_found would mean the call is gone: quiet).
  server.errors['media:restart_ice'] = 'internal';
  send.handler.setConnectionState('connected');
  send.handler.setConnectionState('failed');
  await until('error event', () => events.some((e) => e.ev === 'error' && e.op === 'restart_ice'));
  assert.equal(events.find((e) => e.ev === 'error').direction, 'send');
  // Off: nothing automatic.
  const quiet = newCall(new FakeServer(), { autoRestartIce: false });
  await quiet.call.join();
  quiet.call.sendTransport.handler.setConnectionState('failed');
  await new Promise((r) => setTimeout(r, 50));
  assert.ok(!quiet.call.sendTransport.closed);
  await call.leave();
  await quiet.call.leave();
});

test('consumePaused: media:consume paused, then consumer_resume once the consumer exists; unsupported falls back', async () => {
  const server = new FakeServer({ existing: [peer(2, 'video')] });
  const { call } = newCall(server, { consumePaused: true });
  await call.join();
  await until('consumer_resume', () => server.requests.some((r) => r.type === 'media:consumer_resume'));
  const t = call.remoteTracks[0];
  const reqs = server.requests.filter((r) => r.type === 'media:consume' || r.type === 'media:consumer_resume');
  assert.deepEqual(reqs.map((r) => [r.type, r.data.paused ?? r.data.consumer_id]), [['media:consume', true], ['media:consumer_resume', t.consumerId]]);
  // A server that refuses paused consumers: consumed unpaused, no resume.
  const old = new FakeServer({ existing: [peer(3, 'audio')] });
  const orig = old.request.bind(old);
  old.request = (type, data) => (type === 'media:consume' && data.paused ? Promise.reject(codeError('unsupported')) : orig(type, data));
  const c2 = newCall(old, { consumePaused: true });
  await c2.call.join();
  await until('track', () => c2.call.remoteTracks.length === 1);
  assert.ok(!old.requests.some((r) => r.type === 'media:consumer_resume'));
  assert.equal(old.requests.filter((r) => r.type === 'media:consume').length, 1);
});

// ---- data channels ----

const dataPeer = (n, label, extra = {}) => ({
  data_producer_id: `peer${n}-data-${label}`, user_id: `user${n}`, connection_id: `conn${n}`, label, protocol: 'p', ...extra,
});

// FakeHandler's DataChannels never open by themselves: open / message /
// close them as the browser would.
function fire(dataChannel, type, extra = {}) {
  if (type === 'open') dataChannel._readyState = 'open';
  if (type === 'close') dataChannel._readyState = 'closed';
  dataChannel.dispatchEvent({ type, ...extra });
}

function dataEvents(call) {
  const events = [];
  for (const ev of ['data_producer', 'data', 'data_producer_ended', 'error']) call.on(ev, (d) => events.push({ ev, ...d }));
  return events;
}

test('data: announced during join, consumed after it; messages; a server reset ends it once; peer_left', async () => {
  const server = new FakeServer({
    existingData: [dataPeer(1, 'chat'), dataPeer(1, 'chat', { connection_id: ME, data_producer_id: 'mine' })],
    hold: ['media:consume_data'],
  });
  const { call } = newCall(server);
  const events = dataEvents(call);
  const consumers = [];
  await call.join();
  call.recvTransport.observer.on('newdataconsumer', (c) => { consumers.push(c); fire(c._dataChannel, 'open'); });
  await until('media:consume_data', () => server.held.length === 1);
  server.hold.clear();
  server.release('media:consume_data');
  assert.equal(call.dataChannels, true);
  await until('data consumer', () => consumers.length === 1 && call.remoteDataProducers[0]?.open);
  assert.deepEqual(server.requests.filter((r) => r.type === 'media:consume_data').map((r) => r.data.data_producer_id), ['peer1-data-chat']);
  assert.deepEqual(events.filter((e) => e.ev === 'data_producer').map((e) => [e.dataProducerId, e.userId, e.connectionId, e.label, e.protocol]),
    [['peer1-data-chat', 'user1', 'conn1', 'chat', 'p']]);
  assert.equal(consumers[0].binaryType, 'arraybuffer');
  fire(consumers[0]._dataChannel, 'message', { data: 'hello' });
  const bin = new Uint8Array([1, 2, 3]).buffer;
  fire(consumers[0]._dataChannel, 'message', { data: bin });
  assert.deepEqual(events.filter((e) => e.ev === 'data').map((e) => [e.dataProducerId, e.userId, e.label, e.data]),
    [['peer1-data-chat', 'user1', 'chat', 'hello'], ['peer1-data-chat', 'user1', 'chat', bin]]);

  // The owner closed it: the server resets the stream, the DataChannel closes.
  fire(consumers[0]._dataChannel, 'close');
  assert.deepEqual(events.filter((e) => e.ev === 'data_producer_ended').map((e) => [e.dataProducerId, e.reason]), [['peer1-data-chat', 'closed']]);
  assert.equal(call.remoteDataProducers.length, 0);

  // Another one, then its peer leaves: ended once, its consumer closed.
  server.announceData(dataPeer(2, 'bot'));
  await until('second data consumer', () => consumers.length === 2 && call.remoteDataProducers[0]?.open);
  server.emit('media:peer_left', { room_id: ROOM, user_id: 'user2', connection_id: 'conn2' });
  assert.ok(consumers[1].closed);
  server.announceData(dataPeer(2, 'bot')); // a stale duplicate after the end is a new announcement
  await until('third', () => consumers.length === 3);
  await call.leave();
  assert.deepEqual(events.filter((e) => e.ev === 'data_producer_ended').map((e) => e.reason), ['closed', 'peer_left', 'left']);
  assert.equal(events.filter((e) => e.ev === 'data_producer').length, 3);
  assert.ok(!events.some((e) => e.ev === 'error'), JSON.stringify(events));
});

test('data: consumeData false only announces; consumeData(id) on demand, once', async () => {
  const server = new FakeServer();
  const { call } = newCall(server, { consumeData: false });
  const events = dataEvents(call);
  await call.join();
  call.recvTransport.observer.on('newdataconsumer', (c) => fire(c._dataChannel, 'open'));
  server.announceData(dataPeer(1, 'chat'));
  await tick();
  assert.equal(events.filter((e) => e.ev === 'data_producer').length, 1);
  assert.equal(server.requests.filter((r) => r.type === 'media:consume_data').length, 0);
  assert.deepEqual(call.remoteDataProducers.map((r) => [r.dataProducerId, r.consumed, r.open]), [['peer1-data-chat', false, false]]);
  await Promise.all([call.consumeData('peer1-data-chat'), call.consumeData('peer1-data-chat')]);
  assert.equal(server.requests.filter((r) => r.type === 'media:consume_data').length, 1);
  assert.deepEqual(call.remoteDataProducers.map((r) => [r.consumed, r.open]), [[true, true]]);
  await assert.rejects(call.consumeData('nope'), (e) => e.code === 'not_found');
});

test('data: produceData signals mediasoup-client\'s stream parameters, resolves when open; send() limits; leave closes it', async () => {
  const server = new FakeServer();
  const { call } = newCall(server);
  await call.join();
  call.sendTransport.observer.on('newdataproducer', (d) => fire(d._dataChannel, 'open'));
  const chat = await call.produceData({ label: 'chat', protocol: 'json' });
  const req = server.requests.find((r) => r.type === 'media:produce_data');
  assert.equal(req.data.transport_id, call.sendTransport.id);
  assert.equal(req.data.label, 'chat');
  assert.equal(req.data.protocol, 'json');
  assert.equal(typeof req.data.sctp_stream_parameters.streamId, 'number');
  assert.equal(req.data.sctp_stream_parameters.ordered, true);
  assert.equal(chat.readyState, 'open');
  assert.match(chat.id, /^dprod-/);
  const lossy = await call.produceData({ label: 'lossy', maxRetransmits: 2 });
  const req2 = server.requests.filter((r) => r.type === 'media:produce_data')[1];
  assert.notEqual(req2.data.sctp_stream_parameters.streamId, req.data.sctp_stream_parameters.streamId);
  assert.equal(req2.data.sctp_stream_parameters.ordered, false);
  assert.equal(req2.data.sctp_stream_parameters.maxRetransmits, 2);
  chat.send('hi');
  chat.send(new Uint8Array(10));
  const max = fx.transport_created.send_transport.sctpParameters.maxMessageSize;
  assert.throws(() => chat.send(new Uint8Array(max + 1)), (e) => e instanceof CallError && e.code === 'too_large');
  assert.throws(() => chat.send('é'.repeat(max / 2 + 1)), (e) => e.code === 'too_large'); // UTF-8 bytes count
  chat.close();
  assert.throws(() => chat.send('x'), (e) => e.code === 'closed');
  assert.deepEqual(call.localDataProducers.map((d) => d.id), [lossy.id]);
  await call.leave();
  assert.ok(lossy.closed);
  assert.equal(call.localDataProducers.length, 0);
});

test('data: a server without sctpParameters: produceData is unsupported, announcements are not consumed', async () => {
  const server = new FakeServer({ noSctp: true });
  const { call } = newCall(server);
  const events = dataEvents(call);
  await call.join();
  assert.equal(call.dataChannels, false);
  await assert.rejects(call.produceData({ label: 'x' }), (e) => e.code === 'unsupported');
  server.announceData(dataPeer(1, 'chat'));
  await tick();
  assert.equal(events.filter((e) => e.ev === 'data_producer').length, 1);
  assert.equal(server.requests.filter((r) => r.type.endsWith('_data')).length, 0);
  await assert.rejects(call.consumeData('peer1-data-chat'), (e) => e.code === 'unsupported');
});

// Feeds the Parley SFU's own signalling payloads (router capabilities,
// transport_created, consumer_created) to mediasoup-client's parsers, using
// its FakeHandler, in Node. The payloads come from
// `go run ./internal/media/cmd/mediafixtures` (or the JSON file named by
// PARLEY_MEDIA_FIXTURES).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import path from 'node:path';

import { Device } from 'mediasoup-client';
import { FakeHandler } from 'mediasoup-client/handlers/FakeHandler';
import * as fakeParameters from 'mediasoup-client/fakeParameters';
import { FakeMediaStreamTrack } from 'fake-mediastreamtrack';

const here = path.dirname(fileURLToPath(import.meta.url));
const repoRoot = path.resolve(here, '..', '..', '..');

function loadFixtures() {
  if (process.env.PARLEY_MEDIA_FIXTURES) {
    return JSON.parse(readFileSync(process.env.PARLEY_MEDIA_FIXTURES, 'utf8'));
  }
  const out = execFileSync('go', ['run', './internal/media/cmd/mediafixtures'], {
    cwd: repoRoot, encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'],
  });
  return JSON.parse(out);
}

const fx = loadFixtures();

async function loadedDevice() {
  const device = new Device({ handlerFactory: FakeHandler.createFactory(fakeParameters) });
  await device.load({ routerRtpCapabilities: fx.rtp_capabilities });
  return device;
}

test('device.load accepts the router capabilities', async () => {
  const device = await loadedDevice();
  assert.equal(device.loaded, true);
  assert.equal(device.canProduce('audio'), true);
  assert.equal(device.canProduce('video'), true);
  const mimes = device.rtpCapabilities.codecs.map((c) => c.mimeType.toLowerCase());
  assert.ok(mimes.includes('audio/opus'), mimes.join());
  assert.ok(mimes.includes('video/vp8'), mimes.join());
  // The device keeps the router's preferred payload types.
  const vp8 = device.rtpCapabilities.codecs.find((c) => c.mimeType.toLowerCase() === 'video/vp8');
  assert.equal(vp8.preferredPayloadType, 101);
});

test('createSendTransport/createRecvTransport take transport_created as it is', async () => {
  const device = await loadedDevice();
  const tc = fx.transport_created;
  assert.ok(Array.isArray(tc.ice_servers));
  const send = device.createSendTransport({ ...tc.send_transport, iceServers: tc.ice_servers,
    iceTransportPolicy: tc.force_relay ? 'relay' : 'all' });
  const recv = device.createRecvTransport({ ...tc.recv_transport, iceServers: tc.ice_servers });
  assert.equal(send.id, tc.send_transport.id);
  assert.equal(recv.id, tc.recv_transport.id);
  assert.equal(send.direction, 'send');
  assert.equal(recv.direction, 'recv');

  // produce(): 'connect' then 'produce' fire with parameters we can forward.
  const events = [];
  send.on('connect', ({ dtlsParameters }, callback) => {
    events.push('connect');
    assert.ok(['client', 'server'].includes(dtlsParameters.role));
    assert.ok(dtlsParameters.fingerprints.length > 0);
    callback();
  });
  send.on('produce', ({ kind, rtpParameters }, callback) => {
    events.push(`produce:${kind}`);
    assert.ok(rtpParameters.codecs.length > 0);
    assert.ok(rtpParameters.encodings.length > 0);
    callback({ id: `p-${kind}` });
  });
  const audio = await send.produce({ track: new FakeMediaStreamTrack({ kind: 'audio' }) });
  const video = await send.produce({ track: new FakeMediaStreamTrack({ kind: 'video' }) });
  assert.equal(audio.id, 'p-audio');
  assert.equal(video.id, 'p-video');
  assert.deepEqual(events, ['connect', 'produce:audio', 'produce:video']);

  // consume() accepts consumer_created's rtp_parameters.
  let recvConnected = false;
  recv.on('connect', (_p, callback) => { recvConnected = true; callback(); });
  for (const kind of ['audio', 'video']) {
    const cc = fx[`consumer_created_${kind}`];
    const consumer = await recv.consume({
      id: cc.id, producerId: cc.producer_id, kind: cc.kind, rtpParameters: cc.rtp_parameters,
    });
    assert.equal(consumer.kind, kind);
    assert.equal(consumer.rtpParameters.codecs[0].payloadType, kind === 'audio' ? 100 : 101);
    assert.equal(consumer.paused, false);
  }
  assert.equal(recvConnected, true);
  // The check can fail: a payload type the router does not prefer is refused.
  const bad = structuredClone(fx.consumer_created_video);
  bad.rtp_parameters.codecs[0].payloadType = 55;
  bad.rtp_parameters.mid = '99';
  await assert.rejects(recv.consume({ id: 'x', producerId: bad.producer_id, kind: 'video', rtpParameters: bad.rtp_parameters }));
  send.close();
  recv.close();
});

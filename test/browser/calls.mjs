#!/usr/bin/env node
// Real-browser test of the SDK's calls layer (web/client/src/calls.ts, the
// Call class) on Debian's Chromium with fake camera and microphone. The
// page is web/media/calls.html (bundled by web/media/build-calls.sh), whose
// CallSignaling is a raw WebSocket.
//
// Scenarios (PARLEY_SCENARIO):
//   two-party  A and B join, each produces webcam + mic, each plays the
//              other's video (videoWidth > 0, frames decoded) and gets its
//              mic track; B leaves: A gets track_ended (peer_left) for both
//              of B's tracks and peer_left; then REST call/end: A gets
//              'closed' (room_closed) and its transports close.
//   late-join  A joins and produces first; B joins with a slowed
//              device.load, so A's media:new_producer frames arrive before
//              B's receive transport exists: B must still get both tracks
//              and play the video. Then A's pause()/resume() (the server
//              may answer 'unsupported': the local pause stays, nothing
//              throws; when it acks, B must get 'paused'/'resumed') and
//              close(): B gets track_ended (producer_closed).
//   data       data channels only (mediasoup-client's produceData and
//              consumeData under the SDK): A's produceData('chat') opens,
//              B is told and consumes it; a string, a 1 KiB ArrayBuffer and
//              a 64 KiB Uint8Array arrive whole and in order; B's unordered
//              'echo' channel carries a string and binary back to A; a
//              message over the server's maximum is refused by send();
//              A closes 'chat': the server closes B's data consumer
//              (data_producer_ended 'closed'); B leaves: A's data consumer
//              of 'echo' ends.
//   controls   v1.1 call controls. A produces the fake camera and a WebAudio
//              tone, B a silent tone and consumes the mediasoup-demo way
//              (consumePaused: media:consume paused, then consumer_resume):
//              B decodes A's video. Active speaker: A (loud) on both pages,
//              then B once the gains swap. Producer pause/resume: B gets
//              'paused'/'resumed' and its framesDecoded of A's video stops,
//              then grows again. Consumer pause (B's pauseRemote): B's
//              inbound bytes stop, resumeRemote: frames again. restartIce()
//              on A's send and B's receive transport: the browser's ICE ufrag
//              changes, the server learns the new one, B keeps decoding.
//              Server stats (getStats) in mediasoup's shapes.
//   svc        A produces 1280x720 VP9 with codec 'video/VP9' and
//              scalabilityMode L3T3_KEY through the SDK; B plays it, is told
//              layers_changed above 0 (at least 640 wide), and after
//              setPreferredLayers(0) decodes at most half that width
//              (spatial 0); an unknown codec is refused
//              with CallError 'unsupported'.
//   cycles     A joins and produces; B joins, produces webcam + mic, A gets
//              both tracks (and plays B's video every 10th cycle), B leaves,
//              A gets track_ended: 50 times. Afterwards the server is where
//              it was after the first cycle (its /metrics): one participant,
//              two transports, A's two producers, no consumer, and its
//              goroutines and open file descriptors back to that baseline.
//
// Inputs (environment):
//   PARLEY_PAGE_URL     URL of calls.html (same origin as the WebSockets)
//   PARLEY_WS_A, PARLEY_WS_B  WebSocket URLs with their tokens
//   PARLEY_ROOM         room whose call is started
//   PARLEY_API_URL, PARLEY_TOKEN_A  REST base (http://host) and a token allowed to end the call
//   PARLEY_SCENARIO     two-party (default) | late-join | data | controls | cycles
//   PARLEY_TEST_ARTIFACTS  directory for screenshots (optional)
//   CHROMIUM            browser binary (default /usr/bin/chromium)
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { env, waitUntil, check, launchMediaContext } from './lib.mjs';

const pageURL = env('PARLEY_PAGE_URL');
const wsA = env('PARLEY_WS_A');
const wsB = env('PARLEY_WS_B');
const room = env('PARLEY_ROOM');
const apiURL = env('PARLEY_API_URL');
const tokenA = env('PARLEY_TOKEN_A');
const scenario = env('PARLEY_SCENARIO', 'two-party');
const artifacts = env('PARLEY_TEST_ARTIFACTS', '');
if (!pageURL || !wsA || !wsB || !room || !apiURL || !tokenA) {
  console.error('need PARLEY_PAGE_URL, PARLEY_WS_A, PARLEY_WS_B, PARLEY_ROOM, PARLEY_API_URL, PARLEY_TOKEN_A');
  process.exit(2);
}

const log = (...a) => console.log(`[${scenario}]`, ...a);



async function screenshot(page, name) {
  if (!artifacts) return;
  mkdirSync(artifacts, { recursive: true });
  const file = path.join(artifacts, `calls-${scenario}-${name}.png`);
  await page.screenshot({ path: file, fullPage: true });
  log(`screenshot ${file}`);
}

const inspect = (page) => page.evaluate(() => window.parleyCalls.inspect());
const events = (page) => page.evaluate(() => window.parleyCalls.state.events);
const frameLog = (page) => page.evaluate(() => window.parleyCalls.state.log);

// Waits until page plays a video track from connection conn and has its audio track.
async function waitPlaying(name, page, conn) {
  return waitUntil(`${name} plays video from ${conn}`, async () => {
    const s = await inspect(page);
    const v = s.tracks.find((t) => t.kind === 'video' && t.connectionId === conn);
    const a = s.tracks.find((t) => t.kind === 'audio' && t.connectionId === conn);
    return {
      ok: !!v && !!a && v.videoWidth > 0 && s.inboundVideoFrames > 0 && v.framesShown > 0 && a.readyState === 'live',
      video: v, audio: a, inboundVideoFrames: s.inboundVideoFrames, errors: s.errors,
    };
  }, 45000);
}

const { context, close: closeContext } = await launchMediaContext({ viewport: { width: 720, height: 480 } });

async function openPage(name, ws) {
  const page = await context.newPage();
  page.on('console', (m) => { if (m.type() === 'error') log(`${name} console:`, m.text()); });
  page.on('pageerror', (e) => log(`${name} page error:`, e.message));
  await page.goto(pageURL);
  await page.waitForFunction(() => !!window.parleyCalls);
  const conn = await page.evaluate(({ ws, name }) => window.parleyCalls.connect({ wsUrl: ws, name }), { ws, name });
  return { page, conn };
}

async function twoParty() {
  const A = await openPage('A', wsA);
  const B = await openPage('B', wsB);
  for (const [name, p] of [['A', A], ['B', B]]) {
    const j = await p.page.evaluate((room) => window.parleyCalls.join({ roomId: room }), room);
    const prod = await p.page.evaluate(() => window.parleyCalls.produce());
    log(`${name} joined (${j.connectionId}, simulcast ${j.simulcast}), producing ${JSON.stringify(prod)}`);
    p.producers = prod;
    p.simulcast = j.simulcast;
  }
  // Video is simulcast exactly when the router has the rtp-stream-id extension
  // (not this server's yet: one encoding); and the layer choice by height.
  for (const [name, p] of [['A', A], ['B', B]]) {
    check(p.simulcast ? p.producers.videoLayers === 2 : p.producers.videoLayers === 1, `${name}: video encodings`, p);
  }
  const enc = await A.page.evaluate(() => [360, 720, 180].map((h) => [window.parleyCalls.encodingsFor(h, true), window.parleyCalls.encodingsFor(h, false)]));
  check(enc[0][0].simulcast && enc[0][0].encodings.length === 2 && enc[0][0].encodings[1].scaleResolutionDownBy === 1, 'rid: 360 lines → 2 layers', enc[0][0]);
  check(enc[1][0].encodings.length === 3 && enc[1][0].encodings[0].scaleResolutionDownBy === 4, 'rid: 720 lines → 3 layers', enc[1][0]);
  check(enc[2][0].encodings === null, 'rid: 180 lines → one encoding', enc[2][0]);
  check(enc.every(([, noRid]) => !noRid.simulcast && noRid.encodings === null), 'no rid → one encoding', enc);
  const a = await waitPlaying('A', A.page, B.conn);
  const b = await waitPlaying('B', B.page, A.conn);
  log(`A plays B's video ${a.video.videoWidth}x${a.video.videoHeight}, frames ${a.inboundVideoFrames}`);
  log(`B plays A's video ${b.video.videoWidth}x${b.video.videoHeight}, frames ${b.inboundVideoFrames}`);
  check(a.video.producerId === B.producers.video && a.video.source === 'webcam', 'A: wrong video track', a.video);
  check(a.audio.producerId === B.producers.audio && a.audio.source === 'mic', 'A: wrong audio track', a.audio);
  check(b.video.producerId === A.producers.video && b.video.userId === 'alice', 'B: wrong video track', b.video);
  for (const [name, p, other] of [['A', A, B], ['B', B, A]]) {
    const s = await inspect(p.page);
    check(s.tracks.length === 2 && s.tracks.every((t) => t.connectionId === other.conn), `${name}: exactly the other's two tracks`, s.tracks);
  }
  await screenshot(A.page, 'A-playing');
  await screenshot(B.page, 'B-playing');

  // B leaves: A gets track_ended for both of B's tracks, then peer_left.
  const left = await B.page.evaluate(() => window.parleyCalls.leave());
  check(left === 'left', 'B state after leave', left);
  const bs = await inspect(B.page);
  check(bs.tracks.length === 0 && bs.localProducers.length === 0, 'B keeps nothing after leave', bs);
  const bev = await events(B.page);
  check(bev.filter((e) => e.ev === 'track_ended' && e.reason === 'left').length === 2, "B: its two remote tracks ended with reason 'left'", bev);
  check(bev.filter((e) => e.ev === 'local_track_ended' && e.reason === 'left').length === 2, "B: its two producers ended with reason 'left'", bev);
  const aev = await waitUntil('A peer_left and track_ended', async () => {
    const ev = await events(A.page);
    const ended = ev.filter((e) => e.ev === 'track_ended' && e.connectionId === B.conn && e.reason === 'peer_left');
    const pl = ev.find((e) => e.ev === 'peer_left' && e.connectionId === B.conn);
    return { ok: !!pl && ended.length === 2, ended, peerLeft: pl, all: ev.map((e) => e.ev) };
  }, 15000);
  check(aev.peerLeft.userId === 'bob', 'peer_left userId', aev.peerLeft);
  check(new Set(aev.ended.map((e) => e.producerId)).size === 2 &&
    aev.ended.every((e) => [B.producers.video, B.producers.audio].includes(e.producerId)), "A: track_ended for B's producers", aev.ended);
  const as = await inspect(A.page);
  check(as.tracks.length === 0, 'A: no remote track left', as.tracks);
  log('A saw track_ended x2 and peer_left for B');
  await screenshot(A.page, 'A-after-peer-left');

  // REST call/end: A (still in the call) gets 'closed'.
  const res = await fetch(`${apiURL}/api/rooms/${encodeURIComponent(room)}/call/end`, {
    method: 'POST', headers: { Authorization: `Bearer ${tokenA}` },
  });
  check(res.status === 200, 'call/end status', { status: res.status, body: await res.text() });
  await waitUntil("A 'closed'", async () => {
    const ev = await events(A.page);
    const closed = ev.find((e) => e.ev === 'closed');
    const s = await inspect(A.page);
    return { ok: !!closed && s.state === 'closed' && s.localProducers.length === 0, closed, state: s.state, s };
  }, 15000);
  const aev2 = await events(A.page);
  check(aev2.filter((e) => e.ev === 'local_track_ended' && e.reason === 'room_closed').length === 2, "A: its producers ended with 'room_closed'", aev2);
  check(!aev2.some((e) => e.ev === 'closed' && e.reason !== 'room_closed'), "A: 'closed' reason", aev2);
  log("A saw 'closed' (room_closed)");
}

async function lateJoin() {
  const A = await openPage('A', wsA);
  await A.page.evaluate((room) => window.parleyCalls.join({ roomId: room }), room);
  A.producers = await A.page.evaluate(() => window.parleyCalls.produce());
  log(`A producing ${JSON.stringify(A.producers)}`);

  const B = await openPage('B', wsB);
  const j = await B.page.evaluate((room) => window.parleyCalls.join({ roomId: room, slowLoadMs: 700 }), room);
  log(`B joined ${j.connectionId}`);
  // The announcements of A's producers came in before join() finished ...
  const flog = await frameLog(B.page);
  const resolvedAt = flog.findIndex((l) => l.mark === 'join_resolved');
  const early = flog.slice(0, resolvedAt).filter((l) => l.frame === 'media:new_producer').map((l) => l.producer_id);
  check(early.includes(A.producers.video) && early.includes(A.producers.audio),
    "B: A's media:new_producer frames arrived before join() resolved", flog);
  // ... and were not lost.
  const b = await waitPlaying('B', B.page, A.conn);
  log(`B plays A's video ${b.video.videoWidth}x${b.video.videoHeight} (announced before B's transports existed)`);
  await screenshot(B.page, 'B-playing');

  // pause/resume: never throws; the local producer follows; B sees it when the server forwards it.
  const paused = await A.page.evaluate(() => window.parleyCalls.producerOp({ kind: 'video', op: 'pause' }));
  check(paused.paused === true, 'A: video producer paused locally', paused);
  const replies = (await frameLog(A.page)).filter((l) => l.reply === 'media:producer_pause');
  const serverPauses = replies.length > 0 && replies.every((r) => r.type === 'ack');
  log(`media:producer_pause answered ${JSON.stringify(replies.map((r) => r.code ?? r.type))}`);
  check(replies.every((r) => r.type === 'ack' || r.code === 'unsupported'), 'producer_pause reply', replies);
  if (serverPauses) {
    await waitUntil("B 'paused'", async () => ({ ok: (await events(B.page)).some((e) => e.ev === 'paused' && e.producerId === A.producers.video) }), 10000);
  }
  const resumed = await A.page.evaluate(() => window.parleyCalls.producerOp({ kind: 'video', op: 'resume' }));
  check(resumed.paused === false, 'A: video producer resumed locally', resumed);
  if (serverPauses) {
    await waitUntil("B 'resumed'", async () => ({ ok: (await events(B.page)).some((e) => e.ev === 'resumed' && e.producerId === A.producers.video) }), 10000);
  }

  // close(): B gets track_ended (producer_closed) for that track only.
  const closed = await A.page.evaluate(() => window.parleyCalls.producerOp({ kind: 'video', op: 'close' }));
  check(closed.closed === true, 'A: producer closed', closed);
  await waitUntil('B track_ended (producer_closed)', async () => {
    const ev = await events(B.page);
    const s = await inspect(B.page);
    return {
      ok: ev.some((e) => e.ev === 'track_ended' && e.producerId === A.producers.video && e.reason === 'producer_closed') &&
        s.tracks.length === 1 && s.tracks[0].producerId === A.producers.audio,
      ev, tracks: s.tracks,
    };
  }, 15000);
  log('B saw track_ended (producer_closed) for A\'s video, keeps the audio');
  await screenshot(B.page, 'B-after-close');
  const errs = (await inspect(B.page)).errors;
  check(errs.length === 0, 'B: no consume errors', errs);
}

// Waits until fn's number stays the same over two reads everyMs apart
// (what stopped) and returns it.
async function waitStable(what, fn, everyMs = 1500, timeoutMs = 20000) {
  let prev = await fn();
  const r = await waitUntil(what, async () => {
    const v = await fn();
    const ok = v === prev;
    prev = v;
    return { ok, v };
  }, timeoutMs, everyMs);
  return r.v;
}

const lastSpeaker = async (page) => (await events(page)).filter((e) => e.ev === 'active_speaker').at(-1);

async function controls() {
  const A = await openPage('A', wsA);
  const B = await openPage('B', wsB);
  await A.page.evaluate((room) => window.parleyCalls.join({ roomId: room }), room);
  await B.page.evaluate((room) => window.parleyCalls.join({ roomId: room, consumePaused: true }), room);
  A.producers = await A.page.evaluate(() => window.parleyCalls.produceTone({ gain: 0.5, video: true }));
  B.producers = await B.page.evaluate(() => window.parleyCalls.produceTone({ gain: 0 }));
  log(`A produces ${JSON.stringify(A.producers)}, B ${JSON.stringify(B.producers)}`);
  const aVideo = A.producers.video;
  const frames = (page, pid) => page.evaluate((pid) => window.parleyCalls.inbound(pid), pid);
  await waitUntil("B decodes A's video", async () => {
    const s = await frames(B.page, aVideo);
    return { ok: !!s && s.framesDecoded > 5, s };
  }, 45000);
  // B consumed paused, then resumed.
  const blog = await frameLog(B.page);
  const created = blog.filter((l) => l.frame === 'media:consumer_created');
  const resumes = blog.filter((l) => l.reply === 'media:consumer_resume');
  check(created.length >= 2 && created.every((l) => l.paused === true), 'B: consumers created paused', created);
  check(resumes.length >= 2 && resumes.every((r) => r.type === 'ack'), 'B: consumer_resume acked', resumes);
  log('B consumed paused and resumed; decodes A');

  // Active speaker follows the louder page.
  for (const [who, pid] of [['A', A.producers.audio], ['B', B.producers.audio]]) {
    if (who === 'B') {
      await A.page.evaluate(() => window.parleyCalls.setGain(0));
      await B.page.evaluate(() => window.parleyCalls.setGain(0.5));
    }
    for (const [name, p] of [['A', A], ['B', B]]) {
      await waitUntil(`${name}: active speaker ${who}`, async () => {
        const e = await lastSpeaker(p.page);
        return { ok: e?.producerId === pid && e.local === (name === who), e };
      }, 20000);
    }
    log(`active speaker: ${who} on both pages`);
  }

  // Producer pause / resume.
  await A.page.evaluate(() => window.parleyCalls.producerOp({ kind: 'video', op: 'pause' }));
  await waitUntil("B 'paused'", async () => ({ ok: (await events(B.page)).some((e) => e.ev === 'paused' && e.producerId === aVideo) }), 10000);
  const stoppedAt = await waitStable("B's decoding of A's paused video stops", async () => (await frames(B.page, aVideo)).framesDecoded);
  await A.page.evaluate(() => window.parleyCalls.producerOp({ kind: 'video', op: 'resume' }));
  await waitUntil("B 'resumed'", async () => ({ ok: (await events(B.page)).some((e) => e.ev === 'resumed' && e.producerId === aVideo) }), 10000);
  await waitUntil("B decodes A's video again", async () => {
    const s = await frames(B.page, aVideo);
    return { ok: s.framesDecoded > stoppedAt + 5, s, stoppedAt };
  }, 20000);
  log(`producer pause: B's frames stopped at ${stoppedAt}, then grew again`);

  // Consumer pause / resume (B's own choice).
  await B.page.evaluate((pid) => window.parleyCalls.remoteOp({ producerId: pid, op: 'pause' }), aVideo);
  const bytesAt = await waitStable("B's inbound bytes of A's video stop", async () => (await frames(B.page, aVideo)).bytesReceived);
  const [cstat] = await B.page.evaluate((pid) => {
    const t = window.parleyCalls.state.call.remoteTracks.find((r) => r.producerId === pid);
    return window.parleyCalls.serverStats({ consumerId: t.consumerId });
  }, aVideo);
  check(cstat.type === 'outbound-rtp' && cstat.paused === true && cstat.producerPaused === false, 'server: consumer paused', cstat);
  const framesAt = (await frames(B.page, aVideo)).framesDecoded;
  await B.page.evaluate((pid) => window.parleyCalls.remoteOp({ producerId: pid, op: 'resume' }), aVideo);
  await waitUntil("B decodes A's video after resumeRemote", async () => {
    const s = await frames(B.page, aVideo);
    return { ok: s.framesDecoded > framesAt + 5 && s.bytesReceived > bytesAt, s };
  }, 20000);
  log(`consumer pause: B's bytes stopped at ${bytesAt}, then grew again`);

  // ICE restart of A's send and B's receive transport.
  for (const [name, p, dir] of [['A', A, 'send'], ['B', B, 'recv']]) {
    const before = await p.page.evaluate((d) => window.parleyCalls.iceInfo(d), dir);
    const tid = await p.page.evaluate((d) => (d === 'send' ? window.parleyCalls.state.call.sendTransport : window.parleyCalls.state.call.recvTransport).id, dir);
    await p.page.evaluate((d) => window.parleyCalls.restartIce(d), dir);
    const after = await waitUntil(`${name}: ${dir} transport reconnected with a new ufrag`, async () => {
      const i = await p.page.evaluate((d) => window.parleyCalls.iceInfo(d), dir);
      const [st] = await p.page.evaluate((tid) => window.parleyCalls.serverStats({ transportId: tid }), tid);
      return { ok: i.state === 'connected' && !!i.ufrag && i.ufrag !== before.ufrag && st.iceRemoteUsernameFragment === i.ufrag && st.state === 'connected', i, st, before };
    }, 30000);
    check(after.st.iceRestarts === 1, `${name}: server counts the restart`, after.st);
    const f0 = (await frames(B.page, aVideo)).framesDecoded;
    await waitUntil(`B decodes A's video after ${name}'s ICE restart`, async () => {
      const s = await frames(B.page, aVideo);
      return { ok: s.framesDecoded > f0 + 10, s, f0 };
    }, 20000);
    log(`${name}: ${dir} ICE ufrag ${before.ufrag} → ${after.i.ufrag} (server agrees), media flows`);
  }
  check((await events(A.page)).some((e) => e.ev === 'ice_restarted' && e.direction === 'send'), "A: 'ice_restarted'");

  // Server stats, mediasoup's shapes.
  const items = await A.page.evaluate(() => window.parleyCalls.serverStats());
  const byType = (t) => items.filter((i) => i.type === t);
  check(byType('webrtc-transport').length === 2 && byType('inbound-rtp').length === 2 && byType('outbound-rtp').length === 1,
    'A: stats items (2 transports, 2 producers, 1 consumer)', items.map((i) => i.type));
  const vin = byType('inbound-rtp').find((i) => i.kind === 'video');
  check(vin.producerId === aVideo && vin.packetCount > 0 && vin.byteCount > 0 && vin.bitrate > 0 && vin.score >= 0 && vin.mimeType.startsWith('video/'),
    'A: video producer stats', vin);
  const sendT = byType('webrtc-transport').find((i) => i.direction === 'send');
  check(sendT.state === 'connected' && sendT.dtlsState === 'connected' && sendT.bytesReceived > 0 && sendT.iceSelectedTuple?.protocol === 'udp',
    'A: send transport stats', sendT);
  await waitUntil("B's consumer stats carry the browser's receiver reports", async () => {
    const bi = await B.page.evaluate(() => window.parleyCalls.serverStats());
    const out = bi.filter((i) => i.type === 'outbound-rtp' && i.kind === 'video');
    return { ok: out.length === 1 && out[0].packetCount > 0 && out[0].bitrate > 0 && out[0].roundTripTime > 0, out };
  }, 20000);
  log('server stats in mediasoup shapes');
  const errs = [...(await inspect(A.page)).errors, ...(await inspect(B.page)).errors];
  check(errs.length === 0, 'no errors', errs);
}

const dataState = (page) => page.evaluate(() => window.parleyCalls.dataState());

// Waits until page has received n messages on the data producer id.
async function waitData(name, page, id, n) {
  return waitUntil(`${name} receives ${n} messages of ${id}`, async () => {
    const s = await dataState(page);
    const got = s.received.filter((m) => m.dataProducerId === id);
    return { ok: got.length >= n, got, errors: s.errors };
  }, 20000);
}

// Waits until page receives (consumed, open) the remote data producer id.
async function waitDataOpen(name, page, id) {
  return waitUntil(`${name} receives data producer ${id}`, async () => {
    const s = await dataState(page);
    const r = s.remote.find((x) => x.dataProducerId === id);
    return { ok: !!r && r.consumed && r.open, remote: s.remote, errors: s.errors };
  }, 30000);
}

async function dataChannels() {
  const A = await openPage('A', wsA);
  const B = await openPage('B', wsB);
  for (const p of [A, B]) await p.page.evaluate((room) => window.parleyCalls.join({ roomId: room }), room);
  check((await dataState(A.page)).dataChannels === true, 'A: the transports carry sctpParameters');

  // A opens 'chat' (resolved once open); B is told and consumes it on its own.
  const chat = await A.page.evaluate(() => window.parleyCalls.produceData({ label: 'chat', protocol: 'text' }));
  log(`A produces data ${JSON.stringify(chat)}`);
  check(chat.readyState === 'open' && chat.sctpStreamParameters.streamId === 0 && chat.sctpStreamParameters.ordered === true, 'A: chat data producer', chat);
  await waitDataOpen('B', B.page, chat.id);
  const ann = (await events(B.page)).find((e) => e.ev === 'data_producer' && e.dataProducerId === chat.id);
  check(ann && ann.userId === 'alice' && ann.connectionId === A.conn && ann.label === 'chat' && ann.protocol === 'text', "B: 'data_producer' for A's chat", ann);

  // A → B: text, binary (ArrayBuffer), 64 KiB binary (Uint8Array), in order.
  const sent = [{ type: 'string', text: 'hello from A ✓' }];
  check((await A.page.evaluate(() => window.parleyCalls.sendData({ label: 'chat', text: 'hello from A ✓' }))).ok, 'A: send text');
  for (const [size, seed, view] of [[1024, 1, false], [65536, 2, true]]) {
    const r = await A.page.evaluate((o) => window.parleyCalls.sendData(o), { label: 'chat', size, seed, view });
    check(r.ok, `A: send ${size} bytes`, r);
    sent.push({ type: 'binary', size: r.size, sum: r.sum });
  }
  const gotB = (await waitData('B', B.page, chat.id, sent.length)).got;
  check(gotB.length === sent.length, 'B: exactly the messages sent', gotB);
  sent.forEach((m, i) => {
    const g = gotB[i];
    check(g.type === m.type && g.text === m.text && g.size === m.size && g.sum === m.sum &&
      g.userId === 'alice' && g.connectionId === A.conn && g.label === 'chat' && g.protocol === 'text', `B: message ${i}`, { got: g, sent: m });
  });
  log(`B received ${gotB.length} messages from A's chat (text, 1 KiB, 64 KiB)`);

  // B → A on an unordered, partially reliable channel.
  const echo = await B.page.evaluate(() => window.parleyCalls.produceData({ label: 'echo', ordered: false, maxRetransmits: 10 }));
  check(echo.sctpStreamParameters.ordered === false && echo.sctpStreamParameters.maxRetransmits === 10, 'B: echo parameters', echo);
  await waitDataOpen('A', A.page, echo.id);
  check((await B.page.evaluate(() => window.parleyCalls.sendData({ label: 'echo', text: 'hello from B' }))).ok, 'B: send text');
  const bin = await B.page.evaluate(() => window.parleyCalls.sendData({ label: 'echo', size: 2048, seed: 3 }));
  const gotA = (await waitData('A', A.page, echo.id, 2)).got;
  check(gotA.some((g) => g.type === 'string' && g.text === 'hello from B' && g.userId === 'bob' && g.label === 'echo'), 'A: text from B', gotA);
  check(gotA.some((g) => g.type === 'binary' && g.size === bin.size && g.sum === bin.sum), 'A: binary from B', gotA);
  log("A received B's echo messages");

  // Over the server's maximum (262144): send() refuses it.
  const big = await A.page.evaluate(() => window.parleyCalls.sendData({ label: 'chat', size: 262145, seed: 4 }));
  check(!big.ok && big.code === 'too_large', 'A: oversized message refused', big);

  // A closes 'chat': the server closes B's data consumer of it (A stays).
  await A.page.evaluate(() => window.parleyCalls.closeData('chat'));
  await waitUntil("B: data_producer_ended 'closed' for A's chat", async () => {
    const ev = await events(B.page);
    const s = await dataState(B.page);
    const e = ev.find((x) => x.ev === 'data_producer_ended' && x.dataProducerId === chat.id);
    return { ok: !!e && e.reason === 'closed' && !s.remote.some((r) => r.dataProducerId === chat.id), e, remote: s.remote };
  }, 20000);
  log("B's data consumer of A's chat was closed by the server");

  // B leaves: A's data consumer of 'echo' ends.
  await B.page.evaluate(() => window.parleyCalls.leave());
  check((await dataState(B.page)).local.length === 0, 'B: no data producer after leave');
  await waitUntil("A: data_producer_ended for B's echo", async () => {
    const ev = await events(A.page);
    const s = await dataState(A.page);
    const e = ev.find((x) => x.ev === 'data_producer_ended' && x.dataProducerId === echo.id);
    return { ok: !!e && ['peer_left', 'closed'].includes(e.reason) && s.remote.length === 0, e, remote: s.remote };
  }, 20000);
  for (const [name, p] of [['A', A], ['B', B]]) {
    const errs = (await dataState(p.page)).errors;
    check(errs.length === 0, `${name}: no errors`, errs);
  }
  log("A's data consumer of B's echo ended when B left");
}

// metrics reads the server's /metrics as {name or name{labels}: value}.
async function metrics() {
  const res = await fetch(`${apiURL}/metrics`);
  check(res.status === 200, 'GET /metrics', res.status);
  const out = {};
  for (const line of (await res.text()).split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const i = line.lastIndexOf(' ');
    out[line.slice(0, i)] = Number(line.slice(i + 1));
  }
  return out;
}

async function svc() {
  const A = await openPage('A', wsA);
  const B = await openPage('B', wsB);
  await A.page.evaluate((room) => window.parleyCalls.join({ roomId: room }), room);
  await B.page.evaluate((room) => window.parleyCalls.join({ roomId: room }), room);
  const bad = await A.page.evaluate(() => window.parleyCalls.produce({ audio: false, codec: 'video/AV2' })
    .then(() => 'produced', (e) => e.code));
  check(bad === 'unsupported', "produce with a codec nobody offers", bad);
  const prod = await A.page.evaluate(() => window.parleyCalls.produce({ audio: false, codec: 'video/VP9',
    encodings: [{ scalabilityMode: 'L3T3_KEY', maxBitrate: 1_500_000 }], width: 1280, height: 720 }));
  log(`A produces VP9 SVC ${JSON.stringify(prod)}`);
  // B decodes A's video with layers_changed saying spatial layer s (or,
  // s undefined, any layer above 0: the encoder may send fewer layers than
  // asked when the CPU is short).
  const decodes = (s, pred, minFrames) => waitUntil(`B decodes A's spatial layer ${s ?? '>0'}`, async () => {
    const st = await inspect(B.page);
    const v = st.tracks.find((t) => t.kind === 'video' && t.producerId === prod.video);
    const ev = (await events(B.page)).filter((e) => e.ev === 'layers_changed' && e.producerId === prod.video);
    const width = await B.page.evaluate(async () => {
      let w = 0;
      (await window.parleyCalls.state.call.recvTransport.getStats()).forEach((r) => {
        if (r.type === 'inbound-rtp' && r.kind === 'video') w = r.frameWidth ?? 0;
      });
      return w;
    });
    const last = ev[ev.length - 1];
    const layerOK = s === undefined ? last?.spatialLayer > 0 : last?.spatialLayer === s;
    return { ok: !!v && width > 0 && layerOK && pred(width) && st.inboundVideoFrames >= minFrames, width, spatial: last?.spatialLayer, frames: st.inboundVideoFrames,
      consumerId: last?.consumerId };
  }, 45000);
  const top = await decodes(undefined, (w) => w >= 640, 60);
  await B.page.evaluate((id) => window.parleyCalls.state.call.setPreferredLayers(id, 0), top.consumerId);
  const low = await decodes(0, (w) => w <= top.width / 2, top.frames + 30);
  check(low.frames > top.frames, 'B keeps decoding through the switch', { top: top.frames, low: low.frames });
  log(`B decoded A's VP9 SVC at ${top.width} (spatial ${top.spatial}) then ${low.width} wide (spatial 0), frames ${top.frames} -> ${low.frames}`);
}

async function cycles() {
  const A = await openPage('A', wsA);
  await A.page.evaluate((room) => window.parleyCalls.join({ roomId: room }), room);
  A.producers = await A.page.evaluate(() => window.parleyCalls.produce());
  const B = await openPage('B', wsB);
  const n = 50;
  let base;
  for (let i = 1; i <= n; i++) {
    await B.page.evaluate((room) => window.parleyCalls.join({ roomId: room }), room);
    const prod = await B.page.evaluate(() => window.parleyCalls.produce());
    await waitUntil(`cycle ${i}: A gets B's tracks`, async () => {
      const ev = await events(A.page);
      const got = ev.filter((e) => e.ev === 'track' && (e.producerId === prod.video || e.producerId === prod.audio));
      return { ok: got.length === 2, got: got.length };
    });
    if (i % 10 === 1) await waitPlaying('A', A.page, B.conn);
    const left = await B.page.evaluate(() => window.parleyCalls.leave());
    check(left === 'left', `cycle ${i}: B state after leave`, left);
    await waitUntil(`cycle ${i}: A's tracks of B end`, async () => {
      const ev = await events(A.page);
      const ended = ev.filter((e) => e.ev === 'track_ended' && (e.producerId === prod.video || e.producerId === prod.audio));
      return { ok: ended.length === 2, ended: ended.length };
    });
    if (i === 1) {
      // Baseline once everything lazily started exists (first cycle done).
      base = await waitUntil('the server settles after cycle 1', async () => {
        const m = await metrics();
        return { ok: m.parley_media_transports === 2, m };
      });
      base = base.m;
      log(`after cycle 1: goroutines ${base.go_goroutines}, open fds ${base.process_open_fds}`);
    }
  }
  const end = await waitUntil(`the server back to its state after cycle 1 (goroutines ${base.go_goroutines}, fds ${base.process_open_fds})`, async () => {
    const m = await metrics();
    const ok = m.parley_media_participants === 1 && m.parley_media_transports === 2 &&
      m['parley_media_producers{kind="audio"}'] === 1 && m['parley_media_producers{kind="video"}'] === 1 &&
      m['parley_media_consumers{kind="audio"}'] === 0 && m['parley_media_consumers{kind="video"}'] === 0 &&
      m.go_goroutines <= base.go_goroutines + 5 && m.process_open_fds <= base.process_open_fds + 2;
    return { ok, goroutines: m.go_goroutines, fds: m.process_open_fds, transports: m.parley_media_transports,
      participants: m.parley_media_participants };
  }, 20000);
  log(`after ${n} cycles: goroutines ${end.goroutines}, open fds ${end.fds}, transports ${end.transports}`);
  const errs = (await inspect(A.page)).errors.concat((await inspect(B.page)).errors);
  check(errs.length === 0, 'no errors', errs);
}

let failed = false;
try {
  if (scenario === 'two-party') await twoParty();
  else if (scenario === 'late-join') await lateJoin();
  else if (scenario === 'data') await dataChannels();
  else if (scenario === 'controls') await controls();
  else if (scenario === 'cycles') await cycles();
  else if (scenario === 'svc') await svc();
  else throw new Error(`unknown scenario ${scenario}`);
  log('PASS');
} catch (e) {
  failed = true;
  console.error(`[${scenario}] FAIL:`, e.message);
  for (const [i, page] of context.pages().entries()) {
    await screenshot(page, `failure-${i}`).catch(() => {});
  }
} finally {
  await closeContext();
}
process.exit(failed ? 1 : 0);

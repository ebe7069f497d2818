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
//
// Inputs (environment):
//   PARLEY_PAGE_URL     URL of calls.html (same origin as the WebSockets)
//   PARLEY_WS_A, PARLEY_WS_B  WebSocket URLs with their tokens
//   PARLEY_ROOM         room whose call is started
//   PARLEY_API_URL, PARLEY_TOKEN_A  REST base (http://host) and a token allowed to end the call
//   PARLEY_SCENARIO     two-party (default) | late-join | data
//   PARLEY_TEST_ARTIFACTS  directory for screenshots (optional)
//   CHROMIUM            browser binary (default /usr/bin/chromium)
import { createRequire } from 'node:module';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const webMedia = path.resolve(here, '..', '..', 'web', 'media');
const require = createRequire(path.join(webMedia, 'package.json'));
const { chromium } = require('playwright-core');

const env = (k, d) => process.env[k] ?? d;
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

async function waitUntil(what, fn, timeoutMs = 30000, everyMs = 250) {
  const deadline = Date.now() + timeoutMs;
  let last;
  for (;;) {
    last = await fn();
    if (last && last.ok) return last;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}: ${JSON.stringify(last)}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

function check(cond, what, detail) {
  if (!cond) throw new Error(`${what}${detail === undefined ? '' : `: ${JSON.stringify(detail)}`}`);
}

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

const userDataDir = mkdtempSync(path.join(os.tmpdir(), 'parley-chromium-'));
const context = await chromium.launchPersistentContext(userDataDir, {
  executablePath: env('CHROMIUM', '/usr/bin/chromium'),
  headless: true,
  viewport: { width: 720, height: 480 },
  args: [
    '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
    '--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream',
    '--autoplay-policy=no-user-gesture-required',
  ],
});

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

let failed = false;
try {
  if (scenario === 'two-party') await twoParty();
  else if (scenario === 'late-join') await lateJoin();
  else if (scenario === 'data') await dataChannels();
  else throw new Error(`unknown scenario ${scenario}`);
  log('PASS');
} catch (e) {
  failed = true;
  console.error(`[${scenario}] FAIL:`, e.message);
  for (const [i, page] of context.pages().entries()) {
    await screenshot(page, `failure-${i}`).catch(() => {});
  }
} finally {
  await context.close().catch(() => {});
  rmSync(userDataDir, { recursive: true, force: true });
}
process.exit(failed ? 1 : 0);

#!/usr/bin/env node
// Real-browser media test: two Chromium pages join one call through the
// Parley WebSocket envelope, each produces audio+video (fake devices) and
// consumes the other's; getStats() must show decoded video and growing audio
// bytes on both sides. Then A closes its video producer (B sees
// media:producer_closed), then page A closes (B sees media:peer_left, and
// room:call_updated when PARLEY_EXPECT_CALL_UPDATED=1).
//
// Inputs (environment):
//   PARLEY_PAGE_URL   page serving web/media/dist (same origin as the WebSockets)
//   PARLEY_PAGE_URL_B page B's (default PARLEY_PAGE_URL): another node's origin in the cluster test
//   PARLEY_WS_A       WebSocket URL (with its token) for page A
//   PARLEY_WS_B       WebSocket URL for page B
//   PARLEY_ROOM       room id whose call is started
//   PARLEY_SCENARIO   "plain" (default) or "relay": iceTransportPolicy relay, and
//                     the selected candidate pairs must be relayed
//   PARLEY_EXPECT_CALL_UPDATED=1  also require room:call_updated on B
//   CHROMIUM          browser binary (default /usr/bin/chromium)
import { env, waitUntil, launchMediaContext } from './lib.mjs';

const pageURL = env('PARLEY_PAGE_URL');
const pageURLB = env('PARLEY_PAGE_URL_B', pageURL);
const wsA = env('PARLEY_WS_A');
const wsB = env('PARLEY_WS_B');
const room = env('PARLEY_ROOM');
const scenario = env('PARLEY_SCENARIO', 'plain');
const expectCallUpdated = env('PARLEY_EXPECT_CALL_UPDATED', '0') === '1';
if (!pageURL || !wsA || !wsB || !room) {
  console.error('need PARLEY_PAGE_URL, PARLEY_WS_A, PARLEY_WS_B, PARLEY_ROOM');
  process.exit(2);
}

const log = (...a) => console.log(`[${scenario}]`, ...a);


const { context, close: closeContext } = await launchMediaContext();

let failed = false;
try {
  const pages = {};
  for (const [name, ws, url] of [['A', wsA, pageURL], ['B', wsB, pageURLB]]) {
    const page = await context.newPage();
    page.on('console', (m) => { if (m.type() === 'error') log(`${name} console:`, m.text()); });
    page.on('pageerror', (e) => log(`${name} page error:`, e.message));
    await page.goto(url);
    await page.waitForFunction(() => !!window.parleyMedia);
    pages[name] = page;
    const res = await page.evaluate(({ ws, room, policy }) => window.parleyMedia.start({
      wsUrl: ws, roomId: room, iceTransportPolicy: policy,
    }), { ws, room, policy: scenario === 'relay' ? 'relay' : undefined });
    log(`${name} producing`, JSON.stringify(res.producers));
  }

  // Both sides consume the other's two producers.
  for (const name of ['A', 'B']) {
    await waitUntil(`${name} consumers`, () => pages[name].evaluate(() => {
      const s = window.parleyMedia.state;
      return { ok: s.consumers.length >= 2, consumers: s.consumers.length, errors: s.errors };
    }));
  }

  const summary = async (name) => pages[name].evaluate(async () => {
    const st = await window.parleyMedia.stats();
    const v = st.inbound.filter((s) => s.kind === 'video');
    const a = st.inbound.filter((s) => s.kind === 'audio');
    return {
      framesDecoded: v.reduce((n, s) => n + s.framesDecoded, 0),
      audioBytes: a.reduce((n, s) => n + s.bytesReceived, 0),
      pairs: st.pairs,
    };
  });

  const first = {};
  for (const name of ['A', 'B']) {
    first[name] = await waitUntil(`${name} decoded video and audio`, async () => {
      const s = await summary(name);
      return { ok: s.framesDecoded > 0 && s.audioBytes > 0, ...s };
    });
    log(`${name} inbound: framesDecoded=${first[name].framesDecoded} audioBytes=${first[name].audioBytes} pairs=${JSON.stringify(first[name].pairs)}`);
  }
  for (const name of ['A', 'B']) {
    const s = await waitUntil(`${name} audio bytes growing`, async () => {
      const s = await summary(name);
      return { ok: s.audioBytes > first[name].audioBytes && s.framesDecoded > first[name].framesDecoded, ...s };
    });
    log(`${name} later: framesDecoded=${s.framesDecoded} audioBytes=${s.audioBytes}`);
    if (scenario === 'relay') {
      if (s.pairs.length === 0 || !s.pairs.every((p) => p.localType === 'relay')) {
        throw new Error(`${name}: selected pairs are not relayed: ${JSON.stringify(s.pairs)}`);
      }
    }
  }

  // A closes its video producer: B hears media:producer_closed.
  const videoId = await pages.A.evaluate(() => window.parleyMedia.closeProducer('video'));
  await waitUntil('B media:producer_closed', () => pages.B.evaluate((id) => {
    const e = window.parleyMedia.state.events.find((e) => e.type === 'media:producer_closed' && e.data.producer_id === id);
    return { ok: !!e };
  }, videoId), 10000);
  log('B saw media:producer_closed');

  // Page A goes away: B hears media:peer_left (and room:call_updated).
  await pages.B.evaluate(() => { window.parleyMedia.state.events.length = 0; });
  await pages.A.close();
  await waitUntil('B media:peer_left', () => pages.B.evaluate(() => {
    const ev = window.parleyMedia.state.events;
    return { ok: ev.some((e) => e.type === 'media:peer_left'), types: ev.map((e) => e.type) };
  }), 15000);
  log('B saw media:peer_left');
  if (expectCallUpdated) {
    await waitUntil('B room:call_updated', () => pages.B.evaluate(() => {
      const ev = window.parleyMedia.state.events;
      return { ok: ev.some((e) => e.type === 'room:call_updated' && e.data.participant_count === 1), types: ev.map((e) => e.type) };
    }), 15000);
    log('B saw room:call_updated');
  }
  log('PASS');
} catch (e) {
  failed = true;
  console.error(`[${scenario}] FAIL:`, e.message);
} finally {
  await closeContext();
}
process.exit(failed ? 1 : 0);

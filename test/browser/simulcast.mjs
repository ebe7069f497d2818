#!/usr/bin/env node
// Real-browser simulcast test: Chromium pages running the real
// mediasoup-client (web/media's page) join one call through the Parley
// WebSocket envelope; publishers produce video with three rid-based
// encodings (¼, ½, full resolution).
//
// Scenarios (PARLEY_SCENARIO):
//   switch   A publishes 1280x720 simulcast, B consumes: B decodes A's top
//            layer (media:consumer_layers_changed spatial 2); after
//            media:set_preferred_layers 0 B's decoded width is A's lowest
//            encoding's (spatial 0 reported), after 2 the top one's again;
//            framesDecoded keeps growing through both switches.
//   limited  A publishes, B and C consume; C's receive transport goes
//            through a relay in this script that passes 300 kbit/s towards
//            C (a queue of 200 ms, then drops): C is moved below the top
//            layer (media:consumer_layers_changed) and decodes the encoding
//            it was told of, while B stays on the top layer.
//   svc      A publishes 1280x720 VP9 with scalabilityMode L3T3_KEY (three
//            spatial layers in one stream; libwebrtc makes fewer of a
//            smaller picture), B consumes: B decodes the top layer (A's
//            outbound width, spatial 2 reported unless A's encoder dropped
//            a layer); after media:set_preferred_layers 0 it decodes a
//            quarter of that width (spatial 0),
//            after 2 the top again; framesDecoded keeps growing throughout.
//   svcfull  the same with scalabilityMode L3T3 (full SVC: every picture's
//            layers reference the ones below, and going down needs no key
//            frame).
//   four     A, B, C, D each publish 640x360 simulcast and consume the three
//            others: every page decodes three videos, each reported by
//            media:consumer_layers_changed.
//
// Inputs (environment):
//   PARLEY_PAGE_URL   page serving web/media/dist (same origin as the WebSockets)
//   PARLEY_WS_A .. PARLEY_WS_D  WebSocket URLs with their tokens
//   PARLEY_ROOM       room whose call is started
//   CHROMIUM          browser binary (default /usr/bin/chromium)
import dgram from 'node:dgram';
import { env, waitUntil as waitFor, check, launchMediaContext } from './lib.mjs';

// Simulcast switches take longer than the default 30 s under load.
const waitUntil = (what, fn, timeoutMs = 45000, everyMs = 250) => waitFor(what, fn, timeoutMs, everyMs);
const pageURL = env('PARLEY_PAGE_URL');
const room = env('PARLEY_ROOM');
const scenario = env('PARLEY_SCENARIO', 'switch');
const ws = { A: env('PARLEY_WS_A'), B: env('PARLEY_WS_B'), C: env('PARLEY_WS_C'), D: env('PARLEY_WS_D') };
if (!pageURL || !ws.A || !ws.B || !room) {
  console.error('need PARLEY_PAGE_URL, PARLEY_WS_A, PARLEY_WS_B, PARLEY_ROOM');
  process.exit(2);
}

const log = (...a) => console.log(`[${scenario}]`, ...a);



// ---- a UDP relay that limits what goes towards the browser ----

const relays = [];

// startRelay forwards between the browser and 127.0.0.1:target; towards
// the browser at most kbps, with a queue of queueMs, the rest dropped.
function startRelay(target, kbps, queueMs) {
  return new Promise((resolve) => {
    const sock = dgram.createSocket('udp4');
    const st = { sock, client: null, queue: [], qbytes: 0, sent: 0, dropped: 0, budget: 0, last: Date.now() };
    const bytesPerMs = (kbps * 1000) / 8 / 1000;
    const maxQ = bytesPerMs * queueMs;
    sock.on('message', (msg, rinfo) => {
      if (rinfo.address === '127.0.0.1' && rinfo.port === target) {
        if (!st.client) return;
        if (st.qbytes + msg.length > maxQ) { st.dropped++; return; }
        st.queue.push(msg);
        st.qbytes += msg.length;
        pump();
      } else {
        st.client = { address: rinfo.address, port: rinfo.port };
        sock.send(msg, target, '127.0.0.1');
      }
    });
    function pump() {
      const now = Date.now();
      st.budget = Math.min(st.budget + (now - st.last) * bytesPerMs, 3000);
      st.last = now;
      while (st.queue.length && st.budget >= st.queue[0].length) {
        const m = st.queue.shift();
        st.qbytes -= m.length;
        st.budget -= m.length;
        st.sent++;
        sock.send(m, st.client.port, st.client.address);
      }
    }
    st.timer = setInterval(pump, 5);
    relays.push(st);
    sock.bind(0, '127.0.0.1', () => resolve(sock.address().port));
  });
}

// relayInfo is window.parleyRelay for a limited page: the receive
// transport's loopback UDP candidate, through a relay.
async function relayInfo(info) {
  const cand = info.iceCandidates.find((c) => c.protocol === 'udp' && c.ip === '127.0.0.1');
  check(cand, 'no loopback UDP candidate to relay', info.iceCandidates);
  const port = await startRelay(cand.port, 300, 200);
  log(`relay 127.0.0.1:${port} -> ${cand.port} at 300 kbit/s`);
  return { ...info, iceCandidates: [{ ...cand, port }] };
}

// ---- pages ----

const { context, close: closeContext } = await launchMediaContext();

const pages = {};
async function open(name, opts) {
  const page = await context.newPage();
  page.on('console', (m) => { if (m.type() === 'error') log(`${name} console:`, m.text()); });
  page.on('pageerror', (e) => log(`${name} page error:`, e.message));
  if (opts.relay) await page.exposeFunction('parleyRelay', relayInfo);
  await page.goto(pageURL);
  await page.waitForFunction(() => !!window.parleyMedia);
  pages[name] = page;
  const res = await page.evaluate((o) => window.parleyMedia.start(o), { wsUrl: ws[name], roomId: room, audio: false, ...opts });
  log(`${name} joined`, JSON.stringify(res.producers));
}

const stats = (name) => pages[name].evaluate(() => window.parleyMedia.stats());
const consumers = (name) => pages[name].evaluate(() => window.parleyMedia.state.consumers);
const layerEvents = (name) => pages[name].evaluate(() => window.parleyMedia.state.events
  .filter((e) => e.type === 'media:consumer_layers_changed').map((e) => e.data));

// video is page name's one inbound video (the consumer of producer pid when given).
async function video(name) {
  const st = await stats(name);
  const v = st.inbound.filter((s) => s.kind === 'video');
  return v[0] ?? { framesDecoded: 0, frameWidth: 0 };
}

// encodingWidths: the publisher's frame width per rid.
async function encodingWidths(name) {
  const st = await stats(name);
  const out = {};
  for (const o of st.outbound) if (o.kind === 'video' && o.rid) out[o.rid] = o.frameWidth;
  return out;
}

// waitWidth waits until name decodes the publisher's encoding rid, with
// layers_changed reporting spatial; framesDecoded must grow meanwhile.
async function waitWidth(name, pub, rid, spatial, consumerId) {
  const before = await video(name);
  const got = await waitUntil(`${name} decoding ${pub}'s ${rid}`, async () => {
    const v = await video(name);
    const w = await encodingWidths(pub);
    const ev = (await layerEvents(name)).filter((e) => e.consumer_id === consumerId);
    const last = ev[ev.length - 1];
    return { ok: w[rid] > 0 && v.frameWidth === w[rid] && last?.spatial_layer === spatial && v.framesDecoded > before.framesDecoded,
      width: v.frameWidth, widths: w, framesDecoded: v.framesDecoded, last,
      packets: [v.packetsReceived, v.packetsLost, v.nackCount, v.packetsDiscarded] };
  });
  const after = await waitUntil(`${name} still decoding`, async () => {
    const v = await video(name);
    return { ok: v.framesDecoded > got.framesDecoded + 10, framesDecoded: v.framesDecoded, width: v.frameWidth, freezeCount: v.freezeCount };
  });
  log(`${name} decodes ${pub}'s ${rid}: width ${got.width} (encodings ${JSON.stringify(got.widths)}), framesDecoded ${before.framesDecoded} -> ${got.framesDecoded} -> ${after.framesDecoded}, freezeCount ${after.freezeCount}`);
  return after;
}

let failed = false;
try {
  if (scenario === 'switch') {
    await open('A', { simulcast: true, width: 1280, height: 720 });
    await open('B', { produce: false });
    const [c] = (await waitUntil('B consumer', async () => {
      const cs = await consumers('B');
      return { ok: cs.length === 1, cs };
    })).cs;
    await waitUntil('A sends three encodings', async () => {
      const w = await encodingWidths('A');
      return { ok: w.r0 > 0 && w.r1 > 0 && w.r2 > 0, w };
    });
    await waitWidth('B', 'A', 'r2', 2, c.id);
    await pages.B.evaluate((id) => window.parleyMedia.setPreferredLayers(id, 0), c.id);
    await waitWidth('B', 'A', 'r0', 0, c.id);
    await pages.B.evaluate((id) => window.parleyMedia.setPreferredLayers(id, 2), c.id);
    await waitWidth('B', 'A', 'r2', 2, c.id);
    log('layers_changed seen by B:', JSON.stringify((await layerEvents('B')).map((e) => [e.spatial_layer, e.temporal_layer])));
  } else if (scenario === 'svc' || scenario === 'svcfull') {
    await open('A', { svc: scenario === 'svc' ? 'L3T3_KEY' : 'L3T3', width: 1280, height: 720 });
    await open('B', { produce: false });
    const [c] = (await waitUntil('B consumer', async () => {
      const cs = await consumers('B');
      return { ok: cs.length === 1, cs };
    })).cs;
    // A's encoder may scale its picture down (and with it every layer)
    // when the machine is busy, so widths are checked against what A
    // sends now: its outbound frame width is the top layer's, and layer s
    // of n is that width / 2^(n-1-s).
    const topWidth = async () => {
      const st = await stats('A');
      return st.outbound.find((o) => o.kind === 'video')?.frameWidth ?? 0;
    };
    // waitSVC: B decodes A's spatial layer s (top: the highest A sends),
    // told by media:consumer_layers_changed, with framesDecoded growing.
    let topS = -1;
    const waitSVC = async (s) => {
      const before = await video('B');
      const got = await waitUntil(`B decoding A's spatial layer ${s}`, async () => {
        const v = await video('B');
        const ev = (await layerEvents('B')).filter((e) => e.consumer_id === c.id);
        const last = ev[ev.length - 1];
        const top = await topWidth();
        const layerOK = s === 'top' ? last?.spatial_layer >= 1 && (topS < 0 || last.spatial_layer === topS) : last?.spatial_layer === s;
        const want = s === 'top' ? top : top >> (topS - s);
        return { ok: top > 0 && v.frameWidth === want && layerOK && v.framesDecoded > before.framesDecoded,
          width: v.frameWidth, want, framesDecoded: v.framesDecoded, last };
      });
      if (s === 'top') topS = got.last.spatial_layer;
      const after = await waitUntil('B still decoding', async () => {
        const v = await video('B');
        return { ok: v.framesDecoded > got.framesDecoded + 10, framesDecoded: v.framesDecoded, width: v.frameWidth };
      });
      log(`B decodes A's spatial layer ${got.last.spatial_layer}: width ${got.width}, framesDecoded ${before.framesDecoded} -> ${got.framesDecoded} -> ${after.framesDecoded}`);
    };
    await waitSVC('top');
    await pages.B.evaluate((id) => window.parleyMedia.setPreferredLayers(id, 0), c.id);
    await waitSVC(0);
    await pages.B.evaluate((id) => window.parleyMedia.setPreferredLayers(id, 2), c.id);
    await waitSVC('top');
    log('layers_changed seen by B:', JSON.stringify((await layerEvents('B')).map((e) => [e.spatial_layer, e.temporal_layer])));
  } else if (scenario === 'limited') {
    await open('A', { simulcast: true, width: 1280, height: 720 });
    await open('B', { produce: false });
    await open('C', { produce: false, relay: true });
    const ids = {};
    for (const n of ['B', 'C']) {
      ids[n] = (await waitUntil(`${n} consumer`, async () => {
        const cs = await consumers(n);
        return { ok: cs.length === 1, cs };
      })).cs[0].id;
    }
    await waitWidth('B', 'A', 'r2', 2, ids.B);
    // C is moved below the top layer: it decodes the encoding of the layer
    // it was last told of (which one depends on what A's encoder makes of
    // its layers; at 300 kbit/s the top one never fits).
    const c = await waitUntil('C moved below the top layer', async () => {
      const ev = (await layerEvents('C')).filter((e) => e.consumer_id === ids.C);
      const last = ev[ev.length - 1];
      const v = await video('C');
      const w = await encodingWidths('A');
      return { ok: last !== undefined && last.spatial_layer < 2 && v.frameWidth > 0 && v.frameWidth === w[`r${last.spatial_layer}`] && v.frameWidth < w.r2,
        last, width: v.frameWidth, widths: w, framesDecoded: v.framesDecoded };
    });
    const cAfter = await waitUntil('C keeps decoding', async () => {
      const v = await video('C');
      return { ok: v.framesDecoded > c.framesDecoded + 10, framesDecoded: v.framesDecoded };
    });
    log(`C decodes A's r${c.last.spatial_layer}: width ${c.width} (encodings ${JSON.stringify(c.widths)}), framesDecoded ${c.framesDecoded} -> ${cAfter.framesDecoded}`);
    // B was never moved below the top layer it reached.
    const evB = (await layerEvents('B')).map((e) => e.spatial_layer);
    const top = evB.indexOf(2);
    check(top >= 0 && evB.slice(top).every((s) => s === 2), 'B moved down along with C', evB);
    const b = await video('B');
    const w = await encodingWidths('A');
    check(b.frameWidth === w.r2, 'B no longer decodes the top layer', { b, w });
    const r = relays[0];
    log(`C's layers: ${JSON.stringify((await layerEvents('C')).map((e) => [e.spatial_layer, e.temporal_layer]))}; relay sent ${r.sent} dropped ${r.dropped}`);
  } else if (scenario === 'four') {
    const names = ['A', 'B', 'C', 'D'];
    for (const n of names) {
      check(ws[n], `PARLEY_WS_${n} missing`);
      await open(n, { simulcast: true, width: 640, height: 360 });
    }
    const first = {};
    for (const n of names) {
      first[n] = await waitUntil(`${n} decodes three videos`, async () => {
        const st = await stats(n);
        const v = st.inbound.filter((s) => s.kind === 'video');
        const ev = await layerEvents(n);
        const withEvents = new Set(ev.map((e) => e.consumer_id)).size;
        return { ok: v.length === 3 && v.every((s) => s.framesDecoded > 0) && withEvents === 3,
          frames: Object.fromEntries(v.map((s) => [s.ssrc, s.framesDecoded])), withEvents };
      }, 90000);
    }
    for (const n of names) {
      const s = await waitUntil(`${n}'s three videos keep decoding`, async () => {
        const st = await stats(n);
        const v = st.inbound.filter((s) => s.kind === 'video');
        return { ok: v.length === 3 && v.every((s) => s.framesDecoded > first[n].frames[s.ssrc] + 10),
          frames: v.map((s) => s.framesDecoded), widths: v.map((s) => s.frameWidth) };
      }, 60000);
      const ev = (await layerEvents(n)).map((e) => [e.consumer_id.slice(0, 4), e.spatial_layer, e.temporal_layer]);
      log(`${n} decodes: frames ${JSON.stringify(s.frames)} widths ${JSON.stringify(s.widths)}; sends ${JSON.stringify(await encodingWidths(n))}; layers_changed ${JSON.stringify(ev)}`);
    }
  } else {
    throw new Error(`unknown scenario ${scenario}`);
  }
  log('PASS');
} catch (e) {
  failed = true;
  console.error(`[${scenario}] FAIL:`, e.message);
} finally {
  for (const r of relays) { clearInterval(r.timer); r.sock.close(); }
  await closeContext();
}
process.exit(failed ? 1 : 0);

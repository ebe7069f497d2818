#!/usr/bin/env node
// Chromium against permessage-deflate (RFC 7692): the Go test
// (internal/server/compression_browser_test.go) serves this page's origin
// and gives two tokens. In the page, two WebSockets join one room; both
// must have negotiated "permessage-deflate" with server_no_context_takeover
// and client_no_context_takeover (ws.extensions); A broadcasts a 20 KB
// event (a shared frame far above the 1 KiB threshold: the server sends it
// compressed) and then a short one (sent plain): B must get both intact,
// in order. Then A sends a message large enough that Chromium compresses
// it, and the server must answer it (it inflated it).
//
// Inputs (environment): PARLEY_PAGE_URL, PARLEY_WS_A, PARLEY_WS_B, PARLEY_ROOM,
// CHROMIUM (default /usr/bin/chromium).
import { launchBrowser } from './lib.mjs';

const browser = await launchBrowser();
let code = 1;
try {
  const page = await browser.newPage();
  await page.goto(process.env.PARLEY_PAGE_URL);
  const res = await page.evaluate(async ({ wsA, wsB, room }) => {
    const open = (url) => new Promise((resolve, reject) => {
      const ws = new WebSocket(url);
      const msgs = [];
      const waiters = [];
      ws.onmessage = (e) => {
        const m = JSON.parse(e.data);
        msgs.push(m);
        for (const w of waiters.splice(0)) w();
      };
      ws.onopen = () => resolve({ ws, msgs, waiters });
      ws.onerror = () => reject(new Error(`WebSocket ${url} failed`));
    });
    const until = (c, pred, what) => new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`timed out waiting for ${what}: ${JSON.stringify(c.msgs.map((m) => m.type))}`)), 10000);
      const check = () => {
        const m = c.msgs.find(pred);
        if (m) { clearTimeout(t); resolve(m); } else c.waiters.push(check);
      };
      check();
    });
    const a = await open(wsA);
    const b = await open(wsB);
    for (const [c, id] of [[a, 'ja'], [b, 'jb']]) {
      c.ws.send(JSON.stringify({ type: 'room:join', id, data: { room_id: room } }));
      await until(c, (m) => m.type === 'room:state', 'room:state');
    }
    const big = 'parley '.repeat(3000); // 21 KB, compresses well
    a.ws.send(JSON.stringify({ type: 'room:broadcast', id: 'b1', data: { room_id: room, event: { big } } }));
    a.ws.send(JSON.stringify({ type: 'room:broadcast', id: 'b2', data: { room_id: room, event: { small: 'x' } } }));
    const e1 = await until(b, (m) => m.type === 'room:event' && m.data?.event?.big, 'the big event');
    const e2 = await until(b, (m) => m.type === 'room:event' && m.data?.event?.small, 'the small event');
    const order = b.msgs.indexOf(e1) < b.msgs.indexOf(e2);
    // A large client message: Chromium compresses what it sends when the
    // extension is negotiated; the server must inflate it and apply it.
    const patch = { type: 'room:update_storage', id: 's1', data: { room_id: room, ops: [{ op: 'add', path: '/k', value: big }] } };
    a.ws.send(JSON.stringify(patch));
    const ack = await until(a, (m) => m.id === 's1', 'the room:update_storage answer');
    return { extA: a.ws.extensions, extB: b.ws.extensions, bigOK: e1.data.event.big === big, order, ackType: ack.type };
  }, { wsA: process.env.PARLEY_WS_A, wsB: process.env.PARLEY_WS_B, room: process.env.PARLEY_ROOM });
  console.log(JSON.stringify(res));
  const negotiated = (e) => e.includes('permessage-deflate') && e.includes('server_no_context_takeover') && e.includes('client_no_context_takeover');
  code = negotiated(res.extA) && negotiated(res.extB) && res.bigOK && res.order && res.ackType !== 'error' ? 0 : 1;
} catch (e) {
  console.error('FAIL:', e.message);
} finally {
  await browser.close();
}
process.exit(code);

// The SDK against a hostile or buggy server (a fake one, the `ws` package on
// 127.0.0.1, feeding frames today's server never sends): 4001 closes in a
// row back off, loadMembers() leaves malformed members out, and numbers
// from the server are bounded (heartbeat_interval_ms clamped, versions and
// member counts safe integers or the frame is ignored).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { WebSocketServer } from 'ws';
import { ParleyClient } from '../dist/index.js';
import { until, WebSocket } from './helpers.mjs';

/** fakeServer calls onConn(ws, n) for the n-th connection (1-based); it records when each opened and closed. */
async function fakeServer(onConn) {
  const srv = http.createServer((req, res) => {
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end('{}');
  });
  const wss = new WebSocketServer({ server: srv });
  const st = { opened: [], closed: [] };
  wss.on('connection', (ws) => {
    st.opened.push(Date.now());
    ws.on('close', () => st.closed.push(Date.now()));
    ws.on('error', () => {});
    onConn(ws, st.opened.length);
  });
  await new Promise((r) => srv.listen(0, '127.0.0.1', r));
  st.url = `ws://127.0.0.1:${srv.address().port}/ws`;
  st.close = () =>
    new Promise((r) => {
      for (const c of wss.clients) c.terminate();
      wss.close();
      srv.close(r);
      srv.closeAllConnections?.();
    });
  return st;
}

const send = (ws, o) => ws.send(typeof o === 'string' ? o : JSON.stringify(o));
const connected = (ws, extra = {}) =>
  send(ws, { type: 'connected', data: { user_id: 'u', connection_id: `c${Math.random()}`, heartbeat_interval_ms: 30000, server_time: new Date().toISOString(), ...extra } });

test('4001 in a row with getToken: the first reconnect is at once, the next ones back off; a connection that lived resets it', async (t) => {
  // The largest delay every time (full jitter's upper bound), so the gaps are exact.
  const random = Math.random;
  Math.random = () => 0.999999;
  t.after(() => (Math.random = random));
  let lifeMs = 50;
  const st = await fakeServer((ws) => {
    connected(ws);
    setTimeout(() => ws.close(4001, 'token expired'), lifeMs);
  });
  t.after(() => st.close());
  let tokens = 0;
  const c = new ParleyClient({ url: st.url, WebSocket, getToken: async () => `tok${++tokens}`, backoff: { initialMs: 300, maxMs: 1200 } });
  t.after(() => c.close());
  await c.connect();
  await until('5 connections', () => st.opened.length >= 5, 10000);
  // gap k: from the close of connection k to the open of connection k+1.
  const gaps = st.opened.slice(1, 5).map((o, i) => o - st.closed[i]);
  assert.ok(gaps[0] < 150, `the first 4001 reconnects at once: gaps ${gaps}`);
  assert.ok(gaps[1] >= 250 && gaps[2] >= 550 && gaps[3] >= 1100, `then backoff 300, 600, 1200: gaps ${gaps}`);
  assert.ok(tokens >= 5, `getToken before each attempt (${tokens})`);
  // A connection that lives past 5 s: its 4001 is a token that expired in
  // use, and the reconnect is at once again.
  lifeMs = 5300;
  const n = st.opened.length;
  await until('a long connection and the one after it', () => st.opened.length >= n + 2, 15000);
  const gap = st.opened[n + 1] - st.closed[n];
  assert.ok(gap < 150, `after a connection that lived 5.3 s, 4001 reconnects at once: ${gap} ms`);
});

test('loadMembers() leaves malformed members out of its page', async (t) => {
  const st = await fakeServer((ws) => {
    connected(ws);
    ws.on('message', (raw) => {
      const m = JSON.parse(raw);
      if (m.type === 'room:join') {
        send(ws, { type: 'room:state', id: m.id, data: { room_id: 'r', client_id: 'me', member_count: 5, members: [{ client_id: 'me', user_id: 'u', presence: {} }], members_next: 'p1', storage: { version: 0, data: {} } } });
      }
      if (m.type === 'room:members') {
        send(ws, { type: 'room:members_page', id: m.id, data: { room_id: 'r', members: [{ client_id: 'a', user_id: 'ua', presence: {} }, { bogus: true }, 7, null, { client_id: 'b' }], next_after: null } });
      }
    });
  });
  t.after(() => st.close());
  const c = new ParleyClient({ url: st.url, token: 't', WebSocket });
  t.after(() => c.close());
  await c.connect();
  const room = await c.joinRoom('r', { membersAutoFetchLimit: 0 });
  const page = await room.loadMembers(10);
  assert.deepEqual(page.members.map((m) => m.client_id), ['a']);
  assert.equal(page.next, '');
});

test('heartbeat_interval_ms is clamped to [1 s, 10 min]; anything but a positive number is ignored', async (t) => {
  const cases = [
    [1e10, 600000],
    [1, 1000],
    [45000, 45000],
    ['30000', 0],
    [-5, 0],
    [null, 0],
  ];
  const warnings = [];
  const onWarning = (w) => warnings.push(w.name);
  process.on('warning', onWarning);
  t.after(() => process.off('warning', onWarning));
  for (const [announced, want] of cases) {
    const st = await fakeServer((ws) => connected(ws, { heartbeat_interval_ms: announced }));
    t.after(() => st.close());
    const c = new ParleyClient({ url: st.url, token: 't', WebSocket });
    t.after(() => c.close());
    await c.connect();
    assert.equal(c.heartbeatIntervalMs, want, `announced ${JSON.stringify(announced)}`);
    c.close();
  }
  // 1e400 is Infinity once parsed.
  const st = await fakeServer((ws) => send(ws, '{"type":"connected","data":{"user_id":"u","connection_id":"c","heartbeat_interval_ms":1e400}}'));
  t.after(() => st.close());
  const c = new ParleyClient({ url: st.url, token: 't', WebSocket });
  t.after(() => c.close());
  await c.connect();
  assert.equal(c.heartbeatIntervalMs, 0);
  c.close();
  await new Promise((r) => setImmediate(r));
  assert.ok(!warnings.includes('TimeoutOverflowWarning'), `warnings: ${warnings}`);
});

test('versions and member counts must be safe integers: otherwise the value or the frame is ignored', async (t) => {
  let joins = 0;
  let sock;
  const st = await fakeServer((ws) => {
    sock = ws;
    connected(ws, { connection_id: 'me' });
    ws.on('message', (raw) => {
      const m = JSON.parse(raw);
      if (m.type !== 'room:join') return;
      joins++;
      const members = [{ client_id: 'me', user_id: 'u', presence: {} }, { client_id: 'a', user_id: 'ua', presence: {} }];
      // The first answer's version is not an integer: the SDK asks again.
      const version = joins === 1 ? 1e308 : 3;
      send(ws, { type: 'room:state', id: m.id, data: { room_id: 'r', client_id: 'me', member_count: 2 ** 53, members, storage: { version, data: { n: 3 } } } });
    });
  });
  t.after(() => st.close());
  const c = new ParleyClient({ url: st.url, token: 't', WebSocket });
  t.after(() => c.close());
  await c.connect();
  const room = await c.joinRoom('r');
  assert.equal(joins, 2, 'the state with version 1e308 was not taken');
  assert.equal(room.version, 3);
  assert.equal(room.memberCount, 2, 'member_count 2^53 is not a safe integer: the members listed count');
  assert.deepEqual(room.storage, { n: 3 });

  const storage = [];
  room.on('storage', (e) => storage.push(e.version));
  for (const v of [1e308, 4.5, -1, '4', 2 ** 53]) {
    send(sock, { type: 'room:storage_updated', data: { room_id: 'r', version: v, client_id: 'a', ops: [{ op: 'replace', path: '/n', value: 99 }] } });
  }
  send(sock, { type: 'room:members_changed', data: { room_id: 'r', joined: [{ client_id: 'b', user_id: 'ub', presence: {} }], left: [], member_count: 1e308 } });
  send(sock, { type: 'room:members_changed', data: { room_id: 'r', joined: [{ client_id: 'c', user_id: 'uc', presence: {} }], left: [], member_count: 1.5 } });
  // Then valid frames: they are applied, so the ones before were seen and dropped.
  send(sock, { type: 'room:storage_updated', data: { room_id: 'r', version: 4, client_id: 'a', ops: [{ op: 'replace', path: '/n', value: 4 }] } });
  send(sock, { type: 'room:members_changed', data: { room_id: 'r', joined: [{ client_id: 'd', user_id: 'ud', presence: {} }], left: [], member_count: 3 } });
  await until('the valid frames', () => room.version === 4 && room.members.has('d'));
  assert.deepEqual(storage, [4]);
  assert.deepEqual(room.storage, { n: 4 });
  assert.deepEqual([...room.members.keys()].sort(), ['a', 'd', 'me']);
  assert.equal(room.memberCount, 3);
  assert.equal(joins, 2, 'no resync for the ignored frames');
});

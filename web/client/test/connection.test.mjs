// Connecting and reconnecting against a real server: how connect() fails
// (unauthorized, unavailable, timeout), close codes 4001 and 4003, request
// timeouts, pending requests on close, one `connected` per socket.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { ParleyClient, ParleyError } from '../dist/index.js';
import { startServer, freePort, until, nextEvent, HoldWS, WebSocket } from './helpers.mjs';

const server = await startServer(after);

function client(opts) {
  return new ParleyClient({ url: server.wsUrl, WebSocket, backoff: { initialMs: 100, maxMs: 1000 }, ...opts });
}

test('connect() settles in time with distinct codes: bad token unauthorized, down server unavailable, silent server timeout', async () => {
  // A bad token: HTTP 401 before the upgrade; the /api/me probe tells.
  const bad = client({ token: 'not-a-token' });
  const states = [];
  bad.on('state', (s) => states.push(s.state));
  let t0 = Date.now();
  await assert.rejects(bad.connect(), (e) => e instanceof ParleyError && e.code === 'unauthorized' && e.status === 401);
  assert.ok(Date.now() - t0 < 5000, `unauthorized took ${Date.now() - t0} ms`);
  // Without getToken, unauthorized stops: no retry loop.
  assert.equal(bad.state, 'closed');
  assert.deepEqual(states, ['connecting', 'closed']);

  // A server that is down: nothing listens on the port.
  const port = await freePort();
  const down = new ParleyClient({ url: `ws://127.0.0.1:${port}/ws`, token: 'x', WebSocket, backoff: { initialMs: 100, maxMs: 500 } });
  t0 = Date.now();
  await assert.rejects(down.connect(), (e) => e instanceof ParleyError && e.code === 'unavailable');
  assert.ok(Date.now() - t0 < 5000, `unavailable took ${Date.now() - t0} ms`);
  // It keeps trying in the background until closed.
  assert.equal(down.state, 'reconnecting');
  down.close();
  assert.equal(down.state, 'closed');

  // A server that accepts TCP but never answers: connectTimeoutMs.
  const sockets = [];
  const silent = net.createServer((s) => sockets.push(s));
  await new Promise((r) => silent.listen(0, '127.0.0.1', r));
  const mute = new ParleyClient({
    url: `ws://127.0.0.1:${silent.address().port}/ws`,
    token: 'x',
    WebSocket,
    connectTimeoutMs: 300,
    reconnect: false,
  });
  t0 = Date.now();
  await assert.rejects(mute.connect(), (e) => e.code === 'timeout');
  assert.ok(Date.now() - t0 < 3000);
  assert.equal(mute.state, 'closed');
  for (const s of sockets) s.destroy();
  silent.close();
});

test('connected fires exactly once per connection; requests time out and are rejected on close', async () => {
  const token = await server.token('conn-a');
  const c = client({ token, WebSocket: HoldWS, requestTimeoutMs: 300 });
  let connected = 0;
  c.on('connected', () => connected++);
  await c.connect();
  assert.equal(c.state, 'connected');
  assert.equal(c.userId, 'conn-a');
  assert.match(c.connectionId, /^[0-9a-f-]{36}$/);
  assert.equal(connected, 1);
  // connect() again while connected: no second socket.
  await c.connect();
  assert.equal(connected, 1);
  const pong = await c.request('ping');
  assert.equal(pong.type, 'pong');

  // No reply in time (the frames are held back): 'timeout'.
  const ws = HoldWS.instances.at(-1);
  ws.hold();
  await assert.rejects(c.request('ping'), (e) => e.code === 'timeout');
  // A pending request when the socket closes: 'disconnected'.
  const pending = c.request('ping', undefined, { timeoutMs: 0 });
  const gone = nextEvent(c, 'disconnected');
  ws.terminate();
  await assert.rejects(pending, (e) => e.code === 'disconnected');
  const d = await gone;
  assert.equal(d.willReconnect, true);
  await until('reconnected', () => c.state === 'connected');
  assert.equal(connected, 2);
  // The old socket's held frames (a late pong) change nothing now.
  ws.release();
  assert.equal(connected, 2);
  assert.equal((await c.request('ping')).type, 'pong');
  c.close();
  assert.equal(c.state, 'closed');
  await assert.rejects(c.request('ping'), (e) => e.code === 'disconnected');
});

test('4001 (token expired) with getToken: a new token, reconnect at once; without getToken: closed, unauthorized', async () => {
  // The first token lives 2 s; the server closes with 4001 when it expires.
  let calls = 0;
  const getToken = async () => {
    calls++;
    return server.token('expiring', { ttlSeconds: calls === 1 ? 2 : 3600 });
  };
  const c = client({ getToken });
  const closes = [];
  c.on('disconnected', (d) => closes.push(d));
  let connected = 0;
  c.on('connected', () => connected++);
  await c.connect();
  const room = await c.joinRoom('expiry-room', { presence: { here: true } });
  const firstId = c.connectionId;
  await until('reconnected with a fresh token', () => connected === 2 && c.state === 'connected', 10000);
  assert.deepEqual(
    closes.map((d) => [d.code, d.willReconnect]),
    [[4001, true]],
  );
  assert.equal(calls, 2, 'getToken called before each connect');
  assert.notEqual(c.connectionId, firstId);
  await until('room re-joined', () => room.state === 'joined' && room.connectionId === c.connectionId);
  assert.deepEqual(room.presence, { here: true });
  c.close();

  // Without getToken a 4001 ends it.
  const d = client({ token: await server.token('expiring-2', { ttlSeconds: 2 }) });
  await d.connect();
  const err = await nextEvent(d, 'error', (e) => e.code === 'unauthorized', 8000);
  assert.match(err.message, /4001/);
  await until('closed', () => d.state === 'closed');
});

test('4003 (disconnected by the server API) stops reconnecting', async (t) => {
  // POST /api/users/{id}/disconnect (PROTOCOL v1.1 §7) is what closes with 4003.
  const probe = await fetch(`${server.httpUrl}/api/users/nobody/disconnect`, {
    method: 'POST',
    headers: { Authorization: `Bearer ${(await import('./helpers.mjs')).apiKey}`, 'Content-Type': 'application/json' },
    body: '{}',
  });
  const body = await probe.text();
  if (!probe.ok || !/"closed"/.test(body)) {
    t.skip(`no server endpoint produces 4003 yet (POST /api/users/{id}/disconnect answered ${probe.status})`);
    return;
  }
  const c = client({ token: await server.token('kicked') });
  await c.connect();
  const states = [];
  c.on('state', (s) => states.push(s));
  await server.api('POST', '/api/users/kicked/disconnect', { reason: 'test' });
  const err = await nextEvent(c, 'error', (e) => e.code === 'disconnected');
  assert.match(err.message, /4003/);
  await until('closed', () => c.state === 'closed');
  assert.deepEqual(
    states.map((s) => [s.state, s.code]),
    [['closed', 4003]],
  );
});

test('keepalive: a connection that stops answering is replaced', async () => {
  const c = client({ token: await server.token('keepalive'), WebSocket: HoldWS, keepaliveMs: 300 });
  await c.connect();
  const room = await c.joinRoom('keepalive-room');
  const first = c.connectionId;
  const ws = HoldWS.instances.at(-1);
  const gone = nextEvent(c, 'disconnected');
  ws.hold(); // from now on nothing arrives: the ping goes unanswered
  const d = await gone;
  assert.deepEqual([d.code, d.willReconnect], [4000, true]);
  await until('reconnected and re-joined', () => c.state === 'connected' && room.state === 'joined' && c.connectionId !== first);
  await until('the server holds one connection', async () => (await server.metric('parley_connections')) === 1);
  c.close();
});

test('a join the server refuses rejects joinRoom and leaves no room behind', async () => {
  const c = client({ token: await server.token('limited', { rooms: { 'mine-*': ['read'] } }) });
  await c.connect();
  await assert.rejects(c.joinRoom('theirs'), (e) => e.code === 'forbidden');
  assert.equal(c.room('theirs'), undefined);
  const mine = await c.joinRoom('mine-1');
  await assert.rejects(mine.patch([{ op: 'add', path: '/x', value: 1 }]), (e) => e.code === 'forbidden');
  assert.deepEqual(mine.storage, {}, 'rolled back');
  await assert.rejects(mine.updatePresence({ x: 1 }), (e) => e.code === 'forbidden');
  assert.deepEqual(mine.presence, {});
  c.close();
  assert.equal(mine.state, 'left');
});

test('hostile and future frames: garbage is ignored, large-room member frames are applied', async () => {
  const c = client({ token: await server.token('hostile'), WebSocket: HoldWS });
  const errors = [];
  c.on('error', (e) => errors.push(e));
  await c.connect();
  const ws = HoldWS.instances.at(-1);
  const room = await c.joinRoom('hostile-room', { presence: { me: 1 } });
  await room.patch([{ op: 'add', path: '/a', value: 1 }]);
  const before = { storage: structuredClone(room.storage), version: room.version, members: room.members.size };
  let connected = 0;
  c.on('connected', () => connected++);
  const frames = [
    'not json',
    '[1,2]',
    '{"type":5}',
    '{"type":"connected","data":{"connection_id":"x","user_id":"y"}}',
    '{"type":"state","data":{}}',
    '{"type":"room:joined","data":{"room_id":"hostile-room"}}',
    '{"type":"room:joined","data":{"room_id":"hostile-room","client_id":7,"user_id":"u"}}',
    '{"type":"room:left","data":{"room_id":"hostile-room"}}',
    '{"type":"room:storage_updated","data":{"room_id":"hostile-room","version":"2","ops":[]}}',
    '{"type":"room:storage_updated","data":{"room_id":"hostile-room","version":1,"ops":[{"op":"remove","path":"/a"}]}}',
    '{"type":"room:presence_updated","data":{"room_id":"hostile-room","client_id":"nobody","presence":[1]}}',
    '{"type":"room:members_changed","data":{"room_id":"hostile-room","joined":"x","left":5}}',
    '{"type":"room:event","data":{"room_id":"hostile-room"}}',
    '{"type":"room:unknown","data":{"room_id":"hostile-room"}}',
    '{"type":"totally:unknown","id":"999999","data":null}',
    '{"type":"error","data":{"code":"internal"}}',
    '{"type":"room:event","data":{"room_id":"other-room","event":{"__proto__":{"polluted":1}}}}',
  ];
  for (const f of frames) ws.inject(f);
  assert.equal({}.polluted, undefined);
  assert.equal(connected, 0, 'a second connected frame is not a second connection');
  assert.equal(c.connectionId, room.connectionId);
  assert.deepEqual({ storage: room.storage, version: room.version, members: room.members.size }, before);
  assert.equal(errors.length, 1, 'the error frame without an id is reported once');
  assert.equal((await c.request('ping')).type, 'pong', 'the connection still works');

  // Large rooms (PROTOCOL §3): today's server never sends these; the room applies them.
  const member = (id) => ({ client_id: id, user_id: `u-${id}`, presence: { n: id }, joined_at: '2026-01-01T00:00:00.000Z' });
  ws.inject(JSON.stringify({ type: 'room:members_changed', data: { room_id: 'hostile-room', joined: [member('m1'), member('m2')], left: [] } }));
  assert.equal(room.members.size, 3);
  assert.equal(room.memberCount, 3);
  ws.inject(JSON.stringify({ type: 'room:members_changed', data: { room_id: 'hostile-room', joined: [member('m3')], left: [{ client_id: 'm1', user_id: 'u-m1' }] } }));
  assert.deepEqual([...room.members.keys()].filter((k) => k.startsWith('m')).sort(), ['m2', 'm3']);
  assert.equal(room.memberCount, 3);
  ws.inject(JSON.stringify({ type: 'room:members_page', data: { room_id: 'hostile-room', members: [member('m4')], next_after: null } }));
  assert.equal(room.members.get('m4').presence.n, 'm4');
  assert.equal(room.memberCount, 4);
  // A joined frame for a known client id is an update, not a second member.
  ws.inject(JSON.stringify({ type: 'room:joined', data: { room_id: 'hostile-room', client_id: 'm4', user_id: 'u-m4', presence: { n: 'again' } } }));
  assert.equal(room.memberCount, 4);
  assert.equal(room.members.get('m4').presence.n, 'again');
  c.close();
});

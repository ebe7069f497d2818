// The server goes down for 8 s under two clients in a room. Afterwards each
// client has exactly one connection on the server, sees exactly the right
// members (no ghosts of the old connections), its presence is the current
// one (changed after the join and again while the server was down), and
// the storage mirrors caught up with the writes made while they were away.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { ParleyClient } from '../dist/index.js';
import { startServer, until, HoldWS, WebSocket } from './helpers.mjs';

const server = await startServer(after);
const ROOM = 'outage-room';
const OUTAGE_MS = 8000;

function client(token) {
  return new ParleyClient({ url: server.wsUrl, token, WebSocket, backoff: { initialMs: 200, maxMs: 2000 } });
}

function memberView(room) {
  return [...room.members.values()].map((m) => ({ client_id: m.client_id, user_id: m.user_id, presence: m.presence })).sort((x, y) => x.user_id.localeCompare(y.user_id));
}

test('server down for 8 s: one connection per client, no ghost members, current presence, storage caught up', async () => {
  const a = client(await server.token('outage-a'));
  const b = client(await server.token('outage-b'));
  const connected = { a: 0, b: 0 };
  a.on('connected', () => connected.a++);
  b.on('connected', () => connected.b++);
  await a.connect();
  await b.connect();
  const ra = await a.joinRoom(ROOM, { presence: { cursor: 1 } });
  const rb = await b.joinRoom(ROOM, { presence: { color: 'blue' } });
  await until('a sees b', () => ra.members.size === 2);
  // a's presence changes after its join.
  await ra.updatePresence({ cursor: 2, selection: [1, 2] });
  await until('b sees a at cursor 2', () => rb.members.get(a.connectionId)?.presence.cursor === 2);
  await rb.patch([{ op: 'add', path: '/log', value: ['before'] }]);
  await until('a has the log', () => ra.version === 1);
  assert.equal(await server.metric('parley_connections'), 2);
  const oldIds = [a.connectionId, b.connectionId];

  // Down: kill -9, so no close frame; stay down for 8 s.
  await server.kill();
  await until('both notice', () => a.state === 'reconnecting' && b.state === 'reconnecting');
  // While down: a changes its presence again and writes (both queued).
  const offlinePresence = ra.updatePresence({ cursor: 3, selection: null });
  const offlineWrite = ra.patch([{ op: 'add', path: '/log/-', value: 'a-offline' }]);
  assert.deepEqual(ra.presence, { cursor: 3 }, 'optimistic presence');
  assert.deepEqual(ra.storage.log, ['before', 'a-offline'], 'optimistic storage');
  await new Promise((r) => setTimeout(r, OUTAGE_MS)); // the outage itself, not a synchronisation
  await server.start();
  // Writes made while the clients are still away (their next retry is up to 2 s off).
  await server.api('PATCH', `/api/rooms/${ROOM}/storage`, [{ op: 'add', path: '/log/-', value: 'rest-1' }]);
  await server.api('PATCH', `/api/rooms/${ROOM}/storage`, [{ op: 'add', path: '/rest', value: true }]);

  await until('both back and re-joined', () => ra.state === 'joined' && rb.state === 'joined', 15000);
  const { version: offlineVersion } = await offlineWrite;
  await offlinePresence;
  assert.ok(offlineVersion >= 2);

  // Exactly one connection per client on the server, and one `connected` each.
  await until('the server counts 2 connections', async () => (await server.metric('parley_connections')) === 2);
  assert.equal(connected.a, 2, 'a: one connected per connection (initial + one reconnect)');
  assert.equal(connected.b, 2, 'b: one connected per connection (initial + one reconnect)');
  assert.ok(!oldIds.includes(a.connectionId) && !oldIds.includes(b.connectionId), 'new connection ids');

  // Members: exactly a and b, with their new ids and current presence.
  const want = [
    { client_id: a.connectionId, user_id: 'outage-a', presence: { cursor: 3 } },
    { client_id: b.connectionId, user_id: 'outage-b', presence: { color: 'blue' } },
  ];
  await until('a and b see exactly each other', () => {
    try {
      assert.deepEqual(memberView(ra), want);
      assert.deepEqual(memberView(rb), want);
      return true;
    } catch {
      return false;
    }
  });
  assert.equal(ra.memberCount, 2);
  assert.equal(rb.memberCount, 2);

  // A third, fresh client sees the same two (and itself): no ghost on the server.
  const c = client(await server.token('outage-c'));
  await c.connect();
  const rc = await c.joinRoom(ROOM);
  assert.deepEqual(
    memberView(rc).filter((m) => m.user_id !== 'outage-c'),
    want,
  );
  assert.equal(rc.members.size, 3);
  assert.equal(await server.metric('parley_connections'), 3);

  // Storage: every mirror equals the server's document.
  const rest = await server.api('GET', `/api/rooms/${ROOM}/storage`);
  await until('mirrors caught up', () => ra.version === rest.version && rb.version === rest.version);
  assert.deepEqual(ra.storage, rest.data);
  assert.deepEqual(rb.storage, rest.data);
  assert.deepEqual(rc.storage, rest.data);
  assert.equal(rest.version, 4);
  assert.deepEqual(rest.data.log.filter((x) => x !== 'a-offline'), ['before', 'rest-1']);
  assert.ok(rest.data.log.includes('a-offline'));
  assert.equal(rest.data.rest, true);
  assert.equal(ra.pendingBatches, 0);

  for (const x of [a, b, c]) x.close();
  await until('the server counts 0 connections', async () => (await server.metric('parley_connections')) === 0);
});

test('batches in flight when the connection dies: an applied one resolves once, a refused one is not applied twice', async () => {
  const a = new ParleyClient({ url: server.wsUrl, token: await server.token('inflight-a'), WebSocket: HoldWS, backoff: { initialMs: 100, maxMs: 500 } });
  const b = client(await server.token('inflight-b'));
  await a.connect();
  const wsA = HoldWS.instances.at(-1);
  await b.connect();
  const ra = await a.joinRoom('inflight-room');
  const rb = await b.joinRoom('inflight-room');
  await ra.patch([{ op: 'add', path: '/n', value: 0 }, { op: 'add', path: '/log', value: [] }]);
  await until('b at 1', () => rb.version === 1);

  wsA.hold(); // a hears nothing from here on: replies are lost with the socket
  await rb.patch([{ op: 'replace', path: '/n', value: 1 }]); // version 2
  const applied = ra.patch([{ op: 'add', path: '/log/-', value: 'applied-once' }]); // version 3, reply lost
  const refused = ra.patch([{ op: 'test', path: '/n', value: 0 }, { op: 'replace', path: '/n', value: 9 }]); // test_failed, reply lost
  const refusedOutcome = refused.then(() => 'resolved', (e) => e); // settles during the re-join
  await until('the server applied a\'s first batch', async () => (await server.api('GET', '/api/rooms/inflight-room/storage')).version === 3);
  await until('b saw it', () => rb.version === 3);
  await server.kill();
  await server.start();
  await until('a re-joined', () => ra.state === 'joined' && a.state === 'connected', 15000);
  // Matched in the catch-up by writer (a's old connection) and ops: resolved, not sent again.
  assert.deepEqual(await applied, { version: 3 });
  // Not in the catch-up: never applied; after the rebase it no longer applies.
  const outcome = await refusedOutcome;
  assert.equal(outcome.code, 'conflict', String(outcome));
  await until('b back', () => rb.state === 'joined');
  const rest = await server.api('GET', '/api/rooms/inflight-room/storage');
  assert.deepEqual(rest, { version: 3, data: { n: 1, log: ['applied-once'] } });
  assert.deepEqual(ra.storage, rest.data);
  assert.equal(ra.version, 3);
  assert.equal(ra.pendingBatches, 0);
  a.close();
  b.close();
});

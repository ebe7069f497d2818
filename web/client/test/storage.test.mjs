// The storage mirror against a real server: prototype pollution through
// the wire, optimistic apply, rebase when another client's batch is ordered
// first, rollback when the server refuses, a queued batch that no longer
// applies, undo/redo of my own batches.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { ParleyClient } from '../dist/index.js';
import { startServer, until, HoldWS, WebSocket } from './helpers.mjs';

const server = await startServer(after);
const clients = [];
after(() => clients.forEach((c) => c.close()));

async function connect(user, WS = WebSocket) {
  const c = new ParleyClient({ url: server.wsUrl, token: await server.token(user), WebSocket: WS });
  clients.push(c);
  await c.connect();
  return c;
}

/** socketOf is the HoldWS under client c (the newest one made). */
function lastHoldWS() {
  return HoldWS.instances.at(-1);
}

test('prototype pollution: add /__proto__ {} then add /__proto__/polluted stays a plain key everywhere', async () => {
  const writer = await connect('pp-writer');
  const reader = await connect('pp-reader');
  const rw = await writer.joinRoom('pp-room');
  const rr = await reader.joinRoom('pp-room');
  await rw.patch([{ op: 'add', path: '/__proto__', value: {} }]);
  await rw.patch([{ op: 'add', path: '/__proto__/polluted', value: 'yes' }]);
  await rw.patch([{ op: 'add', path: '/constructor', value: { prototype: { polluted: 'yes' } } }]);
  await until('reader at version 3', () => rr.version === 3);
  // A client that joins now gets the whole document in room:state.
  const late = await connect('pp-late');
  const rl = await late.joinRoom('pp-room');
  assert.equal(rl.version, 3);
  for (const [who, room] of [['writer', rw], ['reader', rr], ['late joiner', rl]]) {
    assert.equal({}.polluted, undefined, who);
    assert.equal(Object.prototype.polluted, undefined, who);
    assert.ok(Object.hasOwn(room.storage, '__proto__'), `${who}: own __proto__ key`);
    assert.equal(Object.getPrototypeOf(room.storage), Object.prototype, `${who}: prototype unchanged`);
    assert.equal(room.storage.__proto__.polluted, 'yes', who);
    assert.deepEqual(Object.keys(room.storage).sort(), ['__proto__', 'constructor'], who);
  }
  const rest = await server.api('GET', '/api/rooms/pp-room/storage');
  assert.deepStrictEqual(rw.storage, rest.data);
  assert.deepStrictEqual(rl.storage, rest.data);
  assert.equal({}.polluted, undefined);
});

test('optimistic apply: the storage event and the mirror change at once, before the server answers', async () => {
  const a = await connect('opt-a');
  const ra = await a.joinRoom('opt-room');
  const events = [];
  ra.on('storage', (e) => events.push({ local: e.local, version: e.version, data: structuredClone(e.data) }));
  const p = ra.patch([{ op: 'add', path: '/x', value: 1 }]);
  // Synchronously: the mirror shows it, version still the confirmed one.
  assert.deepEqual(ra.storage, { x: 1 });
  assert.equal(ra.version, 0);
  assert.deepEqual(events, [{ local: true, version: 0, data: { x: 1 } }]);
  assert.equal(ra.pendingBatches, 1);
  assert.deepEqual(await p, { version: 1 });
  assert.equal(ra.version, 1);
  assert.equal(ra.pendingBatches, 0);
  assert.deepEqual(events.at(-1), { local: false, version: 1, data: { x: 1 } });
  // A batch that does not apply to the mirror is refused at once; nothing is sent.
  await assert.rejects(ra.patch([{ op: 'remove', path: '/nope' }]), (e) => e.code === 'bad_request');
  assert.equal(ra.pendingBatches, 0);
});

test('rebase: another client\'s batch ordered before my pending one', async () => {
  const a = await connect('rb-a', HoldWS);
  const wsA = lastHoldWS();
  const b = await connect('rb-b');
  const ra = await a.joinRoom('rb-room');
  const rb = await b.joinRoom('rb-room');
  await ra.patch([{ op: 'add', path: '/list', value: [] }]);
  await until('b at 1', () => rb.version === 1);

  const seen = [];
  ra.on('storage', (e) => seen.push({ local: e.local, list: [...e.data.list], version: e.version }));
  wsA.hold(); // a's incoming frames are delayed: a does not know of b's batch yet
  await rb.patch([{ op: 'add', path: '/list/-', value: 'b' }]); // ordered first (version 2)
  const pa = ra.patch([{ op: 'add', path: '/list/-', value: 'a' }]); // ordered second (version 3)
  assert.deepEqual(ra.storage.list, ['a'], 'a sees its own op at once');
  await until('b has both', () => rb.version === 3);
  await until('a\'s held frames: b\'s update and a\'s reply', () => wsA.heldCount >= 2);
  wsA.release();
  assert.deepEqual(await pa, { version: 3 });
  assert.deepEqual(seen, [
    { local: true, list: ['a'], version: 1 },
    { local: false, list: ['b', 'a'], version: 2 }, // rebased: b's batch, then mine on top
    { local: false, list: ['b', 'a'], version: 3 }, // mine confirmed
  ]);
  assert.deepEqual(ra.storage, rb.storage);
  assert.deepEqual(ra.storage, { list: ['b', 'a'] });
});

test('rollback: the server refuses my batch (test op), the promise rejects with its code', async () => {
  const a = await connect('rl-a', HoldWS);
  const wsA = lastHoldWS();
  const b = await connect('rl-b');
  const ra = await a.joinRoom('rl-room');
  const rb = await b.joinRoom('rl-room');
  await ra.patch([{ op: 'add', path: '/n', value: 0 }]);
  await until('b at 1', () => rb.version === 1);

  const seen = [];
  ra.on('storage', (e) => seen.push({ local: e.local, n: e.data.n }));
  wsA.hold();
  await rb.patch([{ op: 'replace', path: '/n', value: 1 }]);
  // a still thinks n is 0: its test passes locally and fails on the server.
  const pa = ra.patch([
    { op: 'test', path: '/n', value: 0 },
    { op: 'replace', path: '/n', value: 5 },
  ]);
  assert.equal(ra.storage.n, 5, 'optimistic');
  await until('a\'s held frames: b\'s update and the error', () => wsA.heldCount >= 2);
  wsA.release();
  await assert.rejects(pa, (e) => e.code === 'test_failed');
  assert.equal(ra.storage.n, 1, 'rolled back onto the confirmed document');
  assert.equal(ra.version, 2);
  assert.equal(ra.pendingBatches, 0);
  assert.deepEqual(seen[0], { local: true, n: 5 });
  assert.deepEqual(seen.at(-1).n, 1);

  // A refusal the mirror cannot foresee (a server limit): rolled back too.
  const ops = Array.from({ length: 101 }, (_, i) => ({ op: 'add', path: `/k${i}`, value: i }));
  const big = ra.patch(ops);
  assert.equal(ra.storage.k100, 100, 'optimistic');
  await assert.rejects(big, (e) => e.code === 'too_large');
  assert.deepEqual(ra.storage, { n: 1 });
  assert.equal(ra.canUndo, true, 'the first batch is still undoable');
  assert.deepEqual(rb.storage, { n: 1 });
});

test('a batch queued before the join that no longer applies is dropped with conflict', async () => {
  const w = await connect('cf-w');
  const rw = await w.joinRoom('cf-room');
  await rw.patch([{ op: 'add', path: '/taken', value: true }]);
  const a = await connect('cf-a');
  const joined = a.joinRoom('cf-room');
  const room = a.room('cf-room');
  assert.equal(room.state, 'joining');
  // "Initialise when empty": applies to the empty mirror, not to the real document.
  const init = room.patch([
    { op: 'test', path: '', value: {} },
    { op: 'add', path: '/init', value: 1 },
  ]);
  await joined;
  await assert.rejects(init, (e) => e.code === 'conflict');
  assert.deepEqual(room.storage, { taken: true });
  assert.equal(room.version, 1);
});

test('initialStorage is written once, only into an empty room', async () => {
  const a = await connect('is-a');
  const ra = await a.joinRoom('is-room', { initialStorage: { todos: [], title: 'new' } });
  await until('initialised', () => ra.version === 1);
  assert.deepEqual(ra.storage, { todos: [], title: 'new' });
  const b = await connect('is-b');
  const rb = await b.joinRoom('is-room', { initialStorage: { todos: ['x'], other: 1 } });
  assert.deepEqual(rb.storage, { todos: [], title: 'new' });
  assert.equal(rb.version, 1);
});

test('undo/redo covers my own batches only', async () => {
  const a = await connect('ur-a');
  const b = await connect('ur-b');
  const ra = await a.joinRoom('ur-room');
  const rb = await b.joinRoom('ur-room');
  assert.equal(ra.undo(), undefined);
  assert.equal(ra.redo(), undefined);
  await ra.patch([{ op: 'add', path: '/title', value: 'x' }]);
  await ra.patch([{ op: 'replace', path: '/title', value: 'y' }]);
  await rb.patch([{ op: 'add', path: '/theirs', value: 1 }]); // not mine: never undone by a
  await until('a at 3', () => ra.version === 3);
  assert.equal(ra.canUndo, true);
  assert.equal(rb.canUndo, true);
  assert.equal(ra.canRedo, false);

  await ra.undo();
  assert.deepEqual(ra.storage, { title: 'x', theirs: 1 });
  assert.equal(ra.canRedo, true);
  await ra.undo();
  assert.deepEqual(ra.storage, { theirs: 1 });
  assert.equal(ra.canUndo, false);
  await until('b sees the undos', () => rb.version === 5);
  assert.deepEqual(rb.storage, { theirs: 1 });

  await ra.redo();
  assert.deepEqual(ra.storage, { title: 'x', theirs: 1 });
  await ra.redo();
  assert.deepEqual(ra.storage, { title: 'y', theirs: 1 });
  assert.equal(ra.canRedo, false);
  await ra.undo();
  assert.deepEqual(ra.storage, { title: 'x', theirs: 1 });
  // A new batch clears the redo stack; undoable: false is not recorded.
  await ra.patch([{ op: 'add', path: '/n', value: 1 }]);
  assert.equal(ra.canRedo, false);
  await ra.patch([{ op: 'add', path: '/m', value: 1 }], { undoable: false });
  await ra.undo(); // undoes /n, not /m
  assert.deepEqual(ra.storage, { title: 'x', theirs: 1, m: 1 });
  await until('b agrees', () => rb.version === ra.version);
  assert.deepEqual(rb.storage, ra.storage);
  const rest = await server.api('GET', '/api/rooms/ur-room/storage');
  assert.deepEqual(rest.data, ra.storage);
});

test('presence: optimistic, shallow merge, null removes, others see the merged object', async () => {
  const a = await connect('pr-a');
  const b = await connect('pr-b');
  const ra = await a.joinRoom('pr-room', { presence: { name: 'A', cursor: { x: 0 } } });
  const rb = await b.joinRoom('pr-room');
  assert.deepEqual(rb.members.get(a.connectionId).presence, { name: 'A', cursor: { x: 0 } });
  const p = ra.updatePresence({ cursor: { x: 5 }, name: null, busy: true });
  assert.deepEqual(ra.presence, { cursor: { x: 5 }, busy: true }, 'at once');
  assert.deepEqual(ra.members.get(a.connectionId).presence, ra.presence);
  await p;
  await until('b sees it', () => rb.members.get(a.connectionId).presence.busy === true);
  assert.deepEqual(rb.members.get(a.connectionId).presence, { cursor: { x: 5 }, busy: true });
  // A refused update is rolled back.
  await assert.rejects(ra.updatePresence({ big: 'x'.repeat(5000) }), (e) => e.code === 'too_large');
  assert.deepEqual(ra.presence, { cursor: { x: 5 }, busy: true });
  // Events and leave.
  const got = new Promise((r) => rb.on('event', r));
  await ra.broadcast({ emoji: 'wave' });
  assert.deepEqual((await got).event, { emoji: 'wave' });
  await ra.leave();
  assert.equal(ra.state, 'left');
  assert.equal(a.room('pr-room'), undefined);
  await until('b sees a leave', () => rb.members.size === 1 && rb.memberCount === 1);
});

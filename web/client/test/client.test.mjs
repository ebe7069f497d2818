// Tests web/client/parley.js against a real Parley server (started by
// internal/server/jsclient_test.go, which passes its address and tokens).
// Run: node --experimental-websocket --test web/client/test/
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ParleyClient, ParleyError, applyPatch } from '../parley.js';

const url = process.env.PARLEY_WS_URL;
const tokA = process.env.PARLEY_TOKEN_A;
const tokB = process.env.PARLEY_TOKEN_B;

async function until(what, fn, ms = 10000) {
  const end = Date.now() + ms;
  while (!fn()) {
    if (Date.now() > end) throw new Error(`timed out: ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

test('applyPatch follows RFC 6902', () => {
  const doc = { a: [1, 2], 'x/y': { 'm~n': 1 } };
  const out = applyPatch(doc, [
    { op: 'add', path: '/a/-', value: 3 },
    { op: 'add', path: '/a/0', value: 0 },
    { op: 'replace', path: '/x~1y/m~0n', value: 2 },
    { op: 'copy', from: '/a', path: '/b' },
    { op: 'move', from: '/b', path: '/c' },
    { op: 'remove', path: '/a/1' },
    { op: 'test', path: '/c', value: [0, 1, 2, 3] },
  ]);
  assert.deepEqual(out, { a: [0, 2, 3], 'x/y': { 'm~n': 2 }, c: [0, 1, 2, 3] });
  assert.deepEqual(doc, { a: [1, 2], 'x/y': { 'm~n': 1 } }, 'input untouched');
  assert.throws(() => applyPatch({ a: 1 }, [{ op: 'test', path: '/a', value: 2 }]), ParleyError);
});

test('two clients share a room: members, presence, storage, events, errors', async () => {
  const a = new ParleyClient({ url, token: tokA, reconnect: false });
  const b = new ParleyClient({ url, token: tokB, reconnect: false });
  await a.connect();
  await b.connect();
  const ra = await a.joinRoom('js-room', { presence: { cursor: 1 } });
  const rb = await b.joinRoom('js-room');
  assert.equal(rb.members.size, 2);
  await until('a sees b', () => ra.members.size === 2);

  const v = await ra.patch([{ op: 'add', path: '/title', value: 'hello' }]);
  assert.equal(v, 1);
  await until('b has version 1', () => rb.version === 1);
  assert.deepEqual(rb.data, { title: 'hello' });

  const presence = new Promise((resolve) => rb.on('presence', resolve));
  await ra.updatePresence({ cursor: 2, gone: null });
  const p = await presence;
  assert.deepEqual(p.presence, { cursor: 2 });

  const event = new Promise((resolve) => rb.on('event', resolve));
  await ra.broadcast({ emoji: 'wave' });
  assert.deepEqual((await event).event, { emoji: 'wave' });

  await assert.rejects(ra.patch([{ op: 'test', path: '/title', value: 'nope' }]), (e) => e.code === 'test_failed');
  await assert.rejects(ra.patch([{ op: 'add', path: '/x', value: 1 }], { baseVersion: 0 }), (e) => e.code === 'version_conflict');
  assert.equal(rb.version, 1);

  await rb.leave();
  await until('a sees b leave', () => ra.members.size === 1);
  a.close();
  b.close();
});

test('a client that reconnects catches up with since_version', async () => {
  const a = new ParleyClient({ url, token: tokA, reconnect: false });
  const b = new ParleyClient({ url, token: tokB, reconnect: true });
  await a.connect();
  await b.connect();
  const ra = await a.joinRoom('js-catchup');
  const rb = await b.joinRoom('js-catchup');
  await ra.patch([{ op: 'add', path: '/n', value: 0 }]);
  await until('b at 1', () => rb.version === 1);

  const reconnected = new Promise((resolve) => {
    let drops = 0;
    b.on('disconnected', () => { drops++; });
    b.on('connected', () => { if (drops > 0) resolve(); });
  });
  b._ws.close(4000, 'test: drop'); // an application close code: reconnect
  for (let i = 1; i <= 5; i++) await ra.patch([{ op: 'replace', path: '/n', value: i }]);
  await reconnected;
  await until('b caught up', () => rb.version === 6);
  assert.deepEqual(rb.data, { n: 5 });
  assert.deepEqual(rb.data, ra.data);
  a.close();
  b.close();
});

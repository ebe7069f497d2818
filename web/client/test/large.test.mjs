// Large rooms against a real server started with --large-room-members 3
// (docs/protocol.md "Large rooms"): the SDK's members and memberCount
// follow room:members_changed batches, presence arrives through
// room:presence_batch, and a first page is completed by room:members
// (automatically up to membersAutoFetchLimit, by loadMembers() above).
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { ParleyClient } from '../dist/index.js';
import { startServer, until, WebSocket } from './helpers.mjs';

const server = await startServer(after, {
  env: { PARLEY_LARGE_ROOM_MEMBERS: '3', PARLEY_LARGE_ROOM_INTERVAL: '30ms', PARLEY_PRESENCE_COALESCE: 'true' },
});
const clients = [];
after(() => clients.forEach((c) => c.close()));

async function connect(user) {
  const c = new ParleyClient({ url: server.wsUrl, token: await server.token(user), WebSocket });
  clients.push(c);
  await c.connect();
  return c;
}

test('large room: members, memberCount and presence converge through batches and pages', async () => {
  const rooms = [];
  for (let i = 0; i < 8; i++) {
    const c = await connect(`large-${i}`);
    rooms.push(await c.joinRoom('large-room', { presence: { i } }));
  }
  const ids = rooms.map((r) => r.connectionId).sort();
  // Everyone knows all 8 members: early joiners from the batches, late
  // joiners from their first page plus the automatic room:members pages.
  for (const r of rooms) {
    await until(`${r.connectionId} knows all 8 members`, () => r.memberCount === 8 && r.members.size === 8);
    assert.deepEqual([...r.members.keys()].sort(), ids);
    assert.equal(r.membersNext, '');
  }
  // Presence through room:presence_batch reaches the first member.
  await rooms[7].updatePresence({ cursor: { x: 7, y: 7 } });
  const last = rooms[7].connectionId;
  await until('the first member sees the cursor of the last one', () => rooms[0].members.get(last)?.presence?.cursor?.x === 7);
  // Three leave: counts and members follow.
  for (const r of rooms.slice(5)) await r.leave();
  for (const r of rooms.slice(0, 5)) {
    await until(`${r.connectionId} counts 5`, () => r.memberCount === 5 && r.members.size === 5);
  }
});

test('large room above membersAutoFetchLimit: first page only, loadMembers pages on', async () => {
  const rooms = [];
  for (let i = 0; i < 7; i++) {
    const c = await connect(`paged-${i}`);
    rooms.push(await c.joinRoom('paged-room', { membersAutoFetchLimit: 0 }));
  }
  const late = rooms[6];
  assert.equal(late.memberCount, 7);
  assert.notEqual(late.membersNext, '', 'a first page leaves a cursor');
  const seen = new Set(late.members.keys());
  for (let guard = 0; late.membersNext !== '' && guard < 10; guard++) {
    const { members } = await late.loadMembers(2);
    for (const m of members) seen.add(m.client_id);
  }
  assert.equal(late.membersNext, '');
  assert.equal(seen.size, 7);
});

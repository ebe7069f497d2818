// ParleyAPI (REST) against a real server: accounts with refresh rotation,
// rooms and members, messages with pagination, storage, presence; and the
// typing and status helpers of ParleyClient with REST-made rooms.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { ParleyAPI, ParleyClient, ParleyError } from '../dist/index.js';
import { startServer, until, nextEvent, WebSocket } from './helpers.mjs';

// Registration is rate limited per address (burst 5): this file registers more.
const server = await startServer(after, { env: { PARLEY_REGISTER_BURST: '20' } });
const clients = [];
after(() => clients.forEach((c) => c.close()));

const api = () => new ParleyAPI({ baseUrl: server.httpUrl });

test('accounts: register, login, me, refresh rotation (the old refresh token is refused), logout', async () => {
  const reg = api();
  const seen = [];
  reg.onTokens((t) => seen.push(t?.access_token ?? null));
  const pair = await reg.register({ username: 'alice1', password: 'correct horse', displayName: 'Alice' });
  assert.equal(pair.user.username, 'alice1');
  assert.equal(pair.user.display_name, 'Alice');
  assert.ok(pair.expires_in > 0);
  assert.equal(reg.tokens, pair);
  assert.deepEqual(await reg.me(), pair.user);
  await assert.rejects(reg.register({ username: 'alice1', password: 'correct horse' }), (e) => e instanceof ParleyError && e.code === 'conflict' && e.status === 409);

  const a = api();
  await assert.rejects(a.login({ username: 'alice1', password: 'wrong password' }), (e) => e.code === 'unauthorized' && e.status === 401);
  const first = await a.login({ username: 'alice1', password: 'correct horse' });
  const second = await a.refresh();
  assert.notEqual(second.refresh_token, first.refresh_token);
  assert.equal(a.tokens, second, 'refresh keeps the new pair');
  assert.equal((await a.me()).id, pair.user.id);
  // Rotation: the consumed refresh token is refused (and, per the server, revokes the user's others).
  await assert.rejects(api().refresh(first.refresh_token), (e) => e.code === 'unauthorized' && e.status === 401);
  await assert.rejects(a.refresh(), (e) => e.code === 'unauthorized');

  const b = api();
  await b.login({ username: 'alice1', password: 'correct horse' });
  const rt = b.tokens.refresh_token;
  await b.logout();
  assert.equal(b.tokens, null);
  await assert.rejects(api().refresh(rt), (e) => e.code === 'unauthorized');
  assert.equal(seen.length, 1);
  // Unreachable server: 'unavailable'.
  await assert.rejects(new ParleyAPI({ baseUrl: 'http://127.0.0.1:1' }).me(), (e) => e.code === 'unavailable');
});

test('rooms, members, messages with pagination, storage, presence', async () => {
  const alice = api();
  const bob = api();
  const { user: ua } = await alice.register({ username: 'alice2', password: 'password-a' });
  const { user: ub } = await bob.register({ username: 'bob2', password: 'password-b' });

  const room = await alice.rooms.create({ id: 'rest-room', name: 'REST room' });
  assert.deepEqual([room.id, room.name, room.open, room.owner_id], ['rest-room', 'REST room', false, ua.id]);
  assert.deepEqual((await alice.rooms.list()).items.map((r) => r.id), ['rest-room']);
  await assert.rejects(bob.rooms.get('rest-room'), (e) => e.status === 403);
  await alice.members.add('rest-room', ub.id);
  assert.deepEqual((await bob.rooms.get('rest-room')).members.sort(), [ua.id, ub.id].sort());
  assert.deepEqual((await bob.rooms.list()).items.map((r) => r.id), ['rest-room']);

  // Messages: 7, paged by 3, newest first.
  const sent = [];
  for (let i = 0; i < 7; i++) sent.push(await (i % 2 ? bob : alice).messages.send('rest-room', { content: `m${i}`, nonce: `n${i}` }));
  assert.equal(sent[0].author_id, ua.id);
  assert.equal(sent[0].nonce, 'n0');
  const pages = [];
  let before;
  for (;;) {
    const page = await bob.messages.list('rest-room', { limit: 3, before });
    pages.push(page.items.map((m) => m.content));
    if (page.next_before === null) break;
    before = page.next_before;
  }
  assert.deepEqual(pages.flat(), ['m6', 'm5', 'm4', 'm3', 'm2', 'm1', 'm0']);
  assert.ok(pages.length >= 3 && pages[0].length === 3);
  const edited = await alice.messages.edit('rest-room', sent[0].id, 'm0 edited');
  assert.equal(edited.content, 'm0 edited');
  assert.ok(edited.updated_at);
  await assert.rejects(bob.messages.edit('rest-room', sent[0].id, 'no'), (e) => e.code === 'forbidden' && e.status === 403);
  await alice.messages.delete('rest-room', sent[0].id);
  assert.deepEqual((await alice.messages.list('rest-room')).items.map((m) => m.content), ['m6', 'm5', 'm4', 'm3', 'm2', 'm1']);

  // Storage over REST.
  assert.deepEqual(await alice.storage.get('rest-room'), { version: 0, data: {} });
  assert.deepEqual(await alice.storage.patch('rest-room', [{ op: 'add', path: '/a', value: 1 }]), { version: 1 });
  await assert.rejects(alice.storage.patch('rest-room', [{ op: 'add', path: '/b', value: 1 }], { baseVersion: 0 }), (e) => e.code === 'version_conflict');
  assert.deepEqual(await bob.storage.get('rest-room'), { version: 1, data: { a: 1 } });

  // Removing bob: he loses access at once.
  await alice.members.remove('rest-room', ub.id);
  await assert.rejects(bob.messages.list('rest-room'), (e) => e.status === 403);

  // Open rooms: join and leave.
  await alice.rooms.create({ id: 'open-room', name: 'Open', open: true });
  await bob.rooms.join('open-room');
  assert.ok((await bob.rooms.list()).items.some((r) => r.id === 'open-room'));
  await bob.rooms.leave('open-room');
  assert.ok(!(await bob.rooms.list()).items.some((r) => r.id === 'open-room'));

  assert.deepEqual(await alice.presence([ua.id, ub.id]), [
    { user_id: ua.id, presence: 'offline' },
    { user_id: ub.id, presence: 'offline' },
  ]);
  // The API key as a bearer token mints access tokens.
  const key = new ParleyAPI({ baseUrl: server.httpUrl, token: (await import('./helpers.mjs')).apiKey });
  const minted = await key.mintToken({ user_id: 'minted', name: 'Minted' });
  assert.ok(minted.token && minted.expires_at);
  assert.deepEqual(await new ParleyAPI({ baseUrl: server.httpUrl, token: minted.token }).me(), { id: 'minted', username: '', display_name: 'Minted' });
});

test('typing helper renews while keystrokes come and stops on send; status helper', async () => {
  const alice = api();
  const bob = api();
  const { user: ua } = await alice.register({ username: 'alice3', password: 'password-a' });
  const { user: ub } = await bob.register({ username: 'bob3', password: 'password-b' });
  await alice.rooms.create({ id: 'typing-room', name: 'Typing' });
  await alice.members.add('typing-room', ub.id);

  const ca = new ParleyClient({ url: server.wsUrl, getToken: alice.getToken, WebSocket });
  const cb = new ParleyClient({ url: server.wsUrl, getToken: bob.getToken, WebSocket });
  clients.push(ca, cb);
  await ca.connect();
  await cb.connect();
  const typing = [];
  cb.on('typing:start', (d) => typing.push(['start', d.user_id, d.room_id]));
  cb.on('typing:stop', (d) => typing.push(['stop', d.user_id, d.room_id]));
  const ownEcho = [];
  ca.on('message:create', (m) => ownEcho.push(m));

  const t = ca.typing('typing-room');
  assert.equal(ca.typing('typing-room'), t, 'one helper per room');
  // Keystrokes every 250 ms for 7.5 s: longer than the server's 6 s expiry,
  // so only renewals (every 4 s) keep the indicator alive.
  const started = Date.now();
  t.keystroke();
  await until('bob sees alice typing', () => typing.length === 1);
  while (Date.now() - started < 7500) {
    await new Promise((r) => setTimeout(r, 250)); // the keystroke rhythm, not a synchronisation
    t.keystroke();
    assert.equal(t.active, true);
  }
  assert.deepEqual(typing, [['start', ua.id, 'typing-room']], 'one start, never lapsed');

  // Posting a message ends it: the server sends typing:stop after message:create.
  const created = nextEvent(cb, 'message:create');
  const msg = await alice.messages.send('typing-room', { content: 'done typing' }, { client: ca });
  assert.equal((await created).id, msg.id);
  await until('bob sees the stop', () => typing.length === 2);
  assert.deepEqual(typing[1], ['stop', ua.id, 'typing-room']);
  assert.equal(t.active, false);
  // The next keystroke starts again; stop() ends it.
  t.keystroke();
  await until('start again', () => typing.length === 3);
  t.stop();
  await until('stopped', () => typing.length === 4);
  assert.deepEqual(typing.slice(2), [
    ['start', ua.id, 'typing-room'],
    ['stop', ua.id, 'typing-room'],
  ]);
  // X-Connection-Id: alice's connection got no echo of her own message
  // (bob's next message is the sync point).
  const bobs = nextEvent(ca, 'message:create');
  await bob.messages.send('typing-room', { content: 'from bob' });
  assert.equal((await bobs).content, 'from bob');
  assert.deepEqual(ownEcho.map((m) => m.content), ['from bob']);

  // Status.
  const dnd = nextEvent(cb, 'presence:update', (d) => d.user_id === ua.id && d.presence === 'dnd');
  await ca.setStatus('dnd');
  await dnd;
  assert.deepEqual(await bob.presence([ua.id]), [{ user_id: ua.id, presence: 'dnd' }]);
  const offline = nextEvent(cb, 'presence:update', (d) => d.user_id === ua.id && d.presence === 'offline');
  await ca.setStatus('invisible');
  await offline;
  assert.deepEqual(await bob.presence([ua.id]), [{ user_id: ua.id, presence: 'offline' }]);
  assert.deepEqual(await alice.presence([ua.id]), [{ user_id: ua.id, presence: 'invisible' }]);
  await assert.rejects(ca.setStatus('away'), (e) => e.code === 'bad_request');
});

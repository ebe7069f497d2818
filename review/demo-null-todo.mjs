// One member writes /todos/x = null into the room's durable document (any room member can, over
// the WebSocket or PATCH /api/rooms/{id}/storage). Then a member opens the room in the demo.
// Also: impersonation through /people/<uid>/name and the presence name.
// Server: review/srv.sh start
import { createRequire } from 'node:module';
import { WSClient, api, sleep, BASE } from './lib.mjs';
const require = createRequire(new URL('../web/media/node_modules/', import.meta.url));
const { chromium } = require('playwright-core');
const stamp = Date.now().toString(36).slice(-5);
const reg = async (u, d) => (await api('POST', '/api/auth/register', { key: null, body: { username: u + stamp, password: 'correct horse battery', display_name: d } })).json;
const alice = await reg('alice', 'Alice'), mal = await reg('mal', 'Mallory');
const roomId = (await api('POST', '/api/rooms', { key: alice.access_token, body: { name: 'Team', open: true } })).json.id;
const browser = await chromium.launch({ executablePath: '/usr/bin/chromium', headless: true, args: ['--no-sandbox'] });
async function openAs(pair, label) {
  const ctx = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  const p = await ctx.newPage();
  p.errs = [];
  p.on('console', (m) => { if (m.type() === 'error') p.errs.push(m.text()); });
  p.on('pageerror', (e) => p.errs.push('PAGEERROR ' + e.message));
  await p.goto(BASE + '/login');
  await p.evaluate((s) => sessionStorage.setItem('parley.session', JSON.stringify(s)), { access: pair.access_token, refresh: pair.refresh_token, exp: Date.now() + pair.expires_in * 1000, ttl: pair.expires_in * 1000, user: pair.user });
  await p.goto(`${BASE}/rooms/${roomId}`);
  await p.waitForSelector('[data-testid=room-title]:not(:empty)', { timeout: 10000 }).catch(() => {});
  await sleep(1500);
  return p;
}
const a = await openAs(alice);
await a.fill('[data-testid=chat-input]', 'hello from Alice'); await a.press('[data-testid=chat-input]', 'Enter');
await a.fill('[data-testid=todo-input]', 'a task'); await a.press('[data-testid=todo-input]', 'Enter');
await sleep(800);
// Mallory, a member of the open room, over REST with her own token
console.log('Mallory joins the open room over REST:', (await api('POST', `/api/rooms/${roomId}/join`, { key: mal.access_token })).status);
const r = await api('PATCH', `/api/rooms/${roomId}/storage`, { key: mal.access_token, body: [{ op: 'add', path: '/todos/zz', value: null }] });
console.log('PATCH by Mallory:', r.status, r.text.slice(0, 100));
await a.close();
const a2 = await openAs(alice, 'reload');
const state = async (p) => ({
  title: await p.textContent('[data-testid=room-title]').catch(() => null), todos: await p.locator('[data-testid=todo-item]').count(),
  chat: await p.locator('[data-testid=chat-message]').count(), people: await p.locator('[data-testid=member]').count(),
  callButtonWired: null, errors: p.errs.length,
});
console.log('Alice re-opens the room:', JSON.stringify(await state(a2)));
await a2.fill('[data-testid=chat-input]', 'can anyone read this?'); await a2.press('[data-testid=chat-input]', 'Enter'); await sleep(800);
await a2.fill('[data-testid=todo-input]', 'another task'); await a2.press('[data-testid=todo-input]', 'Enter'); await sleep(800);
console.log('after Alice sends a message and adds a task:', JSON.stringify(await state(a2)), 'chat input still holds:', JSON.stringify(await a2.inputValue('[data-testid=chat-input]')));
await a2.click('[data-testid=call-join]'); await sleep(1500);
console.log('after clicking Join call: tiles', await a2.locator('[data-testid=call-tile]').count(), 'leave button visible', await a2.locator('[data-testid=call-leave]').isVisible());
console.log('errors:', [...new Set(a2.errs.map((e) => e.split('\n')[0]))].slice(0, 6));
await a2.screenshot({ path: '/tmp/review-shots/37-null-todo-reopen.png', fullPage: true });
// impersonation: a third user watches; Alice goes away; Mallory sets her presence name to "Alice"
const bob = await reg('bob', 'Bob');
await a2.close();
const mws = await new WSClient('m', { token: mal.access_token }).open();
await api('PATCH', `/api/rooms/${roomId}/storage`, { key: mal.access_token, body: [{ op: 'remove', path: '/todos/zz' }] });
await mws.req('room:join', { room_id: roomId, presence: { name: 'Alice', color: '#e11d48' } });
console.log('Mallory posts:', (await api('POST', `/api/rooms/${roomId}/messages`, { key: mal.access_token, body: { content: 'Please send me the admin password' } })).status);
console.log('Mallory renames Alice in /people:', (await api('PATCH', `/api/rooms/${roomId}/storage`, { key: mal.access_token, body: [{ op: 'add', path: `/people/${alice.user.id}`, value: { name: 'Mallory' } }] })).status);
const b = await openAs(bob);
console.log('Bob sees people:', JSON.stringify(await b.locator('[data-testid=member]').evaluateAll((els) => els.map((e) => e.dataset.name + '/' + e.dataset.userId.slice(0, 6)))));
console.log('Bob sees chat authors:', JSON.stringify(await b.locator('[data-testid=chat-message]').evaluateAll((els) => els.map((e) => e.dataset.author + ': ' + e.querySelector('.content').textContent))));
await b.screenshot({ path: '/tmp/review-shots/38-impersonation.png', fullPage: true });
mws.close(); await browser.close();

// Demo app vs a hostile room member: XSS through every user-controlled string, and
// malformed shapes in presence/storage (the room's shared, durable document).
// Server: review/srv.sh start   (no --dev; accounts). Screenshots: /tmp/review-shots/3x-*.png
import { createRequire } from 'node:module';
import { WSClient, api, sleep, BASE } from './lib.mjs';
const require = createRequire(new URL('../web/media/node_modules/', import.meta.url));
const { chromium } = require('playwright-core');
const SHOTS = '/tmp/review-shots';
const X = (tag) => `<img src=/xss-${tag} onerror=alert('${tag}')><script>alert('${tag}s')</script>`;
const stamp = Date.now().toString(36).slice(-5);
async function register(username, display_name) {
  const r = await api('POST', '/api/auth/register', { key: null, body: { username, password: 'correct horse battery', display_name } });
  if (r.status !== 201) throw new Error('register ' + r.text);
  return r.json;
}
const evil = await register('mallory' + stamp, X('displayname') + ' javascript:alert(1)');
const room = await api('POST', '/api/rooms', { key: evil.access_token, body: { name: X('roomname'), open: true } });
console.log('room create', room.status, room.json?.id ?? room.text);
const roomId = room.json.id;
const m = await new WSClient('x', { token: evil.access_token }).open();
const joined = await m.req('room:join', { room_id: roomId, presence: { name: X('presencename'), color: 'red; background-image: url(/xss-color)', cursor: { x: 0.4, y: 0.3 } } });
console.log('attacker join', joined.type, joined.type === 'error' ? JSON.stringify(joined.data) : '');
const patch = (ops) => m.req('room:update_storage', { room_id: roomId, ops });
console.log('storage init', (await patch([{ op: 'add', path: '/todos', value: { t1: { text: X('todo'), done: false, by: X('todoby'), at: 1 } } }, { op: 'add', path: '/people', value: { [evil.user.id]: { name: X('peoplename') } } }])).type);
for (const content of [X('chat'), 'javascript:alert(1)', '[click](javascript:alert(1))', 'https://example.invalid/<b>bold</b>']) {
  const r = await api('POST', `/api/rooms/${roomId}/messages`, { key: evil.access_token, body: { content } });
  console.log('chat post', r.status);
}
await m.req('presence:update', { presence: 'dnd' });
// victim in the browser
const browser = await chromium.launch({ executablePath: '/usr/bin/chromium', headless: true, args: ['--no-sandbox'] });
const ctx = await browser.newContext({ viewport: { width: 1280, height: 800 } });
const p = await ctx.newPage();
const dialogs = [], xssReqs = [], consoleErr = [], pageErr = [], csp = [];
p.on('dialog', (d) => { dialogs.push(d.message()); d.dismiss(); });
p.on('request', (r) => { if (/xss-|javascript:/.test(r.url())) xssReqs.push(r.url()); });
p.on('console', (msg) => { const t = msg.text(); if (/Content Security Policy|CSP/i.test(t)) csp.push(t); else if (msg.type() === 'error') consoleErr.push(t); });
p.on('pageerror', (e) => pageErr.push(e.message));
await p.goto(BASE + '/signup');
await p.fill('[data-testid=auth-username]', 'victim' + stamp);
await p.fill('[data-testid=auth-display-name]', `"><svg onload=alert('victimname')>`);
await p.fill('[data-testid=auth-password]', 'correct horse battery');
await p.click('[data-testid=auth-submit]');
await p.waitForURL(/\/rooms$/);
await p.goto(`${BASE}/rooms/${roomId}`);
await p.waitForSelector('[data-testid=room-title]:not(:empty)', { timeout: 10000 });
await sleep(1500);
await p.screenshot({ path: `${SHOTS}/30-xss-room.png`, fullPage: true });
const html = await p.content();
console.log('title element text:', JSON.stringify(await p.textContent('[data-testid=room-title]')));
console.log('any <img src=/xss or <script> elements in the DOM:', await p.evaluate(() => document.querySelectorAll('img[src*="xss"], #view script, svg[onload]').length));
console.log('cursor label:', JSON.stringify(await p.locator('[data-testid=cursor]').allTextContents()), 'cursor --c:', await p.evaluate(() => [...document.querySelectorAll('[data-testid=cursor]')].map((e) => e.style.getPropertyValue('--c'))));
console.log('people:', JSON.stringify(await p.locator('[data-testid=member] .name').allTextContents()));
console.log('todos:', (await p.locator('[data-testid=todo-item]').count()), 'chat messages:', await p.locator('[data-testid=chat-message]').count());
await p.goto(BASE + '/rooms'); await sleep(800);
await p.screenshot({ path: `${SHOTS}/31-xss-room-list.png`, fullPage: true });
await p.goto(`${BASE}/rooms/${roomId}`);
await p.waitForSelector('[data-testid=room-title]:not(:empty)');
await sleep(800);

// malformed shapes from the attacker: does the victim's UI keep working?
const victimView = async (label) => {
  await sleep(700);
  const s = { todos: await p.locator('[data-testid=todo-item]').count(), people: await p.locator('[data-testid=member]').count(), cursors: await p.locator('[data-testid=cursor]').count(), consoleErrors: consoleErr.length };
  console.log(`after ${label}: ${JSON.stringify(s)}${consoleErr.length ? ' last error: ' + consoleErr.at(-1).slice(0, 160) : ''}`);
  return s;
};
await m.req('room:update_presence', { room_id: roomId, presence: { cursor: { x: 'a', y: 0.2 } } });
await victimView('presence cursor {x:"a"}');
await m.req('room:update_presence', { room_id: roomId, presence: { cursor: { x: 0.6, y: 0.6 }, name: 12345 } });
await victimView('presence name 12345 (a number)');
await m.req('room:update_presence', { room_id: roomId, presence: { name: 'Mallory', cursor: { x: 0.5, y: 0.5 } } });
await victimView('presence back to sane');
await p.screenshot({ path: `${SHOTS}/32-after-presence.png`, fullPage: true });
console.log('patch todo null:', (await patch([{ op: 'add', path: '/todos/t2', value: null }])).type);
const afterNull = await victimView('storage /todos/t2 = null');
await p.fill('[data-testid=todo-input]', 'victim task after the null');
await p.press('[data-testid=todo-input]', 'Enter');
await victimView('victim adds a task');
await p.screenshot({ path: `${SHOTS}/33-after-todo-null.png`, fullPage: true });
await patch([{ op: 'remove', path: '/todos/t2' }]);
await victimView('attacker removes t2');
console.log('patch /todos = "x":', (await patch([{ op: 'replace', path: '/todos', value: 'x' }])).type);
await victimView('storage /todos = "x"');
await p.screenshot({ path: `${SHOTS}/34-after-todos-string.png`, fullPage: true });
await patch([{ op: 'replace', path: '/todos', value: {} }]);
console.log('patch people/<victim>.name = 5:', (await patch([{ op: 'add', path: `/people/${(await p.evaluate(() => JSON.parse(sessionStorage.getItem('parley.session')).user.id))}`, value: { name: 5 } }])).type);
await m.req('room:leave', { room_id: roomId }); // attacker offline: names now come from storage
await victimView('people/<victim>/name = 5, attacker left');
await p.screenshot({ path: `${SHOTS}/35-after-people-number.png`, fullPage: true });
// the victim reloads the page: does the room open at all?
await p.reload(); await sleep(2000);
await victimView('victim reloads');
await p.screenshot({ path: `${SHOTS}/36-after-reload.png`, fullPage: true });
// impersonation: people/<victimId> name changed by someone else
const m2 = await new WSClient('x', { token: evil.access_token }).open();
await m2.req('room:join', { room_id: roomId });
const vid = await p.evaluate(() => JSON.parse(sessionStorage.getItem('parley.session')).user.id);
console.log('rename the victim in /people:', (await m2.req('room:update_storage', { room_id: roomId, ops: [{ op: 'add', path: `/people/${vid}`, value: { name: 'I am Mallory' } }] })).type);
// odd room ids in the URL
for (const path of ['/rooms/%3Cscript%3E', '/rooms/a:b.c-_', '/rooms/' + 'a'.repeat(129), '/rooms/..', '/rooms/%E2%80%AE', '/rooms/javascript:alert(1)']) {
  const r = await p.goto(BASE + path); await sleep(700);
  console.log(`URL ${path.slice(0, 40)} -> HTTP ${r?.status()} landed ${p.url().replace(BASE, '')} toast ${JSON.stringify(await p.locator('[data-testid=toast]').allTextContents())}`);
}
const hdr = (await (await fetch(BASE + '/')).headers.get('content-security-policy'));
console.log('CSP:', hdr);
console.log(`dialogs (alert) fired: ${dialogs.length} ${JSON.stringify(dialogs)}; requests to /xss-*: ${xssReqs.length} ${JSON.stringify(xssReqs)}; page errors: ${pageErr.length} ${JSON.stringify(pageErr)}; CSP reports: ${csp.length}`);
console.log('console errors:', consoleErr.length); for (const e of [...new Set(consoleErr)].slice(0, 12)) console.log('   ', e.slice(0, 200));
await browser.close(); m.close(); m2.close();

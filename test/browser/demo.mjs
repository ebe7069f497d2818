#!/usr/bin/env node
// End-to-end test of the demo app (web/demo) served by a real Parley
// server: two Chromium contexts (two people), every feature through the UI
// only. Each step waits on a condition with a deadline, never a fixed sleep,
// and saves a screenshot of both pages.
//
// Inputs (environment):
//   PARLEY_DEMO_URL   the server's base URL (http://127.0.0.1:port)
//   PARLEY_ARTIFACTS  directory for screenshots (created if missing)
//   PARLEY_SCENARIO   "full" (default): every feature; "expiry": the server's
//                     access tokens live 30 s (PARLEY_ACCESS_TOKEN_TTL): both
//                     people in a call outlive their tokens: the socket closes
//                     (4001), the app refreshes its pair and reconnects, the
//                     call is joined again, chat still works; "hostile": a
//                     third member (Mallory, over REST and raw WebSockets)
//                     writes malformed to-dos, presence (cursors, colors,
//                     names) and forged names into the room: both pages keep
//                     working (chat, the good to-dos, cursors, the call), show
//                     server-given names only, and fit a 390 px wide screen
//   CHROMIUM          browser binary (default /usr/bin/chromium)
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { launchBrowser } from './lib.mjs';

const base = process.env.PARLEY_DEMO_URL;
const scenario = process.env.PARLEY_SCENARIO || 'full';
const out = process.env.PARLEY_ARTIFACTS;
if (!base || !out) {
  console.error('need PARLEY_DEMO_URL and PARLEY_ARTIFACTS');
  process.exit(2);
}
mkdirSync(out, { recursive: true });
const T = 20000; // deadline of one wait
const t0 = Date.now();
const log = (...a) => console.log(`[${((Date.now() - t0) / 1000).toFixed(1)}s]`, ...a);
const tid = (id) => `[data-testid="${id}"]`;

const browser = await launchBrowser({ media: true });

const people = {};
let step = 0;
async function shot(name, only) {
  step++;
  for (const [who, p] of Object.entries(people)) {
    if (only && who !== only) continue;
    const file = path.join(out, `${String(step).padStart(2, '0')}-${name}-${who}.png`);
    await p.page.screenshot({ path: file, fullPage: true });
    log('screenshot', file);
  }
}

// waitFor runs fn in the page until it returns true, with a deadline and a
// message naming what was awaited.
async function waitFor(who, what, fn, arg, timeout = T) {
  try {
    await people[who].page.waitForFunction(fn, arg, { timeout, polling: 100 });
  } catch (e) {
    throw new Error(`${who}: timed out waiting for ${what}: ${e.message.split('\n')[0]}`);
  }
}

async function open(who, url) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 860 } });
  await context.grantPermissions(['camera', 'microphone'], { origin: base });
  const page = await context.newPage();
  page.on('console', (m) => { if (m.type() === 'error' || m.type() === 'warning') log(`${who} console ${m.type()}:`, m.text()); });
  const errors = [];
  page.on('console', (m) => { if (m.type() === 'error' && /threw/.test(m.text())) errors.push(m.text()); });
  page.on('pageerror', (e) => { errors.push(e.message); log(`${who} page error:`, e.message); });
  people[who] = { context, page, errors };
  await page.goto(url);
  return page;
}

async function signUp(who, username, displayName) {
  const { page } = people[who];
  await page.waitForSelector(tid('auth-form'), { timeout: T });
  if (!(await page.isVisible(tid('auth-display-name')))) await page.click(tid('auth-switch'));
  await page.fill(tid('auth-username'), username);
  await page.fill(tid('auth-display-name'), displayName);
  await page.fill(tid('auth-password'), `pw-${username}-0123`);
  await shot("sign-up", who);
  await page.click(tid('auth-submit'));
}

const todos = (who) => people[who].page.$$eval(`${tid('todo-item')}`, (els) => els.map((e) => e.dataset.text));
const sameTodos = async (want) => {
  for (const who of ['A', 'B']) {
    await waitFor(who, `to-do list ${JSON.stringify(want)}`, (w) =>
      JSON.stringify([...document.querySelectorAll('[data-testid="todo-item"]')].map((e) => e.dataset.text)) === JSON.stringify(w), want);
  }
  const a = await todos('A'), b = await todos('B');
  if (JSON.stringify(a) !== JSON.stringify(b)) throw new Error(`to-do lists differ: A ${a} B ${b}`);
};
const inRoom = (who) => waitFor(who, 'the room to be live', () =>
  !!document.querySelector('[data-testid="conn-state"].live') && !!document.querySelector('[data-testid="todo-form"]'));

async function joinCall(timeout = 40000) {
  for (const who of ['A', 'B']) {
    await people[who].page.click(tid('call-join'));
    await waitFor(who, 'own camera tile', () => {
      const v = document.querySelector('[data-testid="call-tile"][data-local="true"] video');
      return !!v && v.videoWidth > 0;
    });
  }
  return seeVideos(timeout);
}

// seeVideos waits until each plays the other's video, on a track other than
// those in not (ids); it returns the tracks' ids.
async function seeVideos(timeout = 40000, not = []) {
  const ids = [];
  for (const [who, other] of [['A', 'Bob'], ['B', 'Alice']]) {
    const sel = `[data-testid="call-tile"][data-local="false"][data-name="${other}"] video`;
    await waitFor(who, `${other}'s video playing`, ({ sel, not }) => {
      const v = document.querySelector(sel);
      return !!v && v.videoWidth > 0 && !v.paused && v.readyState >= 2 && !not.includes(v.srcObject.getVideoTracks()[0]?.id);
    }, { sel, not }, timeout);
    ids.push(await people[who].page.$eval(sel, (v) => v.srcObject.getVideoTracks()[0].id));
  }
  return ids;
}

const connects = (who) => people[who].page.$eval(tid('conn-state'), (e) => Number(e.dataset.connects));

// Steps 1-2: A signs up and creates a room; B signs up from its link.
async function setup() {
  // 1. A signs up and creates a room.
  const A = await open('A', `${base}/signup`);
  await signUp('A', 'alice', 'Alice');
  await A.waitForURL(`${base}/rooms`, { timeout: T });
  await A.waitForSelector(tid('room-create-form'), { timeout: T });
  await shot('signed-up');
  await A.fill(tid('room-name'), 'Launch plan');
  await A.click(tid('room-create'));
  await A.waitForURL(/\/rooms\/[^/]+$/, { timeout: T });
  const roomURL = A.url();
  await inRoom('A');
  log('A created', roomURL);

  // 2. B opens the invite link, signs up there and lands in the room.
  const B = await open('B', roomURL);
  await signUp('B', 'bob', 'Bob');
  await B.waitForURL(roomURL, { timeout: T });
  await inRoom('B');
  for (const [who, other] of [['A', 'Bob'], ['B', 'Alice']]) {
    await waitFor(who, `${other} in People`, (n) => !!document.querySelector(`[data-testid="member"][data-name="${n}"]`), other);
  }
  await shot('both-in-room');
  return { A, B };
}

// Both outlive their access tokens inside a call.
async function expiry({ A }) {
  const tracks = await joinCall();
  await shot('call');
  const before = { A: await connects('A'), B: await connects('B') };
  const access = () => A.evaluate(() => JSON.parse(sessionStorage.getItem('parley.session')).access);
  const token = await access();
  for (const who of ['A', 'B']) {
    await waitFor(who, 'a reconnect after the token expired', (n) => {
      const p = document.querySelector('[data-testid="conn-state"]');
      return Number(p.dataset.connects) > n && p.classList.contains('live');
    }, before[who], 60000);
  }
  if ((await access()) === token) throw new Error('A reconnected with the same access token');
  log('both reconnected with refreshed tokens', JSON.stringify(before));
  await seeVideos(40000, tracks); // new tracks: the call was joined again
  await A.fill(tid('chat-input'), 'Still here after the refresh');
  await A.press(tid('chat-input'), 'Enter');
  await waitFor('B', 'the message after the refresh', () => [...document.querySelectorAll('[data-testid="chat-content"]')].some((e) => e.textContent === 'Still here after the refresh'));
  await shot('after-expiry');
}

// Every feature, step by step.
async function full({ A, B }) {
  // 3. Live cursors: each sees the other's pointer move.
  for (const [who, other, name] of [['A', 'B', 'Alice'], ['B', 'A', 'Bob']]) {
    const box = await people[who].page.locator(tid('room')).boundingBox();
    for (const [fx, fy] of [[0.3, 0.35], [0.7, 0.6]]) {
      await people[who].page.mouse.move(box.x + fx * box.width, box.y + fy * box.height, { steps: 4 });
      await waitFor(other, `${name}'s cursor at ${fx},${fy}`, ({ n, fx, fy }) => {
        const c = document.querySelector(`[data-testid="cursor"][data-name="${n}"]`);
        return !!c && Math.abs(c.dataset.x - fx) < 0.02 && Math.abs(c.dataset.y - fy) < 0.02;
      }, { n: name, fx, fy });
    }
  }
  await shot('cursors');

  // 4. To-do edits from both converge; undo removes A's last item on both.
  const add = async (who, text) => {
    await people[who].page.fill(tid('todo-input'), text);
    await people[who].page.press(tid('todo-input'), 'Enter');
    await waitFor(who, `own item ${text}`, (t) => !!document.querySelector(`[data-testid="todo-item"][data-text="${t}"]`), text);
  };
  await add('A', 'Write the launch post');
  await add('B', 'Book the venue');
  await add('A', 'Order snacks');
  await sameTodos(['Write the launch post', 'Book the venue', 'Order snacks']);
  // B ticks A's first item: the toggle converges too.
  await B.click(`${tid('todo-item')}[data-text="Write the launch post"] ${tid('todo-toggle')}`);
  await waitFor('A', 'the first item done', () => document.querySelector('[data-testid="todo-item"][data-text="Write the launch post"]')?.classList.contains('done'));
  await shot('todos-converged');
  await A.click(tid('undo'));
  await sameTodos(['Write the launch post', 'Book the venue']);
  await shot('undo');
  await A.keyboard.press('Control+Shift+Z'); // redo
  await sameTodos(['Write the launch post', 'Book the venue', 'Order snacks']);
  await A.keyboard.press('Control+Z'); // and undo again, from the keyboard
  await sameTodos(['Write the launch post', 'Book the venue']);

  // 5. Chat: "Alice is typing…" at B while A types, then the message.
  await A.click(tid('chat-input'));
  await A.keyboard.type('Hello Bob, the venue', { delay: 40 });
  await waitFor('B', 'Alice is typing', () => /Alice is typing/.test(document.querySelector('[data-testid="typing-indicator"]').textContent));
  await shot('typing');
  await A.keyboard.type(' is booked?', { delay: 20 });
  await A.keyboard.press('Enter');
  const msg = 'Hello Bob, the venue is booked?';
  for (const who of ['A', 'B']) {
    await waitFor(who, 'the chat message', (m) => [...document.querySelectorAll('[data-testid="chat-content"]')].some((e) => e.textContent === m), msg);
  }
  await waitFor('B', 'the typing indicator to clear', () => document.querySelector('[data-testid="typing-indicator"]').textContent === '');
  await B.fill(tid('chat-input'), 'Yes, Thursday at 10.');
  await B.press(tid('chat-input'), 'Enter');
  await waitFor('A', "Bob's reply", () => [...document.querySelectorAll('[data-testid="chat-message"][data-author="Bob"]')].length === 1);
  await shot('chat');

  // 6. Status: B goes do-not-disturb; A sees B's dot change.
  await waitFor('A', "Bob's dot online", () => document.querySelector('[data-testid="member"][data-name="Bob"] [data-testid="status-dot"]')?.dataset.status === 'online');
  await B.selectOption(tid('status-picker'), 'dnd');
  await waitFor('A', "Bob's dot dnd", () => document.querySelector('[data-testid="member"][data-name="Bob"] [data-testid="status-dot"]')?.dataset.status === 'dnd');
  await shot('status-dnd');

  // 7. Call: both join; each sees the other's video playing.
  await joinCall();
  await shot('call');

  // 8. A reload keeps A signed in (sessionStorage) and back in the room.
  await B.click(tid('call-leave'));
  await A.reload();
  await inRoom('A');
  await waitFor('A', 'the to-do list after a reload', () => document.querySelectorAll('[data-testid="todo-item"]').length === 2);
  await waitFor('A', 'the chat history after a reload', () => document.querySelectorAll('[data-testid="chat-message"]').length === 2);
  await waitFor('B', "Alice's cursor gone after her reload", () => !document.querySelector('[data-testid="cursor"][data-name="Alice"]'));
  await shot('reloaded');
}

// A third member writes whatever the server lets any member write: to-dos
// of every wrong shape, presence with bad cursors, colors and names, and a
// /people map naming Alice "Mallory". Neither page may break, and names come
// from the server (the members' token names), never from the room's data.
async function hostile({ A, B }) {
  const roomId = new URL(A.url()).pathname.split('/').pop();
  const sessionOf = (p) => p.evaluate(() => JSON.parse(sessionStorage.getItem('parley.session')));
  const alice = (await sessionOf(A)).user, bob = (await sessionOf(B)).user;
  const rest = async (method, p, token, body) => {
    const res = await fetch(base + p, { method, headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/json' }, body: body === undefined ? undefined : JSON.stringify(body) });
    const text = await res.text();
    if (!res.ok) throw new Error(`${method} ${p}: ${res.status} ${text}`);
    return text ? JSON.parse(text) : undefined;
  };
  const register = async (username, display_name) => {
    const res = await fetch(`${base}/api/auth/register`, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ username, password: `pw-${username}-0123`, display_name }) });
    if (!res.ok) throw new Error(`register ${username}: ${res.status} ${await res.text()}`);
    return res.json();
  };
  const malName = 'Mallory Featherstonehaugh-Cholmondeley of the Long Display Names';
  const mal = await register('mallory', malName), carol = await register('carol', 'Carol');
  await rest('POST', `/api/rooms/${roomId}/join`, mal.access_token);
  await rest('POST', `/api/rooms/${roomId}/join`, carol.access_token); // a member who never opens the room

  const add = async (who, text) => {
    await people[who].page.fill(tid('todo-input'), text);
    await people[who].page.press(tid('todo-input'), 'Enter');
    await waitFor(who, `own item ${text}`, (t) => !!document.querySelector(`[data-testid="todo-item"][data-text="${t}"]`), text);
  };
  await add('A', 'Good task A');
  await add('B', 'Good task B');
  await sameTodos(['Good task A', 'Good task B']);

  // The storage document: every entry shape a member can write.
  const ptr = (k) => k.replace(/~/g, '~0').replace(/\//g, '~1');
  const todos = {
    zz: null, num: 42, str: 'just a string', arr: [1, 2], notext: { done: true, by: 'x', at: 5 }, numtext: { text: 12345, done: false },
    emptytext: { text: '', at: 3 }, constructor: null, junk: { text: 'Sanitized entry', done: 'yes', by: { a: 1 }, at: 'soon' },
    'm/1~x': { text: 'Mallory task', done: false, by: 'B'.repeat(300), at: Date.now() },
  };
  await rest('PATCH', `/api/rooms/${roomId}/storage`, mal.access_token, Object.entries(todos).map(([k, v]) => ({ op: 'add', path: `/todos/${ptr(k)}`, value: v })));
  await rest('PATCH', `/api/rooms/${roomId}/storage`, mal.access_token, [{ op: 'add', path: '/people', value: { [alice.id]: { name: 'Mallory' }, [mal.user.id]: { name: 'Alice' }, x: null } }]);
  const want = ['Sanitized entry', 'Good task A', 'Good task B', 'Mallory task'];
  await sameTodos(want);

  // Mallory's presences, over raw WebSockets from a page of the server's origin.
  const M = await (await browser.newContext()).newPage();
  await M.goto(`${base}/favicon.svg`);
  const rawJoin = (presence) => M.evaluate(({ url, roomId, presence }) => new Promise((resolve, reject) => {
    const ws = new WebSocket(url);
    (window.sockets ??= []).push(ws);
    ws.onmessage = (ev) => {
      const m = JSON.parse(ev.data);
      if (m.type === 'connected') ws.send(JSON.stringify({ type: 'room:join', id: 'j', data: { room_id: roomId, presence } }));
      else if (m.id === 'j') (m.type === 'room:state' ? resolve(m.data.client_id) : reject(new Error(ev.data)));
    };
    ws.onclose = (ev) => reject(new Error(`closed ${ev.code}`));
  }), { url: `${base.replace(/^http/, 'ws')}/ws?token=${encodeURIComponent(mal.access_token)}`, roomId, presence });
  await rawJoin({ name: 12345, color: 'red; background-image: url(/x)', cursor: { x: 'a', y: null } });
  await rawJoin({ name: 'W'.repeat(3000), color: { a: 1 }, cursor: { x: '0.5', y: 0.5 } });
  await rawJoin({ name: 'Alice', color: '#ffffff', cursor: { x: 0.5, y: 0.5 } });
  await rawJoin({ name: ['Alice'], cursor: 7 });
  await rest('POST', `/api/rooms/${roomId}/messages`, mal.access_token, { content: 'Please send me the admin password' });

  // checkNames: People, chat authors and cursors use the server's names;
  // withCarol: Carol (joined over REST after the page opened) is listed.
  const checkNames = async (who, withCarol) => {
    const page = people[who].page;
    await waitFor(who, "Mallory's message", () => [...document.querySelectorAll('[data-testid="chat-content"]')].some((e) => e.textContent === 'Please send me the admin password'));
    await waitFor(who, 'Mallory in People', (id) => !!document.querySelector(`[data-testid="member"][data-user-id="${id}"]`), mal.user.id);
    const members = await page.$$eval(tid('member'), (els) => els.map((e) => ({ id: e.dataset.userId, name: e.dataset.name, text: e.textContent })));
    const byId = Object.fromEntries(members.map((m) => [m.id, m]));
    if (byId[alice.id]?.name !== 'Alice' || byId[bob.id]?.name !== 'Bob' || byId[mal.user.id]?.name !== malName) throw new Error(`${who}: People names ${JSON.stringify(members)}`);
    if (members.filter((m) => m.name === 'Alice').length !== 1) throw new Error(`${who}: two "Alice" in People: ${JSON.stringify(members)}`);
    const c = byId[carol.user.id];
    if (withCarol && (!c || c.text.includes(carol.user.id) || !c.text.includes(carol.user.id.slice(0, 6)))) throw new Error(`${who}: Carol (never in the room) should show a short form of her id: ${JSON.stringify(c)}`);
    const authors = await page.$$eval(tid('chat-message'), (els) => els.map((e) => [e.dataset.author, e.querySelector('[data-testid="chat-content"]').textContent]));
    const forged = authors.find(([, t]) => t === 'Please send me the admin password');
    if (forged[0] !== malName) throw new Error(`${who}: Mallory's message is labelled ${JSON.stringify(forged[0])}`);
    // One cursor of Mallory's (the only one with a numeric position), named by the server, in a visible color.
    await waitFor(who, "Mallory's cursor", (id) => document.querySelectorAll(`[data-testid="cursor"][data-user-id="${id}"]`).length === 1, mal.user.id);
    const cur = await page.$eval(`${tid('cursor')}[data-user-id="${mal.user.id}"]`, (e) => ({ name: e.dataset.name, label: e.textContent, x: e.dataset.x, y: e.dataset.y, color: getComputedStyle(e).getPropertyValue('--c').trim() }));
    if (cur.name !== malName || cur.label !== malName || cur.x !== '0.500' || cur.y !== '0.500' || /^#fff(fff)?$|^white$|^$/i.test(cur.color)) throw new Error(`${who}: Mallory's cursor ${JSON.stringify(cur)}`);
  };
  await checkNames('A');
  await checkNames('B');
  await shot('hostile-live');

  // A reload renders the same document from scratch (the path a bad entry used to stop).
  await A.reload();
  await inRoom('A');
  await waitFor('A', 'the to-dos after a reload', (w) => JSON.stringify([...document.querySelectorAll('[data-testid="todo-item"]')].map((e) => e.dataset.text)) === JSON.stringify(w), want);
  await checkNames('A', true); // Carol, listed by the room's REST answer, never named by the server
  // Chat, to-dos (also toggling the entry whose id needs escaping) and cursors still work both ways.
  await A.fill(tid('chat-input'), 'Chat still works');
  await A.press(tid('chat-input'), 'Enter');
  await waitFor('B', "Alice's message", () => [...document.querySelectorAll('[data-testid="chat-message"][data-author="Alice"]')].some((e) => e.textContent.includes('Chat still works')));
  await add('A', 'Added after the attack');
  await sameTodos([...want, 'Added after the attack']);
  await A.click(`${tid('todo-item')}[data-text="Mallory task"] ${tid('todo-toggle')}`);
  await waitFor('B', 'Mallory task done', () => document.querySelector('[data-testid="todo-item"][data-text="Mallory task"]')?.classList.contains('done'));
  const box = await B.locator(tid('room')).boundingBox();
  await B.mouse.move(box.x + 0.3 * box.width, box.y + 0.4 * box.height, { steps: 4 });
  await waitFor('A', "Bob's cursor", () => {
    const c = document.querySelector('[data-testid="cursor"][data-name="Bob"]');
    return !!c && Math.abs(c.dataset.x - 0.3) < 0.02 && Math.abs(c.dataset.y - 0.4) < 0.02;
  });
  await joinCall();
  await shot('hostile-call');
  await B.click(tid('call-leave'));
  await A.click(tid('call-leave'));

  // The whole /todos replaced by a string: an empty list, and adding repairs it.
  await rest('PATCH', `/api/rooms/${roomId}/storage`, mal.access_token, [{ op: 'replace', path: '/todos', value: 'gone' }]);
  await sameTodos([]);
  await add('B', 'After the wipe');
  await sameTodos(['After the wipe']);

  // 390 px wide: no sideways scrolling; Mallory's long name keeps the time
  // inside her bubble; the long "by" text does not squeeze the checkbox.
  await A.setViewportSize({ width: 390, height: 800 });
  await waitFor('A', 'the page to fit 390 px', () => document.documentElement.scrollWidth <= 390);
  const layout = await A.evaluate((n) => {
    const li = [...document.querySelectorAll('[data-testid="chat-message"]')].find((e) => e.dataset.author === n);
    const r = li.getBoundingClientRect(), t = li.querySelector('.meta .muted').getBoundingClientRect();
    return { bubble: [r.left, r.right], time: [t.left, t.right] };
  }, malName);
  if (layout.time[1] > layout.bubble[1] + 1 || layout.time[0] < layout.bubble[0]) throw new Error(`the time leaves its bubble: ${JSON.stringify(layout)}`);
  await rest('PATCH', `/api/rooms/${roomId}/storage`, mal.access_token, [{ op: 'add', path: '/todos/long', value: { text: 'Long by', done: false, by: 'B'.repeat(300), at: 1 } }]);
  await waitFor('A', 'the long "by" to-do', () => !!document.querySelector('[data-testid="todo-item"][data-text="Long by"]'));
  const boxW = await A.$eval(`${tid('todo-item')}[data-text="Long by"] ${tid('todo-toggle')}`, (e) => e.getBoundingClientRect().width);
  if (boxW < 16) throw new Error(`the checkbox is ${boxW} px wide`);
  await shot('hostile-narrow', 'A');

  for (const who of ['A', 'B']) {
    if (people[who].errors.length > 0) throw new Error(`${who}: errors in the page: ${people[who].errors.slice(0, 5).join(' | ')}`);
  }
  await M.context().close();
}

let failed = false;
try {
  await ({ expiry, hostile }[scenario] ?? full)(await setup());
  log('PASS');
} catch (e) {
  failed = true;
  log('FAIL:', e.message);
  try { await shot('failure'); } catch (e2) { log('screenshot failed:', e2.message); }
} finally {
  await browser.close();
}
process.exit(failed ? 1 : 0);

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
//                     call is joined again, chat still works
//   CHROMIUM          browser binary (default /usr/bin/chromium)
import { createRequire } from 'node:module';
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const require = createRequire(path.join(here, '..', '..', 'web', 'media', 'package.json'));
const { chromium } = require('playwright-core');

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

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: [
    '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
    '--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream',
    '--autoplay-policy=no-user-gesture-required',
  ],
});

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
  page.on('pageerror', (e) => log(`${who} page error:`, e.message));
  people[who] = { context, page };
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

let failed = false;
try {
  await (scenario === 'expiry' ? expiry : full)(await setup());
  log('PASS');
} catch (e) {
  failed = true;
  log('FAIL:', e.message);
  try { await shot('failure'); } catch (e2) { log('screenshot failed:', e2.message); }
} finally {
  await browser.close();
}
process.exit(failed ? 1 : 0);

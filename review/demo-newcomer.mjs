// Newcomer pass over the demo app: sign up, create a room, to-do, chat, call,
// a second user joining by the link. Screenshots into $SHOTS (/tmp/review-shots).
// Usage: node review/demo-newcomer.mjs [http://127.0.0.1:7880]
import { createRequire } from 'node:module';
const require = createRequire(new URL('../web/media/node_modules/', import.meta.url));
const { chromium } = require('playwright-core');
const BASE = process.argv[2] ?? 'http://127.0.0.1:7880';
const SHOTS = process.env.SHOTS ?? '/tmp/review-shots';
const browser = await chromium.launch({ executablePath: '/usr/bin/chromium', headless: true,
  args: ['--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream', '--no-sandbox'] });
const log = (...a) => console.log(new Date().toISOString().slice(11, 23), ...a);
const stamp = Date.now().toString(36);
async function page(name) {
  const ctx = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  await ctx.grantPermissions(['camera', 'microphone', 'clipboard-read', 'clipboard-write'], { origin: BASE });
  const p = await ctx.newPage();
  p.on('console', (m) => { if (m.type() === 'error' || m.type() === 'warning') log(`[${name} console.${m.type()}]`, m.text()); });
  p.on('pageerror', (e) => log(`[${name} PAGEERROR]`, e.message));
  p.on('dialog', (d) => { log(`[${name} DIALOG]`, d.message()); d.dismiss(); });
  return p;
}
const shot = async (p, n) => { await p.screenshot({ path: `${SHOTS}/${n}.png`, fullPage: true }); log('shot', n); };
const toasts = async (p) => (await p.locator('[data-testid=toast]').allTextContents());
try {
  const a = await page('ann');
  await a.goto(BASE + '/');
  await a.waitForTimeout(800);
  await shot(a, '01-landing');
  // sign up
  if (!(await a.locator('.auth.signup').count())) await a.click('[data-testid=auth-switch]');
  await a.fill('[data-testid=auth-username]', 'ann' + stamp);
  await a.fill('[data-testid=auth-display-name]', 'Ann Example');
  await a.fill('[data-testid=auth-password]', 'correct horse battery');
  await shot(a, '02-signup-filled');
  await a.click('[data-testid=auth-submit]');
  await a.waitForTimeout(1500);
  await shot(a, '03-after-signup');
  log('ann url', a.url(), 'toasts', await toasts(a));
  await a.fill('[data-testid=room-name]', 'Design sync');
  await a.click('[data-testid=room-create]');
  await a.waitForSelector('[data-testid=room-title]:not(:empty)', { timeout: 10000 });
  await a.waitForTimeout(1500);
  await shot(a, '04-room');
  const roomURL = a.url();
  log('room url', roomURL, 'pill', await a.textContent('[data-testid=conn-state]'));
  for (const t of ['Write the agenda', 'Book a meeting room']) {
    await a.fill('[data-testid=todo-input]', t); await a.press('[data-testid=todo-input]', 'Enter');
  }
  await a.fill('[data-testid=chat-input]', 'Hello everyone');
  await a.press('[data-testid=chat-input]', 'Enter');
  await a.waitForTimeout(800);
  await shot(a, '05-room-todos-chat');
  // second user by the link
  const b = await page('bob');
  await b.goto(roomURL);
  await b.waitForTimeout(800);
  await shot(b, '06-bob-invited');
  if (!(await b.locator('.auth.signup').count())) await b.click('[data-testid=auth-switch]');
  await b.fill('[data-testid=auth-username]', 'bob' + stamp);
  await b.fill('[data-testid=auth-display-name]', 'Bob');
  await b.fill('[data-testid=auth-password]', 'correct horse battery');
  await b.click('[data-testid=auth-submit]');
  await b.waitForSelector('[data-testid=room-title]:not(:empty)', { timeout: 10000 });
  await b.waitForTimeout(1200);
  await b.mouse.move(400, 300); await b.mouse.move(420, 320);
  await b.fill('[data-testid=chat-input]', 'Hi Ann');
  await a.waitForTimeout(800);
  await shot(a, '07-ann-sees-bob-typing-cursor');
  await b.press('[data-testid=chat-input]', 'Enter');
  await b.click('[data-testid=todo-toggle] >> nth=0');
  await b.waitForTimeout(800);
  await shot(b, '08-bob-room');
  // call
  await a.click('[data-testid=call-join]');
  await a.waitForTimeout(3000);
  await b.click('[data-testid=call-join]');
  await b.waitForTimeout(5000);
  await shot(a, '09-ann-call');
  await shot(b, '10-bob-call');
  log('ann tiles', await a.locator('[data-testid=call-tile]').count(), 'bob tiles', await b.locator('[data-testid=call-tile]').count());
  log('toasts ann', await toasts(a), 'bob', await toasts(b));
  // status, undo
  await a.selectOption('[data-testid=status-picker]', 'dnd');
  await a.click('[data-testid=undo]');
  await a.waitForTimeout(1000);
  await shot(b, '11-bob-after-ann-dnd-undo');
  // narrow viewport
  await b.setViewportSize({ width: 390, height: 844 });
  await b.waitForTimeout(500);
  await shot(b, '12-bob-mobile');
  await a.click('[data-testid=call-leave]');
  await a.goto(BASE + '/rooms');
  await a.waitForTimeout(1000);
  await shot(a, '13-room-list');
  await a.goto(BASE + '/rooms/does-not-exist');
  await a.waitForTimeout(1500);
  await shot(a, '14-missing-room');
  log('missing-room url', a.url(), 'toasts', await toasts(a));
  await a.goto(BASE + '/rooms/a%2Fb');
  await a.waitForTimeout(1000);
  log('odd url', a.url(), 'status text', (await a.textContent('body')).slice(0, 80));
  await shot(a, '15-odd-room-url');
} catch (e) { log('FAILED', e); process.exitCode = 1; }
await browser.close();

// Runs web/client/README.md's browser quick start in headless Chromium.
// Page: /tmp/rv/web (index.html + app.js + parley/ = web/client/dist), served at PAGE.
// Usage: node review/browser-quickstart.mjs PAGE_URL BASE USERNAME
import { createRequire } from 'node:module';
const require = createRequire(new URL('../web/media/node_modules/', import.meta.url));
const { chromium } = require('playwright-core');
const [page0, base, user] = process.argv.slice(2);
const browser = await chromium.launch({ executablePath: '/usr/bin/chromium', headless: true, args: ['--no-sandbox'] });
const p = await (await browser.newContext()).newPage();
p.on('console', (m) => console.log('[console.' + m.type() + ']', m.text()));
p.on('pageerror', (e) => console.log('[PAGEERROR]', e.message));
await p.goto(`${page0}?base=${encodeURIComponent(base)}&u=${user}`);
await p.waitForFunction(() => (window.__log ?? []).some((a) => a[0] === 'DONE' || a[0] === 'FAILED'), null, { timeout: 20000 }).catch(() => console.log('no DONE/FAILED in 20 s'));
await p.waitForTimeout(500);
console.log(await p.textContent('#out'));
await p.screenshot({ path: '/tmp/review-shots/20-browser-quickstart.png' });
await browser.close();

#!/usr/bin/env node
// The README's JavaScript quick start, as written, in a browser. The Go
// test (internal/server/quickstart_browser_test.go) serves a page from the
// Parley server's own origin (--web-dir): the README block as a module,
// an import map resolving '@parley/client' to web/client/dist and 'ws' to
// the browser's WebSocket, and `process.env` holding the server's URL and a
// token (the snippet reads them). The block must print "value1" (its last
// console.log) with no page error.
//
// Inputs (environment): PARLEY_PAGE_URL, CHROMIUM (default /usr/bin/chromium).
import { launchBrowser } from './lib.mjs';

const browser = await launchBrowser();
let code = 1;
try {
  const page = await browser.newPage();
  const lines = [];
  const errors = [];
  page.on('console', (msg) => lines.push(msg.text()));
  page.on('pageerror', (err) => errors.push(String(err)));
  await page.goto(process.env.PARLEY_PAGE_URL);
  const deadline = Date.now() + 20000;
  while (!lines.includes('value1') && errors.length === 0 && Date.now() < deadline) {
    await page.waitForTimeout(50); // polls the console log, with a deadline
  }
  console.log('browser console:\n' + lines.join('\n'));
  if (errors.length > 0) console.error('page errors:\n' + errors.join('\n'));
  code = lines.includes('value1') && errors.length === 0 ? 0 : 1;
} finally {
  await browser.close();
}
process.exit(code);

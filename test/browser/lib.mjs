// Shared by the browser test scripts in this folder: Playwright from
// web/media's packages (playwright-core, never a downloaded browser),
// Debian's Chromium, and waiting on conditions with deadlines.
import { createRequire } from 'node:module';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
export const repoRoot = path.resolve(here, '..', '..');
export const webMedia = path.join(repoRoot, 'web', 'media');
const require = createRequire(path.join(webMedia, 'package.json'));
export const { chromium } = require('playwright-core');

/** env(k, d): process.env[k], or d when unset. */
export const env = (k, d) => process.env[k] ?? d;

const baseArgs = ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync'];
// Fake camera and microphone, no permission prompt, autoplay allowed.
const mediaArgs = ['--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream',
  '--autoplay-policy=no-user-gesture-required'];
const executablePath = () => env('CHROMIUM', '/usr/bin/chromium');

/** launchBrowser({media}): a headless Chromium (CHROMIUM, default /usr/bin/chromium). */
export function launchBrowser({ media = false } = {}) {
  return chromium.launch({ executablePath: executablePath(), headless: true, args: media ? [...baseArgs, ...mediaArgs] : baseArgs });
}

/**
 * launchMediaContext({viewport}): a persistent context (its own profile
 * directory) with fake media devices; close() closes it and removes the
 * profile.
 */
export async function launchMediaContext(extra = {}) {
  const userDataDir = mkdtempSync(path.join(os.tmpdir(), 'parley-chromium-'));
  const context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: executablePath(), headless: true, ...extra, args: [...baseArgs, ...mediaArgs],
  });
  const close = async () => {
    await context.close().catch(() => {});
    rmSync(userDataDir, { recursive: true, force: true });
  };
  return { context, close };
}

/**
 * waitUntil polls fn every everyMs until it returns {ok: true, ...}, which
 * it returns; after timeoutMs it throws with the last value.
 */
export async function waitUntil(what, fn, timeoutMs = 30000, everyMs = 250) {
  const deadline = Date.now() + timeoutMs;
  let last;
  for (;;) {
    last = await fn();
    if (last && last.ok) return last;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}: ${JSON.stringify(last)}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

/** check throws `what: detail` unless cond. */
export function check(cond, what, detail) {
  if (!cond) throw new Error(`${what}${detail === undefined ? '' : `: ${JSON.stringify(detail)}`}`);
}

// Test helpers: real `parley serve` processes (from PARLEY_BINARY, which
// internal/server/jsclient_test.go builds; without it one is built here with
// `go build`), tokens minted over REST with the API key, and waiting on
// conditions with deadlines (never a fixed sleep as synchronisation).
import { spawn, execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { randomBytes } from 'node:crypto';
import net from 'node:net';
import WebSocket from 'ws';

const here = dirname(fileURLToPath(import.meta.url));
export const repoRoot = join(here, '..', '..', '..');

let builtBinary;
/** binary is the parley executable: $PARLEY_BINARY, or one built once per process. */
export function binary() {
  if (process.env.PARLEY_BINARY) return process.env.PARLEY_BINARY;
  if (!builtBinary) {
    const dir = mkdtempSync(join(tmpdir(), 'parley-bin-'));
    builtBinary = join(dir, 'parley');
    execFileSync('go', ['build', '-o', builtBinary, './cmd/parley'], { cwd: repoRoot, stdio: 'inherit' });
    process.on('exit', () => rmSync(dir, { recursive: true, force: true }));
  }
  return builtBinary;
}

export const secret = process.env.PARLEY_AUTH_SECRET || randomBytes(24).toString('hex');
export const apiKey = process.env.PARLEY_API_KEY || randomBytes(24).toString('hex');

/** freePort asks the kernel for a free TCP port on 127.0.0.1. */
export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

/** until polls fn (sync or async) every 20 ms until it returns truthy; throws after ms. */
export async function until(what, fn, ms = 10000) {
  const end = Date.now() + ms;
  let last;
  for (;;) {
    try {
      last = await fn();
      if (last) return last;
    } catch (err) {
      last = err;
    }
    if (Date.now() > end) {
      throw new Error(`timed out after ${ms} ms waiting for: ${what}${last instanceof Error ? ` (last error: ${last.message})` : ''}`);
    }
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** eventually waits for one emission of event on emitter (optionally matching pred), with a deadline. */
export function nextEvent(emitter, event, pred = () => true, ms = 10000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      off();
      reject(new Error(`timed out after ${ms} ms waiting for event ${event}`));
    }, ms);
    const off = emitter.on(event, (payload) => {
      if (!pred(payload)) return;
      clearTimeout(timer);
      off();
      resolve(payload);
    });
  });
}

/**
 * Server is one `parley serve` process with its own port and data dir. stop()
 * ends it (SIGTERM, then SIGKILL after 5 s), start() starts it again on the
 * same port with the same data, kill() is kill -9.
 */
export class Server {
  constructor({ env = {} } = {}) {
    this.env = env;
    this.dataDir = mkdtempSync(join(tmpdir(), 'parley-data-'));
    this.proc = null;
    this.output = '';
  }

  get httpUrl() {
    return `http://127.0.0.1:${this.port}`;
  }

  get wsUrl() {
    return `ws://127.0.0.1:${this.port}/ws`;
  }

  async start() {
    if (this.port === undefined) this.port = await freePort();
    const env = {
      ...process.env,
      PARLEY_HTTP_ADDR: `127.0.0.1:${this.port}`,
      PARLEY_DATA_DIR: this.dataDir,
      PARLEY_AUTH_SECRET: secret,
      PARLEY_API_KEY: apiKey,
      PARLEY_LOG_LEVEL: 'error',
      PARLEY_MEDIA_WORKERS: '1',
      PARLEY_SHUTDOWN_TIMEOUT: '2s',
      ...this.env,
    };
    const proc = spawn(binary(), ['serve'], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    this.proc = proc;
    const exited = new Promise((resolve) => proc.once('exit', (code, signal) => resolve({ code, signal })));
    this.exited = exited;
    proc.stdout.on('data', (b) => (this.output += b));
    proc.stderr.on('data', (b) => (this.output += b));
    let gone = false;
    exited.then(() => (gone = true));
    await until(
      `parley serve on ${this.port} healthy`,
      async () => {
        if (gone) throw new Error(`parley serve exited: ${this.output}`);
        const r = await fetch(`${this.httpUrl}/healthz`).catch(() => null);
        if (r) await r.body?.cancel();
        return r?.ok;
      },
      20000,
    );
    return this;
  }

  async stop(signal = 'SIGTERM') {
    const proc = this.proc;
    if (!proc || proc.exitCode !== null || proc.signalCode !== null) return;
    const t = setTimeout(() => proc.kill('SIGKILL'), 5000);
    proc.kill(signal);
    await this.exited;
    clearTimeout(t);
    this.proc = null;
  }

  kill() {
    return this.stop('SIGKILL');
  }

  /** dispose stops the server and removes its data. */
  async dispose() {
    await this.stop();
    rmSync(this.dataDir, { recursive: true, force: true });
  }

  /** token mints an access token for userId (POST /api/tokens with the API key). */
  async token(userId, { name, rooms = { '*': ['read', 'presence', 'write'] }, ttlSeconds } = {}) {
    const body = { user_id: userId, rooms };
    if (name !== undefined) body.name = name;
    if (ttlSeconds !== undefined) body.ttl_seconds = ttlSeconds;
    const r = await this.api('POST', '/api/tokens', body);
    return r.token;
  }

  /** api calls the REST API with the API key (or the given bearer token). */
  async api(method, path, body, token = apiKey) {
    const headers = { Authorization: `Bearer ${token}` };
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    const res = await fetch(this.httpUrl + path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    const text = await res.text();
    if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${text}`);
    return text ? JSON.parse(text) : undefined;
  }

  /** metric reads one unlabelled gauge or counter from /metrics. */
  async metric(name) {
    const res = await fetch(`${this.httpUrl}/metrics`);
    const text = await res.text();
    const m = text.match(new RegExp(`^${name} ([0-9.e+-]+)$`, 'm'));
    if (!m) throw new Error(`metric ${name} not found`);
    return Number(m[1]);
  }
}

/** startServer starts a server and registers its disposal with the test context's after hook. */
export async function startServer(after, options) {
  const s = new Server(options);
  after(() => s.dispose());
  await s.start();
  return s;
}

/**
 * HoldWS is the ws WebSocket with a tap on incoming frames: hold() buffers
 * them (as if the network were slow), release() delivers them in order.
 * Every instance is recorded in HoldWS.instances.
 */
export class HoldWS extends WebSocket {
  static instances = [];
  #held = null;
  #onmessage = null;

  constructor(...args) {
    super(...args);
    HoldWS.instances.push(this);
    super.onmessage = (ev) => {
      if (this.#held) this.#held.push(ev);
      else this.#onmessage?.(ev);
    };
  }

  get onmessage() {
    return this.#onmessage;
  }

  set onmessage(fn) {
    this.#onmessage = fn;
  }

  hold() {
    this.#held ??= [];
  }

  /** heldCount is how many frames are waiting. */
  get heldCount() {
    return this.#held?.length ?? 0;
  }

  /** inject delivers a frame as if the server had sent it (for frames today's server never sends, and hostile ones). */
  inject(data) {
    this.#onmessage?.({ data });
  }

  release() {
    const held = this.#held ?? [];
    this.#held = null;
    for (const ev of held) this.#onmessage?.(ev);
  }
}

export { WebSocket, existsSync };

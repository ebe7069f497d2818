// Shared helpers for the review scripts: HS256 tokens signed with the
// server's secret (/tmp/rv/secret or PARLEY_AUTH_SECRET), WebSocket clients
// with request/reply by id, the server API with the API key.
import { createRequire } from 'node:module';
import crypto from 'node:crypto';
import fs from 'node:fs';
const require = createRequire(new URL('../web/client/node_modules/', import.meta.url));
export const WebSocket = require('ws');
export const BASE = process.env.BASE ?? 'http://127.0.0.1:7880';
export const WSURL = BASE.replace(/^http/, 'ws') + '/ws';
export const SECRET = process.env.PARLEY_AUTH_SECRET ?? fs.readFileSync('/tmp/rv/secret', 'utf8').trim();
export const APIKEY = process.env.PARLEY_API_KEY ?? (fs.existsSync('/tmp/rv/apikey') ? fs.readFileSync('/tmp/rv/apikey', 'utf8').trim() : '');
const b64 = (b) => Buffer.from(b).toString('base64url');
export function token(sub, { name, rooms = { '*': ['read', 'presence', 'write'] }, ttl = 3600 } = {}) {
  const now = Math.floor(Date.now() / 1000);
  const claims = { sub, iat: now, exp: now + ttl, rooms };
  if (name !== undefined) claims.name = name;
  const h = b64(JSON.stringify({ alg: 'HS256', typ: 'JWT' })), p = b64(JSON.stringify(claims));
  return `${h}.${p}.${crypto.createHmac('sha256', SECRET).update(`${h}.${p}`).digest('base64url')}`;
}
export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
let seq = 0;
export class WSClient {
  constructor(user, opts = {}) { this.user = user; this.opts = opts; this.frames = []; this.waiters = new Map(); this.listeners = []; this.closed = null; }
  open() {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(`${WSURL}?token=${this.opts.token ?? token(this.user, this.opts)}`, { perMessageDeflate: false });
      this.ws = ws;
      ws.on('message', (d) => {
        if (this.opts.noRead) return;
        let m; try { m = JSON.parse(d.toString()); } catch { m = { raw: d.toString() }; }
        if (!this.opts.noKeep) this.frames.push(m);
        if (m.type === 'connected') { this.connectionId = m.data.connection_id; resolve(this); }
        if (m.id && this.waiters.has(m.id)) { this.waiters.get(m.id)(m); this.waiters.delete(m.id); }
        for (const l of this.listeners) l(m);
      });
      ws.on('close', (code, reason) => { this.closed = { code, reason: reason.toString() }; reject(new Error('closed ' + code)); for (const w of this.waiters.values()) w({ type: 'closed', code }); this.waiters.clear(); });
      ws.on('error', (e) => reject(e));
      ws.on('unexpected-response', (req, res) => { let s = ''; res.on('data', (c) => (s += c)); res.on('end', () => reject(new Error(`HTTP ${res.statusCode} ${s}`))); });
    });
  }
  on(fn) { this.listeners.push(fn); return () => { this.listeners = this.listeners.filter((x) => x !== fn); }; }
  send(type, data, id) { const m = { type, data }; if (id) m.id = id; this.ws.send(JSON.stringify(m)); }
  sendRaw(s) { this.ws.send(s); }
  req(type, data, timeout = 5000) {
    const id = 'r' + (++seq);
    return new Promise((resolve) => {
      const t = setTimeout(() => { this.waiters.delete(id); resolve({ type: 'TIMEOUT' }); }, timeout);
      this.waiters.set(id, (m) => { clearTimeout(t); resolve(m); });
      try { this.send(type, data, id); } catch (e) { clearTimeout(t); resolve({ type: 'SENDFAIL', e: String(e) }); }
    });
  }
  wait(pred, timeout = 5000) {
    return new Promise((resolve) => {
      const hit = this.frames.find(pred); if (hit) return resolve(hit);
      const t = setTimeout(() => { off(); resolve(null); }, timeout);
      const off = this.on((m) => { if (pred(m)) { clearTimeout(t); off(); resolve(m); } });
    });
  }
  close() { try { this.ws.close(); } catch {} }
}
export async function api(method, path, { key = APIKEY, body, raw, headers = {} } = {}) {
  const h = { ...headers };
  if (key !== null) h.Authorization = `Bearer ${key}`;
  if (body !== undefined || raw !== undefined) h['Content-Type'] ??= 'application/json';
  const res = await fetch(BASE + path, { method, headers: h, body: raw ?? (body === undefined ? undefined : JSON.stringify(body)) });
  const text = await res.text();
  let json; try { json = JSON.parse(text); } catch {}
  return { status: res.status, ct: res.headers.get('content-type'), text, json };
}
export function rssKB(pid) {
  const s = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  return Number(/VmRSS:\s+(\d+)/.exec(s)[1]);
}
export function cpuTicks(pid) {
  const f = fs.readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
  return Number(f[11]) + Number(f[12]);
}
export const srvPid = () => Number(fs.readFileSync('/tmp/rv/srv.pid', 'utf8'));

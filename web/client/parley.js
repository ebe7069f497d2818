// Parley JavaScript client: rooms (members, presence, versioned storage) and
// the chat events, over one WebSocket, with request/reply by envelope id and
// reconnection that catches up on storage with since_version.
//
// No dependencies; works in browsers and in Node with a global WebSocket
// (Node 22+, or Node 20 with --experimental-websocket) or options.WebSocket.
//
//   import { ParleyClient } from './parley.js';
//   const client = new ParleyClient({ url: 'ws://127.0.0.1:7880/ws', token });
//   await client.connect();
//   const room = await client.joinRoom('doc-1', { presence: { cursor: null } });
//   room.on('storage', ({ version, data }) => render(data));
//   await room.patch([{ op: 'add', path: '/title', value: 'Hello' }]);
//
// The wire contract is docs/protocol.md.

export class ParleyError extends Error {
  constructor(code, message) {
    super(`${code}: ${message}`);
    this.code = code;
  }
}

class Emitter {
  constructor() { this._handlers = new Map(); }
  on(type, fn) {
    if (!this._handlers.has(type)) this._handlers.set(type, new Set());
    this._handlers.get(type).add(fn);
    return () => this._handlers.get(type)?.delete(fn);
  }
  _emit(type, payload) {
    for (const fn of this._handlers.get(type) ?? []) {
      try { fn(payload); } catch (e) { console.error('parley: handler failed', e); }
    }
  }
}

// Close codes after which reconnecting cannot help (see docs/protocol.md).
const FATAL_CLOSE = new Set([4008, 4009, 4029, 4400]);

export class ParleyClient extends Emitter {
  // options: { url, token | getToken: async () => token, reconnect = true,
  //            requestTimeoutMs = 10000, WebSocket = globalThis.WebSocket }
  constructor(options) {
    super();
    this.options = { reconnect: true, requestTimeoutMs: 10000, ...options };
    this.connectionId = null;
    this.userId = null;
    this._ws = null;
    this._nextId = 1;
    this._pending = new Map(); // id → {resolve, reject, timer}
    this._rooms = new Map(); // room id → Room
    this._closedByUser = false;
    this._attempt = 0;
  }

  async _token() {
    if (this.options.getToken) return this.options.getToken();
    return this.options.token;
  }

  // connect resolves once the server's `connected` frame arrived.
  async connect() {
    this._closedByUser = false;
    const token = await this._token();
    const WS = this.options.WebSocket ?? globalThis.WebSocket;
    const sep = this.options.url.includes('?') ? '&' : '?';
    const ws = new WS(`${this.options.url}${sep}token=${encodeURIComponent(token)}`);
    this._ws = ws;
    await new Promise((resolve, reject) => {
      let connected = false;
      ws.onmessage = (ev) => {
        const msg = JSON.parse(ev.data);
        if (!connected && msg.type === 'connected') {
          connected = true;
          this.connectionId = msg.data.connection_id;
          this.userId = msg.data.user_id;
          this._attempt = 0;
          resolve();
        }
        this._receive(msg);
      };
      ws.onclose = (ev) => {
        if (!connected) reject(new ParleyError('unauthorized', `connection refused (${ev.code})`));
        this._closed(ev.code, ev.reason);
      };
      ws.onerror = () => {};
    });
    this._emit('connected', { connectionId: this.connectionId, userId: this.userId });
    // Re-join rooms after a reconnect, catching up from the last version seen.
    for (const room of this._rooms.values()) room._rejoin();
  }

  close() {
    this._closedByUser = true;
    this._ws?.close(1000);
  }

  _closed(code, reason) {
    for (const [id, p] of this._pending) {
      clearTimeout(p.timer);
      p.reject(new ParleyError('internal', `connection closed (${code})`));
      this._pending.delete(id);
    }
    this._emit('disconnected', { code, reason });
    if (this._closedByUser || !this.options.reconnect || FATAL_CLOSE.has(code)) return;
    // 1001 (server restart), 4000 (heartbeat), 4001 (token expired: getToken
    // gives a fresh one), network errors: back off and reconnect.
    const delay = Math.min(30000, 250 * 2 ** this._attempt++) * (0.5 + Math.random() / 2);
    setTimeout(() => this.connect().catch(() => this._closed(1006, 'reconnect failed')), delay);
  }

  // send without expecting a reply.
  send(type, data) {
    this._ws.send(JSON.stringify(data === undefined ? { type } : { type, data }));
  }

  // request sends {type, id, data} and resolves with the reply frame
  // ({type, id, data}); an error frame rejects with a ParleyError.
  request(type, data) {
    const id = String(this._nextId++);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this._pending.delete(id);
        reject(new ParleyError('internal', `no reply to ${type} within ${this.options.requestTimeoutMs} ms`));
      }, this.options.requestTimeoutMs);
      this._pending.set(id, { resolve, reject, timer });
      this._ws.send(JSON.stringify(data === undefined ? { type, id } : { type, id, data }));
    });
  }

  _receive(msg) {
    if (msg.id && this._pending.has(msg.id)) {
      const p = this._pending.get(msg.id);
      this._pending.delete(msg.id);
      clearTimeout(p.timer);
      if (msg.type === 'error') p.reject(new ParleyError(msg.data.code, msg.data.message));
      else p.resolve(msg);
    }
    const roomId = msg.data?.room_id;
    if (roomId && msg.type.startsWith('room:') && this._rooms.has(roomId)) {
      this._rooms.get(roomId)._receive(msg);
    }
    this._emit(msg.type, msg.data);
    this._emit('message', msg);
  }

  // joinRoom joins (or re-joins) a room and resolves with its Room.
  async joinRoom(roomId, { presence } = {}) {
    let room = this._rooms.get(roomId);
    if (!room) {
      room = new Room(this, roomId);
      this._rooms.set(roomId, room);
    }
    await room._join(presence);
    return room;
  }

  // setStatus sets the user status (online, idle, dnd, offline, invisible).
  async setStatus(status) {
    await this.request('presence:update', { presence: status });
  }

  startTyping(roomId) { return this.request('typing:start', { room_id: roomId }); }
  stopTyping(roomId) { return this.request('typing:stop', { room_id: roomId }); }
}

// Room mirrors one joined room: members (by client id), each client's
// presence, and the storage document at its latest committed version.
export class Room extends Emitter {
  constructor(client, id) {
    super();
    this.client = client;
    this.id = id;
    this.clientId = null;
    this.members = new Map();
    this.version = 0;
    this.data = {};
    this._presence = undefined;
    this._joined = false;
  }

  async _join(presence) {
    this._presence = presence ?? this._presence;
    const req = { room_id: this.id };
    if (this._presence !== undefined) req.presence = this._presence;
    if (this._joined) req.since_version = this.version;
    const reply = await this.client.request('room:join', req);
    this._applyState(reply.data);
    this._joined = true;
  }

  _rejoin() {
    this._join().catch((e) => this._emit('error', e));
  }

  _applyState(st) {
    this.clientId = st.client_id;
    this.members = new Map(st.members.map((m) => [m.client_id, m]));
    if (st.storage.updates) {
      for (const u of st.storage.updates) this._applyUpdate(u.version, u.ops);
    } else {
      this.version = st.storage.version;
      this.data = st.storage.data;
    }
    this._emit('members', [...this.members.values()]);
    this._emit('storage', { version: this.version, data: this.data });
  }

  _applyUpdate(version, ops) {
    if (version <= this.version) return; // already seen
    if (version !== this.version + 1) {
      // A gap means something was missed: fetch the state again.
      this._rejoin();
      return;
    }
    this.data = applyPatch(this.data, ops);
    this.version = version;
  }

  _receive(msg) {
    const d = msg.data;
    switch (msg.type) {
      case 'room:joined':
        this.members.set(d.client_id, { ...d, joined_at: new Date().toISOString() });
        this._emit('members', [...this.members.values()]);
        break;
      case 'room:left':
        this.members.delete(d.client_id);
        if (d.client_id === this.clientId) {
          this._joined = false;
          this.client._rooms.delete(this.id);
        }
        this._emit('members', [...this.members.values()]);
        break;
      case 'room:presence_updated': {
        const m = this.members.get(d.client_id);
        if (m) m.presence = d.presence;
        this._emit('presence', d);
        break;
      }
      case 'room:storage_updated':
        this._applyUpdate(d.version, d.ops);
        this._emit('storage', { version: this.version, data: this.data, ops: d.ops, clientId: d.client_id });
        break;
      case 'room:event':
        this._emit('event', d);
        break;
    }
  }

  // patch sends a JSON Patch batch; resolves with the new version once the
  // batch is durable. baseVersion makes it a compare-and-set.
  async patch(ops, { baseVersion } = {}) {
    const data = { room_id: this.id, ops };
    if (baseVersion !== undefined) data.base_version = baseVersion;
    const reply = await this.client.request('room:update_storage', data);
    return reply.data.version;
  }

  async updatePresence(presence) {
    await this.client.request('room:update_presence', { room_id: this.id, presence });
  }

  async broadcast(event) {
    await this.client.request('room:broadcast', { room_id: this.id, event });
  }

  async leave() {
    await this.client.request('room:leave', { room_id: this.id });
  }
}

// --- JSON Patch (RFC 6902), applied to batches the server already accepted.

function unescape(tok) { return tok.replace(/~1/g, '/').replace(/~0/g, '~'); }

function parse(path) {
  if (path === '') return [];
  return path.slice(1).split('/').map(unescape);
}

function clone(v) { return v === undefined ? v : JSON.parse(JSON.stringify(v)); }

function get(doc, toks) {
  let cur = doc;
  for (const t of toks) cur = Array.isArray(cur) ? cur[Number(t)] : cur[t];
  return cur;
}

function parentOf(doc, toks) {
  return { parent: get(doc, toks.slice(0, -1)), key: toks[toks.length - 1] };
}

function equal(a, b) { return JSON.stringify(sortKeys(a)) === JSON.stringify(sortKeys(b)); }
function sortKeys(v) {
  if (Array.isArray(v)) return v.map(sortKeys);
  if (v && typeof v === 'object') return Object.fromEntries(Object.keys(v).sort().map((k) => [k, sortKeys(v[k])]));
  return v;
}

function add(doc, toks, value) {
  if (toks.length === 0) return value;
  const { parent, key } = parentOf(doc, toks);
  if (Array.isArray(parent)) {
    if (key === '-') parent.push(value);
    else parent.splice(Number(key), 0, value);
  } else {
    parent[key] = value;
  }
  return doc;
}

function remove(doc, toks) {
  const { parent, key } = parentOf(doc, toks);
  const old = Array.isArray(parent) ? parent.splice(Number(key), 1)[0] : parent[key];
  if (!Array.isArray(parent)) delete parent[key];
  return old;
}

export function applyPatch(doc, ops) {
  let out = clone(doc);
  for (const op of ops) {
    const toks = parse(op.path);
    switch (op.op) {
      case 'add': out = add(out, toks, clone(op.value)); break;
      case 'remove': remove(out, toks); break;
      case 'replace':
        if (toks.length === 0) { out = clone(op.value); break; }
        remove(out, toks); out = add(out, toks, clone(op.value)); break;
      case 'move': { const v = remove(out, parse(op.from)); out = add(out, toks, v); break; }
      case 'copy': out = add(out, toks, clone(get(out, parse(op.from)))); break;
      case 'test':
        if (!equal(get(out, toks), op.value)) throw new ParleyError('test_failed', op.path);
        break;
      default: throw new ParleyError('bad_request', `unknown op ${op.op}`);
    }
  }
  return out;
}

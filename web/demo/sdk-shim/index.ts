// Throwaway shim of the SDK surface the demo uses (API.md); see README.md.
/* eslint-disable */
type Fn = (d: any) => void;
class Emitter {
  private h = new Map<string, Set<Fn>>();
  on(t: string, fn: Fn) { if (!this.h.has(t)) this.h.set(t, new Set()); this.h.get(t)!.add(fn); return () => { this.h.get(t)?.delete(fn); }; }
  emit(t: string, d?: any) { for (const f of this.h.get(t) ?? []) { try { f(d); } catch (e) { console.error(e); } } }
}
export class ParleyError extends Error {
  code: string; status?: number;
  constructor(code: string, message?: string, status?: number) { super(`${code}: ${message ?? ''}`); this.code = code; this.status = status; }
}
export class ParleyClient extends Emitter {
  opts: any; ws: WebSocket | null = null; state = 'idle'; connectionId: string | null = null; userId: string | null = null;
  private pending = new Map<string, any>(); private rooms = new Map<string, Room>(); private n = 0; private closed = false; private attempt = 0;
  constructor(opts: any) { super(); this.opts = opts; }
  private setState(s: string) { const p = this.state; this.state = s; this.emit('state', { state: s, previous: p }); }
  async connect(): Promise<void> {
    this.closed = false; this.setState(this.state === 'idle' ? 'connecting' : 'reconnecting');
    const token = this.opts.getToken ? await this.opts.getToken() : this.opts.token;
    const ws = new WebSocket(`${this.opts.url}?token=${encodeURIComponent(token)}`); this.ws = ws;
    await new Promise<void>((resolve, reject) => {
      let ok = false;
      ws.onmessage = (ev) => {
        const m = JSON.parse(ev.data);
        if (!ok && m.type === 'connected') { ok = true; this.connectionId = m.data.connection_id; this.userId = m.data.user_id; this.attempt = 0; this.setState('connected'); this.emit('connected', { connectionId: this.connectionId, userId: this.userId }); resolve(); for (const r of this.rooms.values()) r._join().catch(() => {}); }
        this.receive(m);
      };
      ws.onclose = (ev) => { if (!ok) reject(new ParleyError('unavailable', `closed ${ev.code}`)); this.onClose(ev.code); };
    });
  }
  private onClose(code: number) {
    for (const p of this.pending.values()) { clearTimeout(p.t); p.reject(new ParleyError('disconnected')); }
    this.pending.clear(); this.emit('disconnected', { code, willReconnect: !this.closed });
    if (this.closed || code === 4003) { this.setState('closed'); return; }
    this.setState('reconnecting');
    setTimeout(() => this.connect().catch(() => {}), Math.random() * Math.min(15000, 500 * 2 ** this.attempt++));
  }
  close() { this.closed = true; this.ws?.close(1000); }
  send(type: string, data?: any) { if (this.state === 'connected') this.ws!.send(JSON.stringify({ type, data })); }
  request(type: string, data?: any): Promise<any> {
    const id = `r${++this.n}`;
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => { this.pending.delete(id); reject(new ParleyError('timeout')); }, 10000);
      this.pending.set(id, { resolve, reject, t });
      this.ws!.send(JSON.stringify({ type, id, data }));
    });
  }
  private receive(m: any) {
    if (m.id && this.pending.has(m.id)) { const p = this.pending.get(m.id); this.pending.delete(m.id); clearTimeout(p.t); if (m.type === 'error') p.reject(new ParleyError(m.data.code, m.data.message)); else p.resolve(m); }
    const rid = m.data?.room_id; if (rid && m.type.startsWith('room:')) this.rooms.get(rid)?._receive(m);
    this.emit('message', m); this.emit(m.type, m.data);
  }
  async joinRoom(id: string, o: any = {}) { let r = this.rooms.get(id); if (!r) { r = new Room(this, id); this.rooms.set(id, r); } r.presence = o.presence ?? r.presence; await r._join(); return r; }
  room(id: string) { return this.rooms.get(id); }
  _forget(id: string) { this.rooms.delete(id); }
  async setStatus(s: string) { await this.request('presence:update', { presence: s }); }
  typing(roomId: string) { return new Typing(this, roomId); }
}
export class Typing {
  private last = 0; constructor(private c: ParleyClient, private roomId: string) {}
  keystroke() { const now = Date.now(); if (now - this.last > 4000) { this.last = now; this.c.send('typing:start', { room_id: this.roomId }); } }
  stop() { if (this.last) { this.last = 0; this.c.send('typing:stop', { room_id: this.roomId }); } }
}
export class Room extends Emitter {
  connectionId = ''; members = new Map<string, any>(); presence: any = {}; storage: any = {}; version = 0; confirmed: any = {};
  private undoStack: any[][] = []; private redoStack: any[][] = []; private joined = false;
  constructor(private c: ParleyClient, public id: string) { super(); }
  get memberCount() { return this.members.size; }
  get canUndo() { return this.undoStack.length > 0; }
  get canRedo() { return this.redoStack.length > 0; }
  async _join() {
    const req: any = { room_id: this.id, presence: this.presence };
    const st = (await this.c.request('room:join', req)).data;
    this.connectionId = st.client_id; this.members = new Map(st.members.map((m: any) => [m.client_id, m]));
    this.version = st.storage.version; this.storage = this.confirmed = st.storage.data ?? {}; this.joined = true;
    this.emit('members', [...this.members.values()]); this.emit('storage', { data: this.storage, version: this.version, local: false, ops: [] });
  }
  _receive(m: any) {
    const d = m.data;
    switch (m.type) {
      case 'room:joined': this.members.set(d.client_id, { ...d, joined_at: new Date().toISOString() }); this.emit('joined', d); this.emit('members', [...this.members.values()]); break;
      case 'room:left': this.members.delete(d.client_id); this.emit('left', d); this.emit('members', [...this.members.values()]); if (d.client_id === this.connectionId) this.c._forget(this.id); break;
      case 'room:presence_updated': { const x = this.members.get(d.client_id); if (x) x.presence = d.presence; this.emit('presence', d); break; }
      case 'room:storage_updated':
        if (d.version <= this.version) break;
        this.confirmed = applyPatch(this.confirmed, d.ops); this.version = d.version; this.storage = this.confirmed;
        this.emit('storage', { data: this.storage, version: this.version, local: false, ops: d.ops }); break;
      case 'room:event': this.emit('event', d); break;
    }
  }
  async updatePresence(p: any) { for (const k of Object.keys(p)) { if (p[k] === null) delete this.presence[k]; else this.presence[k] = p[k]; } await this.c.request('room:update_presence', { room_id: this.id, presence: p }); }
  async patch(ops: any[], o: { undoable?: boolean } = {}) {
    const inv = inverse(this.storage, ops);
    this.storage = applyPatch(this.storage, ops); this.emit('storage', { data: this.storage, version: this.version, local: true, ops });
    if (o.undoable !== false) { this.undoStack.push(inv); this.redoStack = []; }
    const r = await this.c.request('room:update_storage', { room_id: this.id, ops });
    return { version: r.data.version };
  }
  undo() { const inv = this.undoStack.pop(); if (!inv) return undefined; this.redoStack.push(inverse(this.storage, inv)); return this.patch(inv, { undoable: false }).then(() => {}); }
  redo() { const ops = this.redoStack.pop(); if (!ops) return undefined; this.undoStack.push(inverse(this.storage, ops)); return this.patch(ops, { undoable: false }).then(() => {}); }
  async broadcast(event: any) { await this.c.request('room:broadcast', { room_id: this.id, event }); }
  async leave() { await this.c.request('room:leave', { room_id: this.id }); this.c._forget(this.id); }
}
function toks(p: string) { return p === '' ? [] : p.slice(1).split('/').map((t) => t.replace(/~1/g, '/').replace(/~0/g, '~')); }
function get(doc: any, t: string[]) { let c = doc; for (const k of t) c = c?.[k]; return c; }
function inverse(doc: any, ops: any[]) {
  const inv: any[] = []; let cur = doc;
  for (const op of ops) {
    const old = get(cur, toks(op.path));
    if (op.op === 'add') inv.unshift(old === undefined ? { op: 'remove', path: op.path } : { op: 'replace', path: op.path, value: old });
    else if (op.op === 'remove' || op.op === 'replace') inv.unshift(op.op === 'remove' ? { op: 'add', path: op.path, value: old } : { op: 'replace', path: op.path, value: old });
    cur = applyPatch(cur, [op]);
  }
  return inv;
}
export function applyPatch(doc: any, ops: any[]) {
  let out = JSON.parse(JSON.stringify(doc));
  for (const op of ops) {
    const t = toks(op.path); const parent = get(out, t.slice(0, -1)); const k = t[t.length - 1];
    if (op.op === 'add' || op.op === 'replace') { if (!t.length) out = op.value; else if (Array.isArray(parent)) { if (op.op === 'replace') parent.splice(+k, 1); k === '-' ? parent.push(op.value) : parent.splice(+k, 0, op.value); } else parent[k] = JSON.parse(JSON.stringify(op.value)); }
    else if (op.op === 'remove') { if (Array.isArray(parent)) parent.splice(+k, 1); else delete parent[k]; }
  }
  return out;
}
export class ParleyAPI {
  tokens: any = null; private fns: Fn[] = [];
  constructor(private o: { baseUrl: string; token?: string; getToken?: () => Promise<string> }) {}
  onTokens(fn: Fn) { this.fns.push(fn); return () => { this.fns = this.fns.filter((f) => f !== fn); }; }
  private async req(method: string, p: string, body?: any, headers: any = {}, auth = true) {
    const h: any = { ...headers };
    const tok = auth ? (this.o.getToken ? await this.o.getToken() : this.tokens?.access_token ?? this.o.token) : undefined;
    if (tok) h.Authorization = `Bearer ${tok}`;
    if (body !== undefined) h['Content-Type'] = 'application/json';
    const r = await fetch(this.o.baseUrl + p, { method, headers: h, body: body === undefined ? undefined : JSON.stringify(body) });
    const txt = await r.text(); const j = txt ? JSON.parse(txt) : undefined;
    if (!r.ok) throw new ParleyError(j?.error ?? 'internal', j?.message, r.status);
    return j;
  }
  private setTokens(t: any) { this.tokens = t; for (const f of this.fns) f(t); return t; }
  async register(b: { username: string; password: string; displayName?: string }) { return this.setTokens(await this.req('POST', '/api/auth/register', { username: b.username, password: b.password, display_name: b.displayName }, {}, false)); }
  async login(b: any) { return this.setTokens(await this.req('POST', '/api/auth/login', b, {}, false)); }
  async refresh(rt: string) { return this.setTokens(await this.req('POST', '/api/auth/refresh', { refresh_token: rt }, {}, false)); }
  async logout() { if (this.tokens?.refresh_token) await this.req('POST', '/api/auth/logout', { refresh_token: this.tokens.refresh_token }, {}, false); }
  me() { return this.req('GET', '/api/me'); }
  rooms = {
    create: (b: any) => this.req('POST', '/api/rooms', b), list: () => this.req('GET', '/api/rooms'),
    get: (id: string) => this.req('GET', `/api/rooms/${encodeURIComponent(id)}`), join: (id: string) => this.req('POST', `/api/rooms/${encodeURIComponent(id)}/join`),
    leave: (id: string) => this.req('POST', `/api/rooms/${encodeURIComponent(id)}/leave`),
  };
  messages = {
    send: (id: string, b: any, o: any = {}) => this.req('POST', `/api/rooms/${encodeURIComponent(id)}/messages`, b, o.connectionId ? { 'X-Connection-Id': o.connectionId } : {}),
    list: (id: string, o: any = {}) => this.req('GET', `/api/rooms/${encodeURIComponent(id)}/messages?limit=${o.limit ?? 50}`),
  };
  storage = { get: (id: string) => this.req('GET', `/api/rooms/${encodeURIComponent(id)}/storage`), patch: (id: string, ops: any[]) => this.req('PATCH', `/api/rooms/${encodeURIComponent(id)}/storage`, ops) };
  presence(ids: string[]) { return this.req('GET', `/api/presence?user_ids=${ids.map(encodeURIComponent).join(',')}`); }
  call = {
    start: (id: string) => this.req('POST', `/api/rooms/${encodeURIComponent(id)}/call/start`),
    end: (id: string) => this.req('POST', `/api/rooms/${encodeURIComponent(id)}/call/end`),
    participants: (id: string) => this.req('GET', `/api/rooms/${encodeURIComponent(id)}/call/participants`),
  };
}

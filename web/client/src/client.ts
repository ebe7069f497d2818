// ParleyClient: one WebSocket to a Parley server (never more than one),
// request/reply by envelope id, and reconnection.
//
// Reconnection is single flight: there is at most one socket and at most one
// retry timer at any time. Every socket gets a generation number; its
// handlers act only while it is the current generation, and a socket that is
// replaced or abandoned (timeout, close()) has its handlers detached before
// it is closed, so a late event from it can change nothing.

import { backoffDelay } from './backoff.js';
import { Emitter } from './emitter.js';
import { ParleyError, asParleyError } from './errors.js';
import type {
  ClientMessages,
  ClientMessageType,
  ConnectedData,
  Envelope,
  ErrorCode,
  ReplyEnvelope,
  ServerMessages,
  UserStatus,
} from './protocol.js';
import { CloseCode } from './protocol.js';
import { Room, type JoinOptions } from './room.js';
import { Typing } from './typing.js';

/** The part of a WebSocket the client uses (browsers' WebSocket and the `ws` package both fit). */
export interface WebSocketLike {
  readonly readyState: number;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  onopen: ((ev: any) => void) | null;
  onmessage: ((ev: any) => void) | null;
  onclose: ((ev: any) => void) | null;
  onerror: ((ev: any) => void) | null;
}

export type WebSocketConstructor = new (url: string) => WebSocketLike;

export type FetchLike = (input: string, init?: RequestInit) => Promise<Response>;

export interface ParleyClientOptions {
  /** ws(s)://host/ws */
  url: string;
  token?: string;
  /** Called before each connect when set, and after a 4001. */
  getToken?: () => Promise<string>;
  /** Default globalThis.WebSocket; in Node 20 pass the `ws` package's class. */
  WebSocket?: WebSocketConstructor;
  /** Used for the /api/me probe after a failed connect; default globalThis.fetch. */
  fetch?: FetchLike;
  /** HTTP base of the REST API for the probe; default derived from url (ws → http, /ws stripped). */
  httpUrl?: string;
  /** No `connected` frame by then → the attempt fails with 'timeout'. Default 10000. */
  connectTimeoutMs?: number;
  /** request() rejects with 'timeout' after this long. Default 10000; 0 = never. */
  requestTimeoutMs?: number;
  /** Reconnect after a lost connection. Default true. */
  reconnect?: boolean;
  /** Full-jitter backoff bounds. Defaults 500 and 15000 ms. */
  backoff?: { initialMs?: number; maxMs?: number };
  /**
   * After this long without a frame from the server, send a `ping`; no
   * answer within min(keepaliveMs, 10 s) closes the socket as dead and
   * reconnects (a half-open TCP connection is otherwise noticed only by the
   * server). Default: the server's heartbeat_interval_ms; 0 turns it off.
   */
  keepaliveMs?: number;
}

export type ConnectionState = 'idle' | 'connecting' | 'connected' | 'reconnecting' | 'closed';

export interface StateChange {
  state: ConnectionState;
  previous: ConnectionState;
  /** The close code that caused the change, when a socket closed. */
  code?: number;
  reason?: string;
  error?: ParleyError;
}

export interface DisconnectedEvent {
  code: number;
  reason: string;
  willReconnect: boolean;
}

type WireEvents = Omit<ServerMessages, 'connected' | 'error'>;

/** Events of a ParleyClient: its own, and every server message type by its wire name with its data. */
export interface ClientEvents extends WireEvents {
  state: StateChange;
  connected: { connectionId: string; userId: string };
  disconnected: DisconnectedEvent;
  error: ParleyError;
  message: Envelope;
}

export interface RequestOptions {
  /** Overrides requestTimeoutMs; 0 = never. */
  timeoutMs?: number;
}

interface Pending {
  resolve: (env: Envelope) => void;
  reject: (err: ParleyError) => void;
  timer: ReturnType<typeof setTimeout> | undefined;
  type: string;
}

/** Wire names that are also the client's own event names: never re-emitted from a frame. */
const OWN_EVENTS = new Set(['state', 'connected', 'disconnected', 'error', 'message']);

/** Close codes that mean a bug or abuse on our side: back off without resetting the attempt count. */
const ABUSE_CLOSES = new Set<number>([CloseCode.SlowConsumer, CloseCode.MessageTooBig, CloseCode.RateLimited, CloseCode.ProtocolAbuse]);

/** A connection that lived this long resets the backoff (and the count of 4001s in a row). */
const STABLE_MS = 5000;

/** The server's heartbeat_interval_ms is clamped to this range (a hostile or buggy value cannot spin a timer or kill every connection). */
const HEARTBEAT_MIN_MS = 1000;
const HEARTBEAT_MAX_MS = 600_000;

const noop = (): void => {};

/** parseEnvelope reads a frame; anything that is not a JSON object with a string type is ignored (null). */
export function parseEnvelope(raw: unknown): Envelope | null {
  if (typeof raw !== 'string') return null;
  let v: unknown;
  try {
    v = JSON.parse(raw);
  } catch {
    return null;
  }
  if (v === null || typeof v !== 'object' || Array.isArray(v)) return null;
  const o = v as Record<string, unknown>;
  const type = Object.hasOwn(o, 'type') ? o.type : undefined;
  if (typeof type !== 'string' || type === '') return null;
  const id = Object.hasOwn(o, 'id') ? o.id : undefined;
  if (id !== undefined && typeof id !== 'string') return null;
  const env: Envelope = { type };
  if (id !== undefined) env.id = id;
  if (Object.hasOwn(o, 'data')) env.data = o.data;
  return env;
}

function errorFrom(env: Envelope): ParleyError {
  const d = env.data as { code?: unknown; message?: unknown } | undefined;
  const code = d && typeof d.code === 'string' ? (d.code as ErrorCode) : 'internal';
  const message = d && typeof d.message === 'string' ? d.message : 'error';
  return new ParleyError(code, message);
}

/** httpBaseOf turns ws(s)://host/prefix/ws into http(s)://host/prefix. */
export function httpBaseOf(wsUrl: string): string {
  const u = new URL(wsUrl);
  u.protocol = u.protocol === 'wss:' ? 'https:' : u.protocol === 'ws:' ? 'http:' : u.protocol;
  u.search = '';
  u.hash = '';
  u.pathname = u.pathname.replace(/\/ws\/?$/, '');
  return u.toString().replace(/\/$/, '');
}

export class ParleyClient extends Emitter<ClientEvents> {
  /** This connection's id (and client_id in rooms); null while not connected. */
  connectionId: string | null = null;
  /** The user id from the `connected` frame; null before the first one. */
  userId: string | null = null;

  readonly #opts: Required<Pick<ParleyClientOptions, 'connectTimeoutMs' | 'requestTimeoutMs' | 'reconnect'>> & ParleyClientOptions;
  #state: ConnectionState = 'idle';
  #ws: WebSocketLike | null = null;
  #gen = 0;
  #attempt = 0;
  #retryTimer: ReturnType<typeof setTimeout> | undefined;
  #connectedAt = 0;
  /** 4001 closes in a row on connections that did not live STABLE_MS: only the first reconnects at once. */
  #expiredInARow = 0;
  #waiters: { resolve: () => void; reject: (e: ParleyError) => void }[] = [];
  #pending = new Map<string, Pending>();
  #nextId = 1;
  #rooms = new Map<string, Room>();
  #typing = new Map<string, Typing>();
  #heartbeatMs = 0;
  #keepalive: ReturnType<typeof setInterval> | undefined;
  #lastRx = 0;

  constructor(options: ParleyClientOptions) {
    super();
    if (!options || typeof options.url !== 'string') throw new TypeError('ParleyClient: options.url is required');
    this.#opts = { connectTimeoutMs: 10000, requestTimeoutMs: 10000, reconnect: true, ...options };
  }

  get state(): ConnectionState {
    return this.#state;
  }

  /** The heartbeat interval the server announced (ms); 0 before the first connection. */
  get heartbeatIntervalMs(): number {
    return this.#heartbeatMs;
  }

  // ------------------------------------------------------------ connecting

  /**
   * connect opens the connection. It resolves on the server's `connected`
   * frame and rejects with the first attempt's failure: 'unauthorized',
   * 'unavailable' or 'timeout'. With `reconnect` (the default) a failed
   * attempt other than 'unauthorized' without getToken is retried in the
   * background (state 'reconnecting'); call close() to give up.
   */
  connect(): Promise<void> {
    if (this.#state === 'connected') return Promise.resolve();
    const p = new Promise<void>((resolve, reject) => this.#waiters.push({ resolve, reject }));
    if (this.#state === 'idle' || this.#state === 'closed') {
      this.#attempt = 0;
      this.#expiredInARow = 0;
      this.#setState('connecting');
      void this.#startAttempt();
    } else if (this.#state === 'reconnecting' && this.#retryTimer !== undefined) {
      // Waiting for a retry: try now instead (still one timer, one socket).
      clearTimeout(this.#retryTimer);
      this.#retryTimer = undefined;
      void this.#startAttempt();
    }
    return p;
  }

  /** close ends the connection for good: state 'closed', no reconnect. */
  close(): void {
    if (this.#state === 'closed' || this.#state === 'idle') {
      this.#setState('closed');
      return;
    }
    const wasConnected = this.#state === 'connected';
    this.#gen++;
    this.#clearRetry();
    const ws = this.#ws;
    this.#ws = null;
    if (ws) {
      detach(ws);
      safeClose(ws, CloseCode.Normal, 'client closed');
    }
    const err = new ParleyError('disconnected', 'the client was closed');
    this.#lost(err);
    if (wasConnected) this.emit('disconnected', { code: CloseCode.Normal, reason: 'client closed', willReconnect: false });
    this.#rejectWaiters(err);
    this.#setState('closed', { code: CloseCode.Normal, reason: 'client closed' });
    for (const room of [...this.#rooms.values()]) room._closed(err);
    this.#rooms.clear();
  }

  async #token(): Promise<string | undefined> {
    if (this.#opts.getToken) return this.#opts.getToken();
    return this.#opts.token;
  }

  #wsUrl(token: string | undefined): string {
    if (token === undefined || token === '') return this.#opts.url;
    const sep = this.#opts.url.includes('?') ? '&' : '?';
    return `${this.#opts.url}${sep}token=${encodeURIComponent(token)}`;
  }

  async #startAttempt(): Promise<void> {
    const gen = ++this.#gen;
    let token: string | undefined;
    try {
      token = await this.#token();
      if (this.#opts.getToken && (typeof token !== 'string' || token === '')) {
        throw new ParleyError('unauthorized', 'getToken returned no token');
      }
    } catch (err) {
      if (gen !== this.#gen) return;
      const e = asParleyError(err, 'unavailable');
      // getToken saying 'unauthorized' (a revoked refresh token, say) will
      // not get better by retrying.
      this.#attemptFailed(gen, e, e.code === 'unauthorized');
      return;
    }
    if (gen !== this.#gen) return;

    const WS = this.#opts.WebSocket ?? (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
    if (!WS) {
      this.#attemptFailed(gen, new ParleyError('unavailable', 'no WebSocket class: pass options.WebSocket (in Node 20, the ws package)'), true);
      return;
    }
    let ws: WebSocketLike;
    try {
      ws = new WS(this.#wsUrl(token));
    } catch (err) {
      this.#attemptFailed(gen, asParleyError(err, 'bad_request'), true);
      return;
    }
    this.#ws = ws;
    let connected = false;
    const timer = setTimeout(() => {
      if (gen !== this.#gen || this.#ws !== ws) return;
      this.#ws = null;
      detach(ws);
      safeClose(ws, CloseCode.Normal, 'connect timeout');
      this.#attemptFailed(gen, new ParleyError('timeout', `no connected frame within ${this.#opts.connectTimeoutMs} ms`));
    }, this.#opts.connectTimeoutMs);

    ws.onopen = noop;
    ws.onerror = noop; // a close event follows every error
    ws.onmessage = (ev: { data?: unknown }) => {
      if (gen !== this.#gen || this.#ws !== ws) return;
      const env = parseEnvelope(ev?.data);
      if (!env) return;
      if (!connected) {
        // The first frame is `connected`; nothing else may come before it.
        const d = env.data as Partial<ConnectedData> | undefined;
        if (env.type !== 'connected' || !d || typeof d.connection_id !== 'string' || typeof d.user_id !== 'string') return;
        connected = true;
        clearTimeout(timer);
        this.#lastRx = Date.now();
        this.#onConnected(d as ConnectedData);
        this.#startKeepalive(ws);
        return;
      }
      this.#lastRx = Date.now();
      this.#receive(env);
    };
    ws.onclose = (ev: { code?: unknown; reason?: unknown }) => {
      if (gen !== this.#gen || this.#ws !== ws) return;
      clearTimeout(timer);
      this.#ws = null;
      detach(ws);
      const code = typeof ev?.code === 'number' ? ev.code : CloseCode.Abnormal;
      const reason = typeof ev?.reason === 'string' ? ev.reason : '';
      if (connected) {
        this.#onSocketClosed(code, reason);
        return;
      }
      // Failed before `connected`: a 401 and a dead server look the same
      // to a WebSocket, so ask /api/me with the same token.
      void this.#probe(token).then((err) => {
        if (gen !== this.#gen) return;
        this.#attemptFailed(gen, err, err.code === 'unauthorized' && !this.#opts.getToken);
      });
    };
  }

  /** probe tells 'unauthorized' (HTTP 401 from /api/me) from 'unavailable'. */
  async #probe(token: string | undefined): Promise<ParleyError> {
    const f = this.#opts.fetch ?? (globalThis as { fetch?: FetchLike }).fetch;
    if (!f) return new ParleyError('unavailable', 'could not connect');
    let base: string;
    try {
      base = this.#opts.httpUrl ?? httpBaseOf(this.#opts.url);
    } catch {
      return new ParleyError('unavailable', 'could not connect');
    }
    const ctl = typeof AbortController === 'function' ? new AbortController() : undefined;
    const timer = setTimeout(() => ctl?.abort(), Math.min(this.#opts.connectTimeoutMs, 5000));
    try {
      const res = await f(`${base.replace(/\/$/, '')}/api/me`, {
        headers: token ? { Authorization: `Bearer ${token}` } : {},
        signal: ctl?.signal,
      });
      try {
        await res.body?.cancel();
      } catch {
        /* ignore */
      }
      if (res.status === 401) return new ParleyError('unauthorized', 'the server refused the token (401)', 401);
      return new ParleyError('unavailable', `could not connect (the server answered /api/me with ${res.status})`, res.status);
    } catch {
      return new ParleyError('unavailable', 'the server cannot be reached');
    } finally {
      clearTimeout(timer);
    }
  }

  /** attemptFailed handles an attempt that never got `connected`. */
  #attemptFailed(gen: number, err: ParleyError, fatal = false): void {
    if (gen !== this.#gen) return;
    this.#rejectWaiters(err);
    if (fatal || !this.#opts.reconnect) {
      this.#toClosed(err);
      return;
    }
    this.emit('error', err);
    this.#scheduleRetry(err);
  }

  #scheduleRetry(err?: ParleyError, code?: number, reason?: string, immediate = false): void {
    this.#clearRetry();
    const { initialMs = 500, maxMs = 15000 } = this.#opts.backoff ?? {};
    const delay = immediate ? 0 : backoffDelay(this.#attempt++, initialMs, maxMs);
    this.#setState('reconnecting', { error: err, code, reason });
    const gen = this.#gen;
    this.#retryTimer = setTimeout(() => {
      this.#retryTimer = undefined;
      if (gen !== this.#gen || this.#state !== 'reconnecting') return;
      void this.#startAttempt();
    }, delay);
  }

  #clearRetry(): void {
    if (this.#retryTimer !== undefined) clearTimeout(this.#retryTimer);
    this.#retryTimer = undefined;
  }

  #onConnected(d: ConnectedData): void {
    this.connectionId = d.connection_id;
    this.userId = d.user_id;
    const hb = d.heartbeat_interval_ms;
    if (typeof hb === 'number' && Number.isFinite(hb) && hb > 0) this.#heartbeatMs = Math.min(HEARTBEAT_MAX_MS, Math.max(HEARTBEAT_MIN_MS, hb));
    this.#connectedAt = Date.now();
    this.#setState('connected');
    const waiters = this.#waiters;
    this.#waiters = [];
    // Rooms re-join first (their frames go out in order), then the app hears of it.
    for (const room of this.#rooms.values()) room._connected();
    this.emit('connected', { connectionId: d.connection_id, userId: d.user_id });
    for (const w of waiters) w.resolve();
  }

  /** startKeepalive pings a quiet connection and replaces it when the ping goes unanswered. */
  #startKeepalive(ws: WebSocketLike): void {
    const every = this.#opts.keepaliveMs ?? (this.#heartbeatMs > 0 ? this.#heartbeatMs : 30000);
    if (!(every > 0) || this.#ws !== ws) return;
    this.#keepalive = setInterval(() => {
      if (this.#ws !== ws || this.#state !== 'connected' || Date.now() - this.#lastRx < every) return;
      this._request('ping', undefined, { timeoutMs: Math.min(every, 10000) }).promise.catch((err: ParleyError) => {
        if (err.code !== 'timeout' || this.#ws !== ws) return;
        // Nothing came back: a dead (half-open) connection. Replace it.
        this.#ws = null;
        detach(ws);
        safeClose(ws, CloseCode.HeartbeatMissed, 'keepalive timeout');
        this.#onSocketClosed(CloseCode.HeartbeatMissed, 'no answer to a keepalive ping');
      });
    }, every);
  }

  /** onSocketClosed handles the close of a connection that got `connected`. */
  #onSocketClosed(code: number, reason: string): void {
    const lived = Date.now() - this.#connectedAt;
    const err = new ParleyError('disconnected', `connection closed (${code}${reason ? ': ' + reason : ''})`);
    this.#lost(err);
    const getToken = this.#opts.getToken;
    let willReconnect = this.#opts.reconnect;
    let final: ParleyError | undefined;
    if (code === CloseCode.Disconnected) {
      willReconnect = false;
      final = new ParleyError('disconnected', `disconnected by the server (4003${reason ? ': ' + reason : ''})`);
    } else if (code === CloseCode.TokenExpired && !getToken) {
      willReconnect = false;
      final = new ParleyError('unauthorized', 'the token expired or was revoked (4001) and there is no getToken');
    }
    this.emit('disconnected', { code, reason, willReconnect });
    for (const room of this.#rooms.values()) room._disconnected();
    if (!willReconnect) {
      const e = final ?? err;
      if (final) this.emit('error', final);
      this.#toClosed(e, code, reason);
      return;
    }
    const stable = lived >= STABLE_MS;
    if (stable && !ABUSE_CLOSES.has(code)) this.#attempt = 0;
    if (stable) this.#expiredInARow = 0;
    // 4001: a fresh token now (getToken is called by the attempt), no wait;
    // but a 4001 again soon after (a token that expires at once, clock skew,
    // a caching getToken, a misbehaving server) backs off like any close,
    // never a tight loop against the app's token endpoint.
    const immediate = code === CloseCode.TokenExpired && this.#expiredInARow === 0;
    if (code === CloseCode.TokenExpired) this.#expiredInARow++;
    this.#scheduleRetry(err, code, reason, immediate);
  }

  /** lost clears what belonged to the socket that is gone. */
  #lost(err: ParleyError): void {
    this.connectionId = null;
    if (this.#keepalive !== undefined) clearInterval(this.#keepalive);
    this.#keepalive = undefined;
    const pending = [...this.#pending.values()];
    this.#pending.clear();
    for (const p of pending) {
      if (p.timer !== undefined) clearTimeout(p.timer);
      p.reject(err);
    }
    for (const t of this.#typing.values()) t._reset();
  }

  #toClosed(err: ParleyError, code?: number, reason?: string): void {
    this.#gen++;
    this.#clearRetry();
    const ws = this.#ws;
    this.#ws = null;
    if (ws) {
      detach(ws);
      safeClose(ws, CloseCode.Normal, 'closing');
    }
    this.#lost(err);
    this.#rejectWaiters(err);
    this.#setState('closed', { error: err, code, reason });
    for (const room of [...this.#rooms.values()]) room._closed(err);
    this.#rooms.clear();
  }

  #rejectWaiters(err: ParleyError): void {
    const waiters = this.#waiters;
    this.#waiters = [];
    for (const w of waiters) w.reject(err);
  }

  #setState(state: ConnectionState, extra: { error?: ParleyError; code?: number; reason?: string } = {}): void {
    const previous = this.#state;
    if (previous === state) return;
    this.#state = state;
    const ev: StateChange = { state, previous };
    if (extra.code !== undefined) ev.code = extra.code;
    if (extra.reason !== undefined) ev.reason = extra.reason;
    if (extra.error !== undefined) ev.error = extra.error;
    this.emit('state', ev);
  }

  // ------------------------------------------------------------ messages

  #receive(env: Envelope): void {
    const data = env.data;
    // Room frames go to their room first (it matches its own replies by id).
    if (env.type.startsWith('room:') && data !== null && typeof data === 'object') {
      const roomId = (data as { room_id?: unknown }).room_id;
      if (typeof roomId === 'string') {
        const room = this.#rooms.get(roomId);
        if (room) {
          try {
            room._receive(env);
          } catch (err) {
            this.onHandlerError(err, env.type);
          }
        }
      }
    }
    let replied = false;
    if (env.id !== undefined) {
      const p = this.#pending.get(env.id);
      if (p) {
        this.#pending.delete(env.id);
        if (p.timer !== undefined) clearTimeout(p.timer);
        replied = true;
        if (env.type === 'error') p.reject(errorFrom(env));
        else p.resolve(env);
      }
    }
    if (env.type === 'error') {
      if (!replied) this.emit('error', errorFrom(env));
    } else if (!OWN_EVENTS.has(env.type)) {
      this.emit(env.type as keyof WireEvents, data as never);
    }
    this.emit('message', env);
  }

  /**
   * request sends `{type, id, data}` and resolves with the one reply (its
   * envelope). An `error` reply rejects with a ParleyError carrying the
   * server's code; no reply within the timeout rejects with 'timeout'; the
   * socket closing first rejects with 'disconnected'.
   */
  request<T extends ClientMessageType>(type: T, data?: ClientMessages[T], options: RequestOptions = {}): Promise<ReplyEnvelope<T>> {
    return this._request(type, data, options).promise as Promise<ReplyEnvelope<T>>;
  }

  /** @internal request that also tells the id it used. */
  _request(type: string, data: unknown, options: RequestOptions = {}): { id: string; promise: Promise<Envelope> } {
    const id = `${this.#nextId++}`;
    const ws = this.#ws;
    if (this.#state !== 'connected' || !ws) {
      return { id, promise: Promise.reject(new ParleyError('disconnected', `not connected (${type})`)) };
    }
    const promise = new Promise<Envelope>((resolve, reject) => {
      const timeoutMs = options.timeoutMs ?? this.#opts.requestTimeoutMs;
      const timer =
        timeoutMs > 0
          ? setTimeout(() => {
              if (this.#pending.delete(id)) reject(new ParleyError('timeout', `no reply to ${type} within ${timeoutMs} ms`));
            }, timeoutMs)
          : undefined;
      this.#pending.set(id, { resolve, reject, timer, type });
      try {
        ws.send(JSON.stringify(data === undefined ? { type, id } : { type, id, data }));
      } catch (err) {
        this.#pending.delete(id);
        if (timer !== undefined) clearTimeout(timer);
        reject(new ParleyError('disconnected', `send failed: ${asParleyError(err).message}`));
      }
    });
    return { id, promise };
  }

  /** send sends a message without an id (no reply); dropped while not connected. Returns whether it was sent. */
  send<T extends ClientMessageType>(type: T, data?: ClientMessages[T]): boolean {
    const ws = this.#ws;
    if (this.#state !== 'connected' || !ws) return false;
    try {
      ws.send(JSON.stringify(data === undefined ? { type } : { type, data }));
      return true;
    } catch {
      return false;
    }
  }

  // ------------------------------------------------------------ rooms, status, typing

  /**
   * joinRoom joins roomId (or returns the room already joined) and resolves
   * once its state arrived. While the client is connecting or reconnecting,
   * the join goes out as soon as it is connected.
   */
  joinRoom(roomId: string, options: JoinOptions = {}): Promise<Room> {
    if (this.#state === 'closed' || this.#state === 'idle') {
      return Promise.reject(new ParleyError('disconnected', 'connect() first'));
    }
    let room = this.#rooms.get(roomId);
    if (!room) {
      room = new Room(this, roomId, options, () => {
        if (this.#rooms.get(roomId) === room) this.#rooms.delete(roomId);
      });
      this.#rooms.set(roomId, room);
      if (this.#state === 'connected') room._connected();
    }
    return room._ready().then(() => room);
  }

  /** room returns the Room for roomId when it was joined through this client. */
  room(roomId: string): Room | undefined {
    return this.#rooms.get(roomId);
  }

  /** rooms lists the rooms this client is in (or re-joining). */
  rooms(): Room[] {
    return [...this.#rooms.values()];
  }

  /** setStatus sets the user's status (presence:update). */
  async setStatus(status: UserStatus): Promise<void> {
    await this.request('presence:update', { presence: status });
  }

  /** typing returns the typing helper of roomId (one per room). */
  typing(roomId: string): Typing {
    let t = this.#typing.get(roomId);
    if (!t) {
      t = new Typing(this, roomId);
      this.#typing.set(roomId, t);
    }
    return t;
  }

  /** @internal errors that belong to no request. */
  _error(err: unknown): void {
    this.emit('error', asParleyError(err));
  }
}

function detach(ws: WebSocketLike): void {
  // No-ops, not null: the ws package throws on an 'error' event without a
  // listener, and a detached socket may still emit one while it closes.
  ws.onopen = noop;
  ws.onmessage = noop;
  ws.onclose = noop;
  ws.onerror = noop;
}

function safeClose(ws: WebSocketLike, code: number, reason: string): void {
  try {
    ws.close(code, reason);
  } catch {
    /* already closed */
  }
}

// ParleyAPI: the REST API (docs/protocol.md §7) over fetch. Errors reject
// with a ParleyError carrying the body's `error` code and the HTTP status;
// a server that cannot be reached is 'unavailable'.

import { ParleyError } from './errors.js';
import type {
  CallParticipant,
  CallStartResult,
  JsonPatchOp,
  Message,
  MintTokenRequest,
  MintedToken,
  Page,
  RoomInfo,
  StorageSnapshot,
  TokenPair,
  User,
  UserPresence,
} from './protocol.js';
import type { FetchLike } from './client.js';

export interface ParleyAPIOptions {
  /** http(s)://host (the REST API is under /api). */
  baseUrl: string;
  /** A fixed bearer token: a user's access token, or the server API key. */
  token?: string;
  /** Called for each request when set (and no login/refresh pair is held). */
  getToken?: () => Promise<string>;
  /** Default globalThis.fetch. */
  fetch?: FetchLike;
}

/** What messages.send needs of a ParleyClient (to skip echoing to it and to end its typing). */
export interface MessageSender {
  readonly connectionId: string | null;
  typing(roomId: string): { _messageSent(): void };
}

export interface SendOptions {
  /** Sets X-Connection-Id: that connection gets no message:create echo. */
  connectionId?: string;
  /** The ParleyClient writing: its connection id is used, and its typing indicator in the room ends. */
  client?: MessageSender;
}

interface RequestInit2 {
  method?: string;
  body?: unknown;
  auth?: boolean;
  headers?: Record<string, string>;
}

const enc = encodeURIComponent;

export class ParleyAPI {
  /** The current login pair (register, login, refresh); null before and after logout. */
  tokens: TokenPair | null = null;

  readonly #baseUrl: string;
  readonly #opts: ParleyAPIOptions;
  #expiresAt = 0;
  #listeners = new Set<(t: TokenPair | null) => void>();
  #refreshing: Promise<TokenPair> | null = null;

  constructor(options: ParleyAPIOptions) {
    if (!options || typeof options.baseUrl !== 'string') throw new TypeError('ParleyAPI: options.baseUrl is required');
    this.#opts = options;
    this.#baseUrl = options.baseUrl.replace(/\/+$/, '');
  }

  /** onTokens calls fn after every login, register, refresh and logout; returns an unsubscribe function. */
  onTokens(fn: (tokens: TokenPair | null) => void): () => void {
    this.#listeners.add(fn);
    return () => this.#listeners.delete(fn);
  }

  #setTokens(t: TokenPair | null): void {
    this.tokens = t;
    this.#expiresAt = t ? Date.now() + Math.max(0, t.expires_in) * 1000 : 0;
    for (const fn of [...this.#listeners]) {
      try {
        fn(t);
      } catch (err) {
        console.error('parley: an onTokens handler threw', err);
      }
    }
  }

  /**
   * getToken is a ParleyClient `getToken`: the current access token,
   * refreshed first when it expires within 30 s (one refresh at a time).
   */
  getToken = async (): Promise<string> => {
    if (this.tokens) {
      if (Date.now() > this.#expiresAt - 30_000) await this.refresh();
      if (this.tokens) return this.tokens.access_token;
    }
    const t = await this.#token();
    if (!t) throw new ParleyError('unauthorized', 'no token: log in first');
    return t;
  };

  async #token(): Promise<string | undefined> {
    if (this.tokens) return this.tokens.access_token;
    if (this.#opts.getToken) return this.#opts.getToken();
    return this.#opts.token;
  }

  async #request<T>(path: string, init: RequestInit2 = {}): Promise<T> {
    const f = this.#opts.fetch ?? (globalThis as { fetch?: FetchLike }).fetch;
    if (!f) throw new ParleyError('unavailable', 'no fetch: pass options.fetch');
    const headers: Record<string, string> = { ...init.headers };
    if (init.auth !== false) {
      const token = await this.#token();
      if (token) headers.Authorization = `Bearer ${token}`;
    }
    let body: string | undefined;
    if (init.body !== undefined) {
      headers['Content-Type'] = 'application/json';
      body = JSON.stringify(init.body);
    }
    let res: Response;
    try {
      res = await f(this.#baseUrl + path, { method: init.method ?? 'GET', headers, body });
    } catch (err) {
      throw new ParleyError('unavailable', `${init.method ?? 'GET'} ${path}: ${err instanceof Error ? err.message : String(err)}`);
    }
    const text = await res.text().catch(() => '');
    let parsed: unknown = undefined;
    if (text !== '') {
      try {
        parsed = JSON.parse(text);
      } catch {
        parsed = undefined;
      }
    }
    if (!res.ok) {
      const b = parsed as { error?: unknown; message?: unknown } | undefined;
      const code = b && typeof b.error === 'string' ? b.error : `http_${res.status}`;
      const message = b && typeof b.message === 'string' ? b.message : `${init.method ?? 'GET'} ${path}: HTTP ${res.status}`;
      throw new ParleyError(code, message, res.status);
    }
    if (res.status === 204 || text === '') return undefined as T;
    if (parsed === undefined) throw new ParleyError('internal', `${path}: the answer is not JSON`, res.status);
    return parsed as T;
  }

  // ------------------------------------------------------------ accounts

  async register(req: { username: string; password: string; displayName?: string }): Promise<TokenPair> {
    const body: Record<string, string> = { username: req.username, password: req.password };
    if (req.displayName !== undefined) body.display_name = req.displayName;
    const pair = await this.#request<TokenPair>('/api/auth/register', { method: 'POST', body, auth: false });
    this.#setTokens(pair);
    return pair;
  }

  async login(req: { username: string; password: string }): Promise<TokenPair> {
    const pair = await this.#request<TokenPair>('/api/auth/login', {
      method: 'POST',
      body: { username: req.username, password: req.password },
      auth: false,
    });
    this.#setTokens(pair);
    return pair;
  }

  /**
   * refresh trades a refresh token (default: the current pair's) for a new
   * pair and keeps it. The old refresh token is consumed: presenting it
   * again is 401 and revokes every refresh token of the user.
   */
  refresh(refreshToken?: string): Promise<TokenPair> {
    const rt = refreshToken ?? this.tokens?.refresh_token;
    if (!rt) return Promise.reject(new ParleyError('unauthorized', 'no refresh token'));
    if (refreshToken === undefined && this.#refreshing) return this.#refreshing;
    const p = this.#request<TokenPair>('/api/auth/refresh', { method: 'POST', body: { refresh_token: rt }, auth: false }).then(
      (pair) => {
        this.#setTokens(pair);
        return pair;
      },
    );
    if (refreshToken === undefined) {
      this.#refreshing = p;
      const clear = (): void => {
        if (this.#refreshing === p) this.#refreshing = null;
      };
      p.then(clear, clear);
    }
    return p;
  }

  /** logout deletes the current refresh token and forgets the pair. */
  async logout(): Promise<void> {
    const rt = this.tokens?.refresh_token;
    if (rt) await this.#request<void>('/api/auth/logout', { method: 'POST', body: { refresh_token: rt }, auth: false });
    this.#setTokens(null);
  }

  me(): Promise<User> {
    return this.#request<User>('/api/me');
  }

  /** mintToken (API key): an access token for any user id. */
  mintToken(req: MintTokenRequest): Promise<MintedToken> {
    return this.#request<MintedToken>('/api/tokens', { method: 'POST', body: req });
  }

  /** presence: the statuses of up to 100 users, as the caller may see them. */
  async presence(userIds: string[]): Promise<UserPresence[]> {
    const r = await this.#request<{ items: UserPresence[] }>(`/api/presence?user_ids=${userIds.map(enc).join(',')}`);
    return r.items;
  }

  // ------------------------------------------------------------ rooms

  readonly rooms = {
    create: (req: { id?: string; name: string; open?: boolean }): Promise<RoomInfo> =>
      this.#request<RoomInfo>('/api/rooms', { method: 'POST', body: req }),
    list: (): Promise<Page<RoomInfo>> => this.#request<Page<RoomInfo>>('/api/rooms'),
    get: (id: string): Promise<RoomInfo> => this.#request<RoomInfo>(`/api/rooms/${enc(id)}`),
    join: (id: string): Promise<void> => this.#request<void>(`/api/rooms/${enc(id)}/join`, { method: 'POST' }),
    leave: (id: string): Promise<void> => this.#request<void>(`/api/rooms/${enc(id)}/leave`, { method: 'POST' }),
  };

  readonly members = {
    add: (roomId: string, userId: string): Promise<void> =>
      this.#request<void>(`/api/rooms/${enc(roomId)}/members`, { method: 'POST', body: { user_id: userId } }),
    remove: (roomId: string, userId: string): Promise<void> =>
      this.#request<void>(`/api/rooms/${enc(roomId)}/members/${enc(userId)}`, { method: 'DELETE' }),
  };

  readonly messages = {
    send: (roomId: string, msg: { content: string; nonce?: string }, options: SendOptions = {}): Promise<Message> => {
      const connectionId = options.connectionId ?? options.client?.connectionId ?? undefined;
      const headers: Record<string, string> = connectionId ? { 'X-Connection-Id': connectionId } : {};
      const body: { content: string; nonce?: string } = { content: msg.content };
      if (msg.nonce !== undefined) body.nonce = msg.nonce;
      return this.#request<Message>(`/api/rooms/${enc(roomId)}/messages`, { method: 'POST', body, headers }).then((m) => {
        // The server ends the author's typing in that room after the post.
        options.client?.typing(roomId)._messageSent();
        return m;
      });
    },
    list: (roomId: string, q: { before?: string; limit?: number } = {}): Promise<Page<Message>> => {
      const params: string[] = [];
      if (q.before !== undefined) params.push(`before=${enc(q.before)}`);
      if (q.limit !== undefined) params.push(`limit=${enc(String(q.limit))}`);
      return this.#request<Page<Message>>(`/api/rooms/${enc(roomId)}/messages${params.length ? '?' + params.join('&') : ''}`);
    },
    edit: (roomId: string, messageId: string, content: string): Promise<Message> =>
      this.#request<Message>(`/api/rooms/${enc(roomId)}/messages/${enc(messageId)}`, { method: 'PATCH', body: { content } }),
    delete: (roomId: string, messageId: string): Promise<void> =>
      this.#request<void>(`/api/rooms/${enc(roomId)}/messages/${enc(messageId)}`, { method: 'DELETE' }),
  };

  readonly storage = {
    get: (roomId: string): Promise<StorageSnapshot> => this.#request<StorageSnapshot>(`/api/rooms/${enc(roomId)}/storage`),
    patch: (roomId: string, ops: JsonPatchOp[], options: { baseVersion?: number } = {}): Promise<{ version: number }> =>
      this.#request<{ version: number }>(
        `/api/rooms/${enc(roomId)}/storage${options.baseVersion !== undefined ? `?base_version=${options.baseVersion}` : ''}`,
        { method: 'PATCH', body: ops },
      ),
  };

  readonly call = {
    start: (roomId: string): Promise<CallStartResult> =>
      this.#request<CallStartResult>(`/api/rooms/${enc(roomId)}/call/start`, { method: 'POST' }),
    join: (roomId: string, connectionId: string): Promise<{ joined: boolean }> =>
      this.#request<{ joined: boolean }>(`/api/rooms/${enc(roomId)}/call/join`, { method: 'POST', body: { connection_id: connectionId } }),
    leave: (roomId: string, connectionId?: string): Promise<{ left: boolean }> =>
      this.#request<{ left: boolean }>(`/api/rooms/${enc(roomId)}/call/leave`, {
        method: 'POST',
        body: connectionId !== undefined ? { connection_id: connectionId } : {},
      }),
    end: (roomId: string): Promise<{ ended: boolean }> =>
      this.#request<{ ended: boolean }>(`/api/rooms/${enc(roomId)}/call/end`, { method: 'POST' }),
    participants: (roomId: string): Promise<Page<CallParticipant>> =>
      this.#request<Page<CallParticipant>>(`/api/rooms/${enc(roomId)}/call/participants`),
  };
}


// Room: one joined room, mirrored. Members (by client id) with their
// presence, my own presence (kept current and sent again on every re-join),
// and the storage document: the confirmed version plus my pending batches
// applied on top (optimistic), rebased when another client's batch is
// ordered first and rolled back when the server refuses one of mine.

import type { ParleyClient } from './client.js';
import { Emitter } from './emitter.js';
import { ParleyError, asParleyError } from './errors.js';
import { applyPatch, applyPatchWithInverse, cloneJson, isObject, jsonEqual, setOwn } from './jsonpatch.js';
import type {
  Envelope,
  JsonObject,
  JsonPatchOp,
  JsonValue,
  Member,
  Presence,
  RoomStateData,
  ServerMessages,
  StorageUpdate,
} from './protocol.js';

export interface JoinOptions {
  /** My presence in the room, sent with the join (and with every re-join). */
  presence?: Presence;
  /**
   * Written once when the room's storage is still empty at version 0 (a
   * compare-and-set on version 0, so two first joiners cannot both write it):
   * each top-level key becomes an `add`.
   */
  initialStorage?: JsonObject;
  /**
   * Large rooms (docs/protocol.md "Large rooms"): when room:state lists only
   * a first page, the rest is fetched with room:members while the room has
   * at most this many members (default 1000; 0 never). Above it, `members`
   * holds the first page plus every client heard of since; page on with
   * `loadMembers()`.
   */
  membersAutoFetchLimit?: number;
}

export interface PatchOptions {
  /** Record the inverse on the undo stack. Default true. */
  undoable?: boolean;
  /** Compare-and-set: refused with 'version_conflict' unless the room is at this version. */
  baseVersion?: number;
}

export type RoomState = 'joining' | 'joined' | 'rejoining' | 'left';

export interface StorageEvent {
  /** The mirror: the confirmed document with my pending batches applied. */
  data: any;
  /** The last confirmed version. */
  version: number;
  /** True when my optimistic apply or a rollback caused it. */
  local: boolean;
  /** The ops that caused it (none for a full state). */
  ops: JsonPatchOp[];
  /** The writer's client id for a confirmed batch. */
  clientId?: string;
}

export interface RoomEvents {
  /** The whole member list, after every change. */
  members: Member[];
  joined: Member;
  left: { client_id: string; user_id: string };
  presence: ServerMessages['room:presence_updated'] & { local?: boolean };
  storage: StorageEvent;
  event: ServerMessages['room:event'];
  state: { state: RoomState; previous: RoomState };
  error: ParleyError;
}

interface Batch {
  ops: JsonPatchOp[];
  baseVersion?: number;
  status: 'queued' | 'sent';
  requestId?: string;
  /** The connection it was sent on. */
  sentOn?: string;
  /** Left out of the mirror: it does not apply on top of what is confirmed now. */
  skipped: boolean;
  /** The undo/redo stack entry this batch recorded, removed again if it fails. */
  entry?: { stack: JsonPatchOp[][]; ops: JsonPatchOp[] };
  resolve: (r: { version: number }) => void;
  reject: (e: ParleyError) => void;
}

interface PresencePatch {
  patch: JsonObject;
  requestId?: string;
  resolve: () => void;
  reject: (e: ParleyError) => void;
}

/** isCount: a version or member count from the server must be a safe, non-negative integer (else the value or frame is ignored). */
function isCount(v: unknown): v is number {
  return Number.isSafeInteger(v) && (v as number) >= 0;
}

/** str reads a string field of an untrusted object. */
function str(o: unknown, key: string): string | undefined {
  if (o === null || typeof o !== 'object' || !Object.hasOwn(o, key)) return undefined;
  const v = (o as Record<string, unknown>)[key];
  return typeof v === 'string' ? v : undefined;
}

function toMember(m: unknown): Member | undefined {
  const client_id = str(m, 'client_id');
  const user_id = str(m, 'user_id');
  if (client_id === undefined || user_id === undefined) return undefined;
  const o = m as Record<string, unknown>;
  const member: Member = {
    client_id,
    user_id,
    presence: isObject(o.presence) ? (cloneSafe(o.presence) as Presence) : {},
    joined_at: str(m, 'joined_at') ?? new Date().toISOString(),
  };
  const name = str(m, 'name');
  if (name !== undefined) member.name = name;
  return member;
}

function cloneSafe(v: unknown): JsonValue {
  try {
    return cloneJson(v);
  } catch {
    return null;
  }
}

/** mergePresence applies a shallow presence patch (null removes a key). */
function mergePresence(base: Presence, patch: JsonObject): Presence {
  const out: Presence = {};
  for (const k of Object.keys(base)) setOwn(out, k, base[k]);
  for (const k of Object.keys(patch)) {
    const v = patch[k];
    if (v === null) delete out[k];
    else setOwn(out, k, v);
  }
  return out;
}

export class Room extends Emitter<RoomEvents> {
  readonly id: string;
  /** My client_id in this room (this connection's id); null before the join. */
  connectionId: string | null = null;
  /** Everyone in the room (that I know of, in a paged large room), me included. */
  members = new Map<string, Member>();
  /** Clients in the room, me included (the server's member_count, kept current). */
  memberCount = 0;

  readonly #client: ParleyClient;
  readonly #unregister: () => void;
  #state: RoomState = 'joining';
  #joinedOnce = false;
  #readyWaiters: { resolve: () => void; reject: (e: ParleyError) => void }[] = [];
  #leaving = false;
  #initialStorage: JsonObject | undefined;
  #autoFetchLimit: number;
  #autoFetching = false;
  /** The cursor after the members known from room:state and pages ("" at the end). */
  membersNext = '';

  #presenceConfirmed: Presence;
  #presencePending: PresencePatch[] = [];
  #presence: Presence;

  #confirmed: JsonObject = {};
  #version = 0;
  #batches: Batch[] = [];
  #mirror: JsonObject = {};
  #undo: JsonPatchOp[][] = [];
  #redo: JsonPatchOp[][] = [];
  #resyncing = false;
  /** The pending join: its request id, the connection it went on, the old connection, the presence patches it carried. */
  #joinReq: { id: string; connection: string | null; old: string | null; carried: Set<PresencePatch> } | null = null;

  /** @internal rooms are made by ParleyClient.joinRoom. */
  constructor(client: ParleyClient, id: string, options: JoinOptions, unregister: () => void) {
    super();
    this.#client = client;
    this.id = id;
    this.#unregister = unregister;
    this.#presenceConfirmed = options.presence ? (cloneJson(options.presence) as Presence) : {};
    this.#presence = this.#presenceConfirmed;
    this.#initialStorage = options.initialStorage;
    this.#autoFetchLimit = options.membersAutoFetchLimit ?? 1000;
  }

  get state(): RoomState {
    return this.#state;
  }

  /** My presence, current (my pending updates included). */
  get presence(): Presence {
    return this.#presence;
  }

  /** The storage mirror: the confirmed document with my pending batches applied. */
  get storage(): any {
    return this.#mirror;
  }

  /** The last confirmed storage version. */
  get version(): number {
    return this.#version;
  }

  /** Batches of mine not yet confirmed. */
  get pendingBatches(): number {
    return this.#batches.length;
  }

  get canUndo(): boolean {
    return this.#undo.length > 0;
  }

  get canRedo(): boolean {
    return this.#redo.length > 0;
  }

  // ------------------------------------------------------------ lifecycle (called by the client)

  /** @internal resolves after the first successful join. */
  _ready(): Promise<void> {
    if (this.#joinedOnce) return Promise.resolve();
    if (this.#state === 'left') return Promise.reject(new ParleyError('disconnected', 'the room was left'));
    return new Promise((resolve, reject) => this.#readyWaiters.push({ resolve, reject }));
  }

  /** @internal the client got (or got back) its connection: join. */
  _connected(): void {
    if (this.#state === 'left') return;
    this.#join(this.#joinedOnce ? this.#version : undefined, this.connectionId);
  }

  /** @internal the connection dropped; the client will reconnect. */
  _disconnected(): void {
    if (this.#state === 'left') return;
    this.#setState(this.#joinedOnce ? 'rejoining' : 'joining');
  }

  /** @internal the client closed for good. */
  _closed(err: ParleyError): void {
    this.#final(err);
  }

  #join(sinceVersion: number | undefined, oldConnection: string | null): void {
    this.#setState(this.#joinedOnce ? 'rejoining' : 'joining');
    const data: { room_id: string; presence?: Presence; since_version?: number } = { room_id: this.id };
    if (Object.keys(this.#presence).length > 0) data.presence = this.#presence;
    if (sinceVersion !== undefined) data.since_version = sinceVersion;
    const { id, promise } = this.#client._request('room:join', data);
    const connection = this.#client.connectionId;
    // A re-join on a new connection: the old one is gone, so batches sent
    // on it that are not in the catch-up were never applied.
    const old = oldConnection && oldConnection !== connection ? oldConnection : null;
    this.#joinReq = { id, connection, old, carried: new Set(this.#presencePending) };
    promise.then(
      () => {
        // The reply was taken synchronously by _receive (frames that follow
        // it in the same read must see the new state).
      },
      (err: ParleyError) => {
        if (this.#state === 'left' || this.#joinReq?.id !== id) return;
        this.#joinReq = null;
        if (err.code === 'disconnected') return; // joins again on the next connection
        if (err.code === 'timeout' || err.code === 'internal' || err.code === 'rate_limited') {
          // Cluster moves answer internal "retry"; a lost join has no answer.
          this.emit('error', err);
          if (this.#client.connectionId === connection) setTimeout(() => this._retryJoin(connection), 1000);
          return;
        }
        this.#final(err);
      },
    );
  }

  /** @internal */
  _retryJoin(connection: string | null): void {
    if (this.#state === 'left' || this.#client.connectionId !== connection || connection === null) return;
    if (this.#state === 'joined') return;
    this.#join(this.#joinedOnce ? this.#version : undefined, null);
  }

  /** final: the room is gone for this client (left, refused, client closed). */
  #final(err: ParleyError): void {
    if (this.#state === 'left') return;
    this.#setState('left');
    this.#unregister();
    const waiters = this.#readyWaiters;
    this.#readyWaiters = [];
    for (const w of waiters) w.reject(err);
    const batches = this.#batches;
    this.#batches = [];
    for (const b of batches) b.reject(err);
    const patches = this.#presencePending;
    this.#presencePending = [];
    for (const p of patches) p.reject(err);
  }

  #setState(state: RoomState): void {
    const previous = this.#state;
    if (previous === state) return;
    this.#state = state;
    this.emit('state', { state, previous });
  }

  // ------------------------------------------------------------ state

  /**
   * applyState takes a room:state (the reply to a join, or an unsolicited
   * one after a cluster resync). oldConnection is set for a re-join on a
   * new connection: my batches sent on the old one are matched against the
   * catch-up by their ops; those not in it were never applied.
   */
  #applyState(st: RoomStateData, oldConnection: string | null, carried: Set<PresencePatch>): void {
    if (!st || typeof st !== 'object') return;
    const clientId = str(st, 'client_id');
    if (clientId !== undefined) this.connectionId = clientId;
    const members = new Map<string, Member>();
    if (Array.isArray(st.members)) {
      for (const raw of st.members) {
        const m = toMember(raw);
        if (m) members.set(m.client_id, m);
      }
    }
    this.members = members;
    this.memberCount = isCount(st.member_count) && st.member_count >= members.size ? st.member_count : members.size;

    // Storage.
    const storage = st.storage as { version?: unknown; data?: unknown; updates?: unknown } | undefined;
    let ok = false;
    let full = false;
    if (storage && isCount(storage.version)) {
      if (Array.isArray(storage.updates)) {
        ok = this.#catchUp(storage.updates as StorageUpdate[], storage.version, oldConnection ?? this.connectionId, oldConnection !== null);
      } else if (isObject(storage.data)) {
        this.#confirmed = cloneJson(storage.data) as JsonObject;
        this.#version = storage.version;
        ok = full = true;
      }
    }
    if (!ok) {
      // A gap or a batch this mirror cannot apply: ask for the whole
      // document (still telling the join which connection is gone).
      this.#resync(true, oldConnection);
      return;
    }
    if (oldConnection) {
      for (const b of [...this.#batches]) {
        if (b.status !== 'sent' || b.sentOn !== oldConnection) continue;
        if (full) {
          // Unknown outcome: if it was applied, it is in the document.
          this.#drop(b, new ParleyError('disconnected', 'the connection closed before the batch was confirmed'));
        } else {
          b.status = 'queued'; // not in the catch-up: never applied; send again
          b.requestId = undefined;
          b.sentOn = undefined;
        }
      }
    }

    // My presence: the server's copy is confirmed; the patches the join
    // carried (merged into the presence it sent) are applied now.
    const me = this.connectionId ? this.members.get(this.connectionId) : undefined;
    if (me) this.#presenceConfirmed = me.presence;
    if (carried.size > 0) {
      this.#presencePending = this.#presencePending.filter((p) => !carried.has(p));
      for (const p of carried) p.resolve();
    }
    for (const p of this.#presencePending) {
      // Sent on a connection that is gone and not carried: send again.
      if (oldConnection && p.requestId !== undefined) p.requestId = undefined;
    }
    this.#recomputePresence();

    this.#recompute();
    this.#resyncing = false;
    const first = !this.#joinedOnce;
    this.#joinedOnce = true;
    this.#setState('joined');
    this.emit('members', [...this.members.values()]);
    this.emit('storage', { data: this.#mirror, version: this.#version, local: false, ops: [] });
    this.membersNext = typeof st.members_next === 'string' ? st.members_next : '';
    this.#autoFetching = this.membersNext !== '' && this.memberCount <= this.#autoFetchLimit;
    if (this.#autoFetching) this.#fetchMembers(this.membersNext);
    this.#flush();
    this.#flushPresence();
    if (first) {
      const waiters = this.#readyWaiters;
      this.#readyWaiters = [];
      for (const w of waiters) w.resolve();
      this.#writeInitialStorage();
    }
  }

  /**
   * catchUp applies the batches after my version; false on a gap or an op
   * this mirror cannot apply. Batches written by connection `mineOn` are
   * matched to my sent batches by their ops, in order.
   */
  #catchUp(updates: StorageUpdate[], version: number, mineOn: string | null, connectionGone: boolean): boolean {
    const oldConnection = mineOn;
    let confirmed = this.#confirmed;
    let v = this.#version;
    const mine: { batch: Batch; version: number }[] = [];
    const sentOld = oldConnection ? this.#batches.filter((b) => b.status === 'sent' && b.sentOn === oldConnection) : [];
    const refused: Batch[] = [];
    for (const u of updates) {
      if (!u || !isCount(u.version) || !Array.isArray(u.ops)) return false;
      if (u.version <= v) continue;
      if (u.version !== v + 1) return false;
      try {
        confirmed = applyPatch(confirmed, u.ops);
      } catch {
        return false;
      }
      v = u.version;
      if (oldConnection && u.client_id === oldConnection) {
        // My batches were applied in the order I sent them; one skipped
        // over was refused by the server.
        const i = sentOld.findIndex((b) => jsonEqual(b.ops, u.ops));
        if (i >= 0) {
          refused.push(...sentOld.splice(0, i));
          mine.push({ batch: sentOld.shift() as Batch, version: v });
        }
      }
    }
    if (v !== version) return false;
    this.#confirmed = confirmed;
    this.#version = v;
    // On a connection that is gone nobody will tell us why a skipped batch
    // was refused; on this one its error reply is on its way.
    if (connectionGone) for (const b of refused) this.#drop(b, new ParleyError('disconnected', 'the batch was refused while the connection was down'), false);
    for (const { batch, version } of mine) {
      this.#remove(batch);
      batch.resolve({ version });
    }
    return true;
  }

  /** resync joins again on this connection: with since_version, or for the whole document. */
  #resync(full: boolean, oldConnection: string | null = null): void {
    if (this.#state === 'left' || this.#client.state !== 'connected') return;
    if (this.#resyncing && !full) return;
    this.#resyncing = true;
    this.#join(full ? undefined : this.#version, oldConnection);
  }

  #fetchMembers(after: string): void {
    const { promise } = this.#client._request('room:members', { room_id: this.id, after, limit: 100 });
    promise.then(
      () => {
        /* handled in _receive (room:members_page) */
      },
      (err) => this.emit('error', asParleyError(err)),
    );
  }

  /**
   * Fetches the next page of a large room's members (after `membersNext`)
   * into `members`. Resolves with the page and the new `membersNext`
   * ("" at the end). Errors: ParleyError from room:members.
   */
  async loadMembers(limit = 100): Promise<{ members: Member[]; next: string }> {
    const data: { room_id: string; after?: string; limit: number } = { room_id: this.id, limit };
    if (this.membersNext !== '') data.after = this.membersNext;
    const reply = await this.#client._request('room:members', data).promise;
    const d = (reply.data ?? {}) as Record<string, unknown>;
    const list = (Array.isArray(d.members) ? d.members : []).map(toMember).filter((m): m is Member => m !== undefined);
    const next = typeof d.next_after === 'string' ? d.next_after : '';
    return { members: list, next };
  }

  // ------------------------------------------------------------ frames

  /** @internal every room:* frame for this room (and replies to its requests). */
  _receive(env: Envelope): void {
    if (this.#state === 'left') return;
    const d = env.data as Record<string, unknown>;
    switch (env.type) {
      case 'room:state': {
        const req = this.#joinReq;
        if (req && env.id === req.id) {
          this.#joinReq = null;
          if (this.#leaving) return; // leave() follows it on the wire
          this.#applyState(d as unknown as RoomStateData, req.old, req.carried);
        } else if (env.id === undefined) {
          // Unsolicited: a cluster resync of this room.
          this.#applyState(d as unknown as RoomStateData, null, new Set());
        }
        return;
      }
      case 'room:joined': {
        const m = toMember({ ...d, joined_at: str(d, 'joined_at') ?? new Date().toISOString() });
        if (!m) return;
        // A known client id is an update (cluster moves), not a second member.
        if (!this.members.has(m.client_id)) this.memberCount++;
        this.members.set(m.client_id, m);
        this.emit('joined', m);
        this.emit('members', [...this.members.values()]);
        return;
      }
      case 'room:left': {
        const client_id = str(d, 'client_id');
        const user_id = str(d, 'user_id') ?? '';
        if (client_id === undefined) return;
        if (client_id === this.connectionId) {
          this.#selfLeft(env);
          return;
        }
        this.#removeMember(client_id);
        this.emit('left', { client_id, user_id });
        this.emit('members', [...this.members.values()]);
        return;
      }
      case 'room:members_changed': {
        // A count that is not a safe integer: the frame is not to be trusted.
        if (Object.hasOwn(d, 'member_count') && !isCount(d.member_count)) return;
        const joined = Array.isArray(d.joined) ? d.joined : [];
        const left = Array.isArray(d.left) ? d.left : [];
        for (const raw of joined) {
          const m = toMember(raw);
          if (!m) continue;
          if (!this.members.has(m.client_id)) this.memberCount++;
          this.members.set(m.client_id, m);
          this.emit('joined', m);
        }
        for (const raw of left) {
          const client_id = str(raw, 'client_id');
          if (client_id === undefined || client_id === this.connectionId) continue;
          this.#removeMember(client_id);
          this.emit('left', { client_id, user_id: str(raw, 'user_id') ?? '' });
        }
        // The batch's count is the room's: entries may repeat what room:state said.
        if (isCount(d.member_count)) this.memberCount = d.member_count;
        this.emit('members', [...this.members.values()]);
        return;
      }
      case 'room:presence_batch': {
        const updates = Array.isArray(d.updates) ? d.updates : [];
        for (const u of updates) {
          if (!isObject(u) || str(u, 'client_id') === this.connectionId) continue; // mine came as my reply
          this.#onPresence({ type: 'room:presence_updated' }, { ...u, room_id: this.id });
        }
        return;
      }
      case 'room:members_page': {
        const list = Array.isArray(d.members) ? d.members : [];
        for (const raw of list) {
          const m = toMember(raw);
          if (m) this.members.set(m.client_id, m);
        }
        if (this.memberCount < this.members.size) this.memberCount = this.members.size;
        this.emit('members', [...this.members.values()]);
        const next = str(d, 'next_after');
        this.membersNext = next ?? '';
        if (next && this.#autoFetching) this.#fetchMembers(next);
        else this.#autoFetching = false;
        return;
      }
      case 'room:presence_updated':
        this.#onPresence(env, d);
        return;
      case 'room:storage_updated':
        this.#onStorage(env, d);
        return;
      case 'room:event': {
        if (!Object.hasOwn(d, 'event')) return;
        this.emit('event', d as unknown as ServerMessages['room:event']);
        return;
      }
    }
  }

  #removeMember(clientId: string): void {
    if (this.members.delete(clientId)) {
      this.memberCount = Math.max(this.members.size, this.memberCount - 1);
    } else if (this.memberCount > this.members.size) {
      this.memberCount--; // one I had not paged in
    }
  }

  #selfLeft(env: Envelope): void {
    if (this.#leaving && env.id !== undefined) return; // the reply to leave(); leave() finishes
    if (this.#leaving) return;
    // The server took me out (lost access, or an internal error in the
    // room: docs/protocol.md says to join again). Try once; a refusal ends it.
    // My batches in flight are matched against the catch-up (same client id).
    this.members.delete(this.connectionId ?? '');
    this.#join(this.#version, null);
  }

  #onPresence(env: Envelope, d: Record<string, unknown>): void {
    const client_id = str(d, 'client_id');
    if (client_id === undefined || !isObject(d.presence)) return;
    const presence = cloneSafe(d.presence) as Presence;
    if (client_id === this.connectionId) {
      this.#presenceConfirmed = presence;
      if (env.id !== undefined) {
        const i = this.#presencePending.findIndex((p) => p.requestId === env.id);
        if (i >= 0) {
          const [p] = this.#presencePending.splice(i, 1);
          p.resolve();
        }
      }
      this.#recomputePresence();
    } else {
      const m = this.members.get(client_id);
      if (m) m.presence = presence;
    }
    this.emit('presence', { ...(d as unknown as ServerMessages['room:presence_updated']), presence: client_id === this.connectionId ? this.#presence : presence });
  }

  #onStorage(env: Envelope, d: Record<string, unknown>): void {
    const version = d.version;
    const ops = d.ops;
    const clientId = str(d, 'client_id') ?? '';
    if (!isCount(version) || !Array.isArray(ops)) return;
    const mine =
      env.id !== undefined ? this.#batches.find((b) => b.status === 'sent' && b.requestId === env.id && b.sentOn === this.#client.connectionId) : undefined;
    if (version <= this.#version) {
      // Already in the document (a resync got there first).
      if (mine) {
        this.#remove(mine);
        mine.resolve({ version });
        this.#recompute();
      }
      return;
    }
    if (version !== this.#version + 1) {
      this.#resync(false); // a gap: catch up
      return;
    }
    try {
      this.#confirmed = applyPatch(this.#confirmed, ops as JsonPatchOp[]);
    } catch {
      this.#resync(true); // the server applied what this mirror cannot: take its document
      return;
    }
    this.#version = version;
    if (mine && this.#batches[0] === mine && !mine.skipped && !this.#batches.some((b) => b.skipped)) {
      // My oldest batch confirmed, nothing skipped: the mirror is unchanged.
      this.#batches.shift();
      mine.resolve({ version });
      this.emit('storage', { data: this.#mirror, version, local: false, ops: ops as JsonPatchOp[], clientId });
      return;
    }
    if (mine) {
      this.#remove(mine);
      mine.resolve({ version });
    }
    // Another client's batch ordered before my pending ones: rebase.
    this.#recompute();
    this.emit('storage', { data: this.#mirror, version, local: false, ops: ops as JsonPatchOp[], clientId });
  }

  // ------------------------------------------------------------ storage

  /** recompute: mirror = confirmed + my pending batches that still apply. */
  #recompute(): void {
    let doc = this.#confirmed;
    for (const b of [...this.#batches]) {
      try {
        doc = applyPatch(doc, b.ops);
        b.skipped = false;
      } catch (err) {
        if (b.status === 'queued') {
          // Not sent yet and it no longer applies: drop it.
          this.#drop(b, new ParleyError('conflict', `the batch no longer applies: ${asParleyError(err).message}`), false);
        } else {
          // Sent: the server decides; keep it out of the mirror meanwhile.
          b.skipped = true;
        }
      }
    }
    this.#mirror = doc;
  }

  #remove(b: Batch): void {
    const i = this.#batches.indexOf(b);
    if (i >= 0) this.#batches.splice(i, 1);
  }

  /** drop removes a batch, takes back its undo entry, rejects it, and (by default) recomputes. */
  #drop(b: Batch, err: ParleyError, recompute = true): void {
    this.#remove(b);
    if (b.entry) {
      const i = b.entry.stack.lastIndexOf(b.entry.ops);
      if (i >= 0) b.entry.stack.splice(i, 1);
    }
    b.reject(err);
    if (recompute) this.#recompute();
  }

  /**
   * patch applies a JSON Patch batch: at once to the mirror (the `storage`
   * event fires with local: true), then to the room in order. It resolves
   * with the version the server gave it, or rejects with the server's code
   * (the batch is rolled back) — or with the local error at once when it
   * does not apply to the mirror (nothing is sent).
   */
  patch(ops: JsonPatchOp[], options: PatchOptions = {}): Promise<{ version: number }> {
    return this.#submit(ops, options.undoable === false ? null : 'undo', true, options.baseVersion);
  }

  /** undo sends the inverse of my last undoable batch as a new batch; undefined when there is none. */
  undo(): Promise<void> | undefined {
    const ops = this.#undo.pop();
    if (!ops) return undefined;
    return this.#submit(ops, 'redo', false).then(() => undefined);
  }

  /** redo re-applies the last undone batch; undefined when there is none. */
  redo(): Promise<void> | undefined {
    const ops = this.#redo.pop();
    if (!ops) return undefined;
    return this.#submit(ops, 'undo', false).then(() => undefined);
  }

  #submit(opsIn: JsonPatchOp[], record: 'undo' | 'redo' | null, clearRedo: boolean, baseVersion?: number): Promise<{ version: number }> {
    if (this.#state === 'left') return Promise.reject(new ParleyError('disconnected', 'the room was left'));
    let ops: JsonPatchOp[];
    let doc: JsonObject;
    let inverse: JsonPatchOp[];
    try {
      ops = cloneJson(opsIn) as unknown as JsonPatchOp[];
      if (!Array.isArray(ops) || ops.length === 0) throw new ParleyError('bad_request', 'ops must be a non-empty array');
      ({ doc, inverse } = applyPatchWithInverse(this.#mirror, ops));
    } catch (err) {
      return Promise.reject(asParleyError(err, 'bad_request'));
    }
    return new Promise((resolve, reject) => {
      const batch: Batch = { ops, status: 'queued', skipped: false, resolve, reject };
      if (baseVersion !== undefined) batch.baseVersion = baseVersion;
      if (record) {
        const stack = record === 'undo' ? this.#undo : this.#redo;
        stack.push(inverse);
        batch.entry = { stack, ops: inverse };
        if (clearRedo) this.#redo = [];
      }
      this.#batches.push(batch);
      this.#mirror = doc;
      this.emit('storage', { data: doc, version: this.#version, local: true, ops });
      this.#flush();
    });
  }

  /** flush sends my queued batches, in order, while joined. */
  #flush(): void {
    if (this.#state !== 'joined' || this.#client.state !== 'connected') return;
    for (const b of this.#batches) {
      if (b.status !== 'queued') continue;
      const data: { room_id: string; ops: JsonPatchOp[]; base_version?: number } = { room_id: this.id, ops: b.ops };
      if (b.baseVersion !== undefined) data.base_version = b.baseVersion;
      const { id, promise } = this.#client._request('room:update_storage', data);
      b.status = 'sent';
      b.requestId = id;
      b.sentOn = this.#client.connectionId ?? undefined;
      promise.then(
        () => {
          // Confirmed in #onStorage, which sees the reply first. A reply it
          // could not place (a gap it is resyncing for) settles there later.
        },
        (err: ParleyError) => this.#batchFailed(b, id, err),
      );
    }
  }

  #batchFailed(b: Batch, id: string, err: ParleyError): void {
    if (!this.#batches.includes(b) || b.requestId !== id) return;
    if (err.code === 'disconnected') return; // settled by the re-join's catch-up
    if (err.code === 'timeout') {
      // No answer (a cluster owner died): the outcome is unknown. Take the
      // room's word for it: catch up, and let this promise go.
      this.#drop(b, err);
      this.emit('storage', { data: this.#mirror, version: this.#version, local: true, ops: [] });
      this.#resync(false);
      return;
    }
    // Refused: nothing was applied. Roll back.
    this.#drop(b, err);
    this.emit('storage', { data: this.#mirror, version: this.#version, local: true, ops: [] });
  }

  #writeInitialStorage(): void {
    const init = this.#initialStorage;
    this.#initialStorage = undefined;
    if (!init || this.#version !== 0 || Object.keys(this.#confirmed).length > 0) return;
    const ops: JsonPatchOp[] = [];
    for (const k of Object.keys(init)) {
      ops.push({ op: 'add', path: '/' + k.replace(/~/g, '~0').replace(/\//g, '~1'), value: init[k] });
    }
    if (ops.length === 0) return;
    this.#submit(ops, null, false, 0).catch((err: ParleyError) => {
      if (err.code !== 'version_conflict') this.emit('error', err);
    });
  }

  // ------------------------------------------------------------ presence

  #recomputePresence(): void {
    let p = this.#presenceConfirmed;
    for (const x of this.#presencePending) p = mergePresence(p, x.patch);
    this.#presence = p;
    const me = this.connectionId ? this.members.get(this.connectionId) : undefined;
    if (me) me.presence = p;
  }

  /**
   * updatePresence merges patch into my presence (a key set to null is
   * removed): at once locally, then in the room. While the room is being
   * re-joined the patch goes out with the join.
   */
  updatePresence(patch: JsonObject): Promise<void> {
    if (this.#state === 'left') return Promise.reject(new ParleyError('disconnected', 'the room was left'));
    let copy: JsonObject;
    try {
      if (!isObject(patch)) throw new ParleyError('bad_request', 'presence must be an object');
      copy = cloneJson(patch) as JsonObject;
    } catch (err) {
      return Promise.reject(asParleyError(err, 'bad_request'));
    }
    return new Promise<void>((resolve, reject) => {
      this.#presencePending.push({ patch: copy, resolve, reject });
      this.#recomputePresence();
      if (this.connectionId) {
        this.emit('presence', {
          room_id: this.id,
          client_id: this.connectionId,
          user_id: this.#client.userId ?? '',
          presence: this.#presence,
          timestamp: new Date().toISOString(),
          local: true,
        });
      }
      this.#flushPresence();
    });
  }

  #flushPresence(): void {
    if (this.#state !== 'joined' || this.#client.state !== 'connected') return;
    for (const p of this.#presencePending) {
      if (p.requestId !== undefined) continue;
      const { id, promise } = this.#client._request('room:update_presence', { room_id: this.id, presence: p.patch });
      p.requestId = id;
      promise.then(
        () => {
          /* settled in #onPresence */
        },
        (err: ParleyError) => {
          const i = this.#presencePending.indexOf(p);
          if (i < 0 || p.requestId !== id) return;
          if (err.code === 'disconnected') return; // carried by the re-join
          this.#presencePending.splice(i, 1);
          p.reject(err);
          this.#recomputePresence();
        },
      );
    }
  }

  // ------------------------------------------------------------ other actions

  /** broadcast sends event to everyone else in the room (room:event); nothing is stored. */
  async broadcast(event: JsonValue): Promise<void> {
    await this.#client.request('room:broadcast', { room_id: this.id, event });
  }

  /** leave leaves the room; the Room is then done (join again with client.joinRoom). */
  async leave(): Promise<void> {
    if (this.#state === 'left') return;
    this.#leaving = true;
    // In the room on the server, or about to be (a join in flight, which
    // the server handles before this leave): leave there too.
    const inRoom = this.#client.state === 'connected' && (this.#state === 'joined' || this.#joinReq !== null);
    try {
      if (inRoom) await this.#client.request('room:leave', { room_id: this.id });
    } catch (err) {
      const e = asParleyError(err);
      if (e.code !== 'not_found' && e.code !== 'disconnected') {
        this.#leaving = false;
        throw e;
      }
    }
    this.#final(new ParleyError('disconnected', 'the room was left'));
    this.members.clear();
    this.memberCount = 0;
  }
}

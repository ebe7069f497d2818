// Parley demo app: accounts, rooms, live cursors, a shared to-do list,
// chat with typing and user status, and calls. Written against the SDK's
// contract (web/client/API.md); build.mjs bundles it with the SDK source.
import { ParleyAPI, ParleyClient, ParleyError } from '@parley/client';
import type { JsonPatchOp, Message, Room, TokenPair } from '@parley/client';
import { Call } from '@parley/client/calls';
import './style.css';

type Status = 'online' | 'idle' | 'dnd' | 'offline' | 'invisible';
interface Session { access: string; refresh: string; exp: number; ttl: number; user: { id: string; username: string; display_name: string } }
interface Todo { text: string; done: boolean; by: string; at: number }
interface Presence { name?: string; color?: string; cursor?: { x: number; y: number } | null }

const $ = <T extends Element = HTMLElement>(sel: string, root: ParentNode = document) => root.querySelector(sel) as T;
const view = $('#view');
const base = location.origin;
const wsURL = `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/ws`;
const palette = ['#e11d48', '#d97706', '#059669', '#0284c7', '#7c3aed', '#db2777', '#0d9488', '#4f46e5'];
const colorOf = (id: string) => palette[[...id].reduce((h, c) => (h * 31 + c.charCodeAt(0)) >>> 0, 7) % palette.length];
const newId = () => Date.now().toString(36) + Math.random().toString(36).slice(2, 8);
const ROOM_ID = /^[A-Za-z0-9._:-]{1,128}$/;

// --- untrusted input. The room's document and everyone's presence are
// written by any member, and answers and frames come from the network:
// every value is checked before use, and a bad one is skipped or replaced,
// never allowed to throw.
const STATUSES = new Set<string>(['online', 'idle', 'dnd', 'offline', 'invisible']);
const isObj = (v: unknown): v is Record<string, unknown> => v !== null && typeof v === 'object' && !Array.isArray(v);
const field = (o: unknown, k: string): unknown => (isObj(o) && Object.hasOwn(o, k) ? o[k] : undefined);
const str = (o: unknown, k: string): string | undefined => { const v = field(o, k); return typeof v === 'string' ? v : undefined; };
const clip = (s: string, n: number) => (s.length > n ? `${s.slice(0, n - 1)}…` : s);
const asStatus = (v: unknown): Status | null => (typeof v === 'string' && STATUSES.has(v) ? (v as Status) : null);
/** A stable short form of a user id (ids are UUIDs for accounts, any string for minted tokens). */
const shortId = (uid: string) => (uid.replace(/[^A-Za-z0-9]/g, '') || uid).slice(0, 6);
/** One JSON Pointer segment (RFC 6901): to-do ids are keys any member chose. */
const ptr = (k: string) => k.replace(/~/g, '~0').replace(/\//g, '~1');

function asTodo(v: unknown): Todo | null {
  const text = str(v, 'text');
  if (text === undefined || text.trim() === '') return null;
  const at = field(v, 'at');
  return { text: clip(text, 1000), done: field(v, 'done') === true, by: clip(str(v, 'by') ?? '', 100), at: typeof at === 'number' && Number.isFinite(at) ? at : 0 };
}

function asCursor(v: unknown): { x: number; y: number } | null {
  const x = field(v, 'x'), y = field(v, 'y');
  if (typeof x !== 'number' || typeof y !== 'number' || !Number.isFinite(x) || !Number.isFinite(y)) return null;
  return { x: Math.min(1, Math.max(0, x)), y: Math.min(1, Math.max(0, y)) };
}

/** A presence color: #rgb or #rrggbb dark enough for the white label text on it, else fallback. */
function asColor(v: unknown, fallback: string): string {
  const m = typeof v === 'string' ? /^#([0-9a-f]{3}|[0-9a-f]{6})$/i.exec(v) : null;
  if (!m) return fallback;
  const hex = m[1].length === 3 ? [...m[1]].map((c) => c + c).join('') : m[1];
  const [r, g, b] = [0, 2, 4].map((i) => parseInt(hex.slice(i, i + 2), 16) / 255).map((c) => (c <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4));
  const luminance = 0.2126 * r + 0.7152 * g + 0.0722 * b;
  return luminance <= 0.35 ? `#${hex.toLowerCase()}` : fallback; // white on it: contrast at least 3:1
}

function asMessage(v: unknown): Message | null {
  for (const k of ['id', 'room_id', 'author_id', 'content', 'created_at']) if (str(v, k) === undefined) return null;
  const nonce = field(v, 'nonce');
  if (nonce !== undefined && nonce !== null && typeof nonce !== 'string') return null;
  return v as unknown as Message;
}

/** guard wraps a render function or event handler: a failure is logged, the page carries on. */
function guard<A extends unknown[]>(what: string, fn: (...a: A) => void): (...a: A) => void {
  return (...a: A) => {
    try {
      fn(...a);
    } catch (e) {
      console.warn(`parley demo: ${what} failed`, e);
    }
  };
}

/** Names the server gave room members (their token's name), by user id, for this page's lifetime. */
const serverNames = new Map<string, string>();

function el<K extends keyof HTMLElementTagNameMap>(tag: K, attrs: Record<string, string> = {}, ...kids: (Node | string)[]) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) k === 'class' ? (e.className = v) : e.setAttribute(k, v);
  e.append(...kids);
  return e;
}

function toast(text: string) {
  const t = el('div', { class: 'toast', 'data-testid': 'toast' }, text);
  $('.toasts').append(t);
  setTimeout(() => t.remove(), 5000);
}

function errText(e: unknown) {
  if (e instanceof ParleyError) {
    const msgs: Record<string, string> = { unauthorized: 'Wrong username or password.', conflict: 'That name is taken.',
      rate_limited: 'Too many attempts; wait a moment.', forbidden: 'You do not have access to that.', not_found: 'Not found.' };
    return msgs[e.code] ?? e.message;
  }
  return e instanceof Error ? e.message : String(e);
}

// --- session: the token pair lives in sessionStorage; refreshed before expiry.
let session: Session | null = (() => {
  try {
    const s: unknown = JSON.parse(sessionStorage.getItem('parley.session') ?? 'null');
    const u = field(s, 'user');
    return str(s, 'access') !== undefined && str(s, 'refresh') !== undefined && str(u, 'id') !== undefined ? (s as Session) : null;
  } catch {
    return null;
  }
})();
const authApi = new ParleyAPI({ baseUrl: base });
let refreshing: Promise<string> | null = null;

function saveSession(p: TokenPair) {
  session = { access: p.access_token, refresh: p.refresh_token, exp: Date.now() + p.expires_in * 1000, ttl: p.expires_in * 1000, user: p.user };
  sessionStorage.setItem('parley.session', JSON.stringify(session));
}

async function getToken(): Promise<string> {
  if (!session) throw new ParleyError('unauthorized', 'signed out');
  // Refresh when less than a quarter of the lifetime (at most 30 s) is left.
  if (session.exp - Date.now() > Math.min(30_000, (session.ttl ?? 0) / 4)) return session.access;
  refreshing ??= authApi.refresh(session.refresh)
    .then((p) => { saveSession(p); return session!.access; })
    .catch((e: unknown) => { signOut(); throw e; })
    .finally(() => { refreshing = null; });
  return refreshing;
}

const api = new ParleyAPI({ baseUrl: base, getToken });
let client: ParleyClient | null = null;
let connects = 0; // WebSockets that got their `connected` frame (shown on the state pill)
let myStatus: Status = 'online';
const statuses = new Map<string, Status>();
const statusListeners = new Set<() => void>();

function ensureClient() {
  if (client) return client;
  const c = new ParleyClient({ url: wsURL, getToken });
  client = c;
  c.on('presence:update', (d) => {
    const uid = str(d, 'user_id'), st = asStatus(field(d, 'presence'));
    if (uid === undefined || !st) return;
    statuses.set(uid, st);
    statusListeners.forEach((f) => f());
  });
  c.on('connected', () => {
    connects++;
    const pill = document.querySelector<HTMLElement>('[data-testid="conn-state"]');
    if (pill) pill.dataset.connects = String(connects);
  });
  c.on('state', (d) => {
    const pill = document.querySelector<HTMLElement>('[data-testid="conn-state"]');
    if (pill) { pill.dataset.connects = String(connects); pill.textContent = d.state === 'connected' ? 'Live' : d.state === 'closed' ? 'Offline' : 'Reconnecting…'; pill.classList.toggle('live', d.state === 'connected'); }
    if (d.state === 'closed' && d.error?.code === 'unauthorized') signOut();
  });
  c.connect().catch((e: unknown) => toast(`Could not connect: ${errText(e)}`));
  return c;
}

function renderMe() {
  const me = $('[data-testid="me"]');
  me.hidden = !session;
  if (!session) return;
  $('[data-testid="me-name"]').textContent = session.user.display_name || session.user.username;
  $('[data-testid="my-status-dot"]').dataset.status = myStatus;
  $<HTMLSelectElement>('[data-testid="status-picker"]').value = myStatus;
}

$<HTMLSelectElement>('[data-testid="status-picker"]').addEventListener('change', async (ev) => {
  const s = (ev.target as HTMLSelectElement).value as Status;
  try {
    await ensureClient().setStatus(s);
    myStatus = s;
    if (session) statuses.set(session.user.id, s);
    statusListeners.forEach((f) => f());
  } catch (e) { toast(`Status not changed: ${errText(e)}`); }
  renderMe();
});

$('[data-testid="logout"]').addEventListener('click', async () => {
  const s = session;
  signOut();
  if (s) await fetch('/api/auth/logout', { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ refresh_token: s.refresh }) }).catch(() => {});
});

function signOut() {
  session = null;
  sessionStorage.removeItem('parley.session');
  leaveRoom();
  client?.close();
  client = null;
  statuses.clear();
  go('/login');
}

// --- routing (history API); embed.go answers index.html for these paths.
let leaveRoom: () => void = () => {};

function go(path: string, replace = false) {
  if (replace) history.replaceState(null, '', path); else history.pushState(null, '', path);
  route();
}

document.addEventListener('click', (ev) => {
  const a = (ev.target as Element).closest?.('a[data-link]') as HTMLAnchorElement | null;
  if (a && !ev.ctrlKey && !ev.metaKey && !ev.shiftKey) { ev.preventDefault(); go(a.pathname); }
});
addEventListener('popstate', () => route());

function route() {
  leaveRoom();
  leaveRoom = () => {};
  renderMe();
  const path = location.pathname;
  const room = /^\/rooms\/([A-Za-z0-9._:-]{1,128})$/.exec(path);
  if (!session) {
    if (path !== '/login' && path !== '/signup') sessionStorage.setItem('parley.next', path);
    return showAuth(path === '/signup' || (room !== null && !sessionStorage.getItem('parley.seen')));
  }
  ensureClient();
  if (room) return void showRoom(room[1]);
  if (path !== '/rooms') return go('/rooms', true);
  void showRooms();
}

function mount(id: string) {
  const frag = ($<HTMLTemplateElement>(`#${id}`)).content.cloneNode(true) as DocumentFragment;
  view.replaceChildren(frag);
  return view;
}

// --- sign in / sign up
function showAuth(signup: boolean) {
  const v = mount('tpl-auth');
  v.querySelector('.auth')!.classList.toggle('signup', signup);
  $('[data-testid="auth-title"]', v).textContent = signup ? 'Create your account' : 'Welcome back';
  const invited = sessionStorage.getItem('parley.next')?.startsWith('/rooms/');
  $('[data-testid="auth-subtitle"]', v).textContent = invited ? `${signup ? 'Create an account' : 'Sign in'} to join the room you were invited to.`
    : signup ? 'Rooms, chat and calls in one place.' : 'Sign in to your rooms.';
  $('[data-testid="auth-submit"]', v).textContent = signup ? 'Create account' : 'Sign in';
  $('[data-testid="auth-switch-text"]', v).textContent = signup ? 'Have an account?' : 'New here?';
  const sw = $<HTMLAnchorElement>('[data-testid="auth-switch"]', v);
  sw.textContent = signup ? 'Sign in' : 'Create an account';
  sw.href = signup ? '/login' : '/signup';
  $<HTMLInputElement>('[data-testid="auth-password"]', v).autocomplete = signup ? 'new-password' : 'current-password';
  const form = $<HTMLFormElement>('[data-testid="auth-form"]', v);
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const f = new FormData(form);
    const username = String(f.get('username')).trim().toLowerCase(), password = String(f.get('password'));
    const err = $('[data-testid="auth-error"]', v);
    const btn = $<HTMLButtonElement>('[data-testid="auth-submit"]', v);
    btn.disabled = true;
    try {
      const displayName = String(f.get('display_name') ?? '').trim() || undefined;
      const pair = signup ? await authApi.register({ username, password, displayName }) : await authApi.login({ username, password });
      saveSession(pair);
      sessionStorage.setItem('parley.seen', '1');
      const next = sessionStorage.getItem('parley.next');
      sessionStorage.removeItem('parley.next');
      go(next && next.startsWith('/rooms') ? next : '/rooms', true);
    } catch (e) {
      err.textContent = errText(e);
      err.hidden = false;
      btn.disabled = false;
    }
  });
  $<HTMLInputElement>('[data-testid="auth-username"]', v).focus();
}

// --- room list
async function showRooms() {
  const v = mount('tpl-rooms');
  const list = $('[data-testid="room-list"]', v);
  try {
    const page: unknown = await api.rooms.list();
    const items = field(page, 'items');
    const rooms = (Array.isArray(items) ? items : []).filter((r) => ROOM_ID.test(str(r, 'id') ?? '') && str(r, 'name') !== undefined) as { id: string; name: string; open?: unknown }[];
    for (const r of rooms) {
      const avatar = el('span', { class: 'avatar' }, ([...r.name][0] ?? '#').toUpperCase());
      avatar.style.background = colorOf(r.id);
      list.append(el('li', {}, el('a', { href: `/rooms/${r.id}`, 'data-link': '', 'data-testid': 'room-link', class: 'room-link' },
        avatar, el('span', { class: 'room-name' }, clip(r.name, 200)),
        el('span', { class: 'muted small' }, r.open === true ? 'open' : 'members only'))));
    }
    $('[data-testid="rooms-empty"]', v).hidden = rooms.length > 0;
  } catch (e) { toast(errText(e)); }
  const form = $<HTMLFormElement>('[data-testid="room-create-form"]', v);
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const name = String(new FormData(form).get('name')).trim();
    try {
      const r = await api.rooms.create({ name, open: true });
      go(`/rooms/${r.id}`);
    } catch (e) { toast(`Could not create the room: ${errText(e)}`); }
  });
}

// --- a room
async function showRoom(roomId: string) {
  const v = mount('tpl-room');
  const me = session!.user;
  const myName = me.display_name || me.username;
  const c = ensureClient();
  const offs: (() => void)[] = [];
  let room: Room | null = null;
  let closed = false;
  let call: CallUI | null = null;
  let typing: { keystroke(): void; stop(): void } | null = null;
  const sub = (off: unknown) => { if (typeof off === 'function') offs.push(off as () => void); };
  leaveRoom = () => {
    closed = true;
    offs.forEach((f) => f());
    call?.leave();
    room?.leave().catch(() => {});
    typing?.stop();
  };
  const pill = $('[data-testid="conn-state"]', v);
  pill.textContent = c.state === 'connected' ? 'Live' : 'Connecting…';
  pill.dataset.connects = String(connects);
  pill.classList.toggle('live', c.state === 'connected');
  $('[data-testid="copy-link"]', v).addEventListener('click', () => {
    navigator.clipboard?.writeText(location.href).then(() => toast('Invite link copied'), () => toast(location.href));
  });

  let info!: Awaited<ReturnType<typeof api.rooms.get>>;
  try {
    await api.rooms.join(roomId).catch((e: unknown) => { if (!(e instanceof ParleyError && e.code === 'forbidden')) throw e; });
    info = await api.rooms.get(roomId);
    if (c.state !== 'connected') await new Promise<void>((res) => { const off = c.on('connected', () => { off(); res(); }); });
    if (closed) return;
    // initialStorage is written only by the first joiner of an empty room.
    room = await c.joinRoom(roomId, { presence: { name: myName, color: colorOf(me.id), cursor: null }, initialStorage: { todos: {} } });
  } catch (e) {
    toast(`Could not open the room: ${errText(e)}`);
    go('/rooms', true);
    return;
  }
  if (closed) { room.leave().catch(() => {}); return; }
  const r = room;
  const roomName = clip(str(info, 'name') || roomId, 200);
  $('[data-testid="room-title"]', v).textContent = roomName;
  document.title = `${roomName} · Parley`;
  const typer = c.typing(roomId);
  typing = typer;
  // Each part of the room is set up on its own: one that fails (a bug, or
  // data nobody foresaw) leaves the others working.
  const section = (what: string, fn: () => void) => {
    try {
      fn();
    } catch (e) {
      console.warn(`parley demo: the ${what} could not be set up`, e);
      toast(`Part of the room (${what}) could not be shown.`);
    }
  };

  // Names. Only the server's: each member's name in room:state/room:joined
  // (from their token), kept for this page once seen, and mine from my
  // account. Presence and the room's document are written by members and
  // would let anyone name themselves, or others, as they like. Someone the
  // server has not named (a member who is not here now) shows as a short
  // form of their user id.
  const memberIds = new Set<string>();
  const infoMembers = field(info, 'members');
  if (Array.isArray(infoMembers)) for (const u of infoMembers) if (typeof u === 'string' && u !== '') memberIds.add(u);
  const learnNames = () => {
    for (const m of r.members.values()) {
      const n = typeof m.name === 'string' ? m.name.trim() : '';
      if (n !== '' && m.user_id !== me.id) serverNames.set(m.user_id, clip(n, 80));
    }
  };
  const known = (uid: string) => uid === me.id || serverNames.has(uid);
  const nameOf = (uid: string) => {
    const n = uid === me.id ? clip(myName, 80) : serverNames.get(uid);
    if (n === undefined) return `user ${shortId(uid)}`;
    // Display names are not unique: tell people who share one apart.
    const lower = n.toLowerCase();
    const twin = (uid !== me.id && myName.toLowerCase() === lower) || [...serverNames].some(([id, other]) => id !== uid && other.toLowerCase() === lower);
    return twin ? `${n} · ${shortId(uid)}` : n;
  };
  const label = (e: HTMLElement, uid: string, suffix = '') => {
    e.textContent = nameOf(uid) + suffix;
    e.classList.toggle('unknown', !known(uid));
    e.title = known(uid) ? nameOf(uid) : `Not in this room now (user id ${uid})`;
    return e;
  };
  learnNames();

  // People and their status dots.
  const peopleEl = $('[data-testid="people"]', v);
  const renderPeople = guard('people', () => {
    const live = new Set([...r.members.values()].map((m) => m.user_id));
    const ids = [...new Set([...memberIds, ...live])].sort((a, b) => nameOf(a).localeCompare(nameOf(b)));
    peopleEl.replaceChildren(...ids.map((uid) => {
      const st = uid === me.id ? myStatus : statuses.get(uid) ?? (live.has(uid) ? 'online' : 'offline');
      return el('li', { 'data-testid': 'member', 'data-name': nameOf(uid), 'data-user-id': uid, 'data-known': String(known(uid)) },
        el('span', { class: 'dot', 'data-testid': 'status-dot', 'data-status': st, title: st }),
        label(el('span', { class: 'name' }), uid, uid === me.id ? ' (you)' : ''),
        el('span', { class: 'muted small' }, live.has(uid) ? 'here' : ''));
    }));
  });
  const loadStatuses = async (ids: string[]) => {
    if (!ids.length) return;
    const res: unknown = await api.presence(ids).catch(() => null);
    for (const it of Array.isArray(res) ? res : []) {
      const uid = str(it, 'user_id'), st = asStatus(field(it, 'presence'));
      if (uid !== undefined && st && uid !== me.id) statuses.set(uid, st);
    }
    renderPeople();
  };

  // Live cursors: presence.cursor as fractions of the room's box, labelled
  // with the member's server name.
  const cursorsEl = $('[data-testid="cursors"]', v);
  const roomEl = $('[data-testid="room"]', v);
  const renderCursors = guard('cursors', () => {
    const box = roomEl.getBoundingClientRect();
    const els: HTMLElement[] = [];
    for (const m of r.members.values()) {
      const p: unknown = m.presence;
      const cur = asCursor(field(p, 'cursor'));
      if (m.client_id === r.connectionId || !cur) continue;
      const e = el('div', { class: 'cursor', 'data-testid': 'cursor', 'data-name': nameOf(m.user_id), 'data-user-id': m.user_id, 'data-x': cur.x.toFixed(3), 'data-y': cur.y.toFixed(3) },
        label(el('span', { class: 'label' }), m.user_id));
      e.style.transform = `translate(${cur.x * box.width}px, ${cur.y * box.height}px)`;
      e.style.setProperty('--c', asColor(field(p, 'color'), colorOf(m.user_id)));
      els.push(e);
    }
    cursorsEl.replaceChildren(...els);
  });

  // Chat: history over REST, live message:create pushes, typing.
  const msgs = $('[data-testid="messages"]', v);
  const relabelChat = guard('chat names', () => {
    for (const li of msgs.querySelectorAll<HTMLElement>('[data-testid="chat-message"]')) {
      const uid = li.dataset.authorId ?? '';
      li.dataset.author = nameOf(uid);
      const b = li.querySelector<HTMLElement>('.author');
      if (b) label(b, uid);
    }
  });
  const typers = new Set<string>();
  const typingEl = $('[data-testid="typing-indicator"]', v);
  const renderTyping = guard('typing', () => {
    const names = [...typers].map(nameOf);
    typingEl.textContent = names.length === 0 ? '' : names.length === 1 ? `${names[0]} is typing…` : `${names.slice(0, -1).join(', ')} and ${names.at(-1)} are typing…`;
  });

  const onMembers = guard('members', () => {
    learnNames();
    const fresh = [...r.members.values()].map((m) => m.user_id).filter((u) => !memberIds.has(u));
    fresh.forEach((u) => memberIds.add(u));
    void loadStatuses(fresh);
    renderPeople();
    renderCursors();
    relabelChat();
    renderTyping();
  });

  section('people', () => {
    statusListeners.add(renderPeople);
    offs.push(() => statusListeners.delete(renderPeople));
    for (const ev of ['members', 'joined', 'left'] as const) sub(r.on(ev, onMembers));
    void loadStatuses([...memberIds]);
    renderPeople();
  });

  section('cursors', () => {
    sub(r.on('presence', renderCursors));
    let pending: { x: number; y: number } | null | undefined, frame = 0;
    const sendCursor = (pos: { x: number; y: number } | null) => {
      pending = pos;
      frame ||= requestAnimationFrame(() => { frame = 0; r.updatePresence({ cursor: pending ?? null }).catch(() => {}); });
    };
    const onMove = (ev: PointerEvent) => {
      const box = roomEl.getBoundingClientRect();
      sendCursor({ x: Math.round(((ev.clientX - box.left) / box.width) * 1000) / 1000, y: Math.round(((ev.clientY - box.top) / box.height) * 1000) / 1000 });
    };
    roomEl.addEventListener('pointermove', onMove);
    roomEl.addEventListener('pointerleave', () => sendCursor(null));
    addEventListener('resize', renderCursors);
    offs.push(() => removeEventListener('resize', renderCursors));
    renderCursors();
  });

  // Shared to-do list: storage /todos/<id>, undo/redo of my own edits. Any
  // member can write anything there: entries that are not to-dos are left out.
  section('to-do list', () => {
    const todoList = $('[data-testid="todo-list"]', v);
    const undoBtn = $<HTMLButtonElement>('[data-testid="undo"]', v), redoBtn = $<HTMLButtonElement>('[data-testid="redo"]', v);
    const todoMap = () => field(r.storage, 'todos');
    const renderTodos = guard('to-do list', () => {
      const map = todoMap();
      const todos: [string, Todo][] = [];
      if (isObj(map)) for (const [id, raw] of Object.entries(map)) { const t = asTodo(raw); if (t) todos.push([id, t]); }
      todos.sort((a, b) => a[1].at - b[1].at || (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
      todoList.replaceChildren(...todos.map(([id, t]) => {
        const box = el('input', { type: 'checkbox', 'data-testid': 'todo-toggle', 'aria-label': 'Done' });
        box.checked = t.done;
        box.addEventListener('change', () => void r.patch([{ op: 'add', path: `/todos/${ptr(id)}/done`, value: box.checked }]).catch((e: unknown) => { toast(errText(e)); renderTodos(); }));
        const del = el('button', { class: 'ghost icon', 'data-testid': 'todo-delete', 'aria-label': 'Delete', title: 'Delete' }, '×');
        del.addEventListener('click', () => void r.patch([{ op: 'remove', path: `/todos/${ptr(id)}` }]).catch((e: unknown) => toast(errText(e))));
        return el('li', { 'data-testid': 'todo-item', 'data-text': t.text, class: t.done ? 'done' : '' },
          el('label', {}, box, el('span', { class: 'text' }, t.text)), el('span', { class: 'by muted small', title: t.by }, t.by), del);
      }));
      $('[data-testid="todo-empty"]', v).hidden = todos.length > 0;
      undoBtn.disabled = !r.canUndo;
      redoBtn.disabled = !r.canRedo;
    });
    sub(r.on('storage', renderTodos));
    // A room whose document predates the app gets the list.
    if (todoMap() === undefined) r.patch([{ op: 'add', path: '/todos', value: {} }], { undoable: false }).catch(() => {});
    renderTodos();
    const todoForm = $<HTMLFormElement>('[data-testid="todo-form"]', v);
    todoForm.addEventListener('submit', (ev) => {
      ev.preventDefault();
      const input = $<HTMLInputElement>('[data-testid="todo-input"]', v);
      const text = input.value.trim();
      if (!text) return;
      input.value = '';
      // /todos overwritten with something that is not a list: start a new one.
      if (!isObj(todoMap())) r.patch([{ op: 'add', path: '/todos', value: {} }], { undoable: false }).catch(() => {});
      r.patch([{ op: 'add', path: `/todos/${ptr(newId())}`, value: { text, done: false, by: myName, at: Date.now() } }]).catch((e: unknown) => toast(errText(e)));
    });
    const undo = () => r.undo()?.catch((e: unknown) => toast(`Undo failed: ${errText(e)}`)).finally(renderTodos);
    const redo = () => r.redo()?.catch((e: unknown) => toast(`Redo failed: ${errText(e)}`)).finally(renderTodos);
    undoBtn.addEventListener('click', () => void undo());
    redoBtn.addEventListener('click', () => void redo());
    const onKey = (ev: KeyboardEvent) => {
      if (!(ev.ctrlKey || ev.metaKey) || (ev.target as Element).matches?.('input, textarea')) return;
      const k = ev.key.toLowerCase();
      if (k === 'z' && !ev.shiftKey) { ev.preventDefault(); void undo(); }
      if ((k === 'z' && ev.shiftKey) || k === 'y') { ev.preventDefault(); void redo(); }
    };
    document.addEventListener('keydown', onKey);
    offs.push(() => document.removeEventListener('keydown', onKey));
  });

  section('chat', () => {
    const seen = new Set<string>();
    const addMessage = guard('chat message', (raw: unknown) => {
      const m = asMessage(raw);
      if (!m || m.room_id !== roomId || seen.has(m.id) || (m.nonce && seen.has(m.nonce))) return;
      seen.add(m.id);
      if (m.nonce) seen.add(m.nonce);
      const at = new Date(m.created_at);
      const time = Number.isNaN(at.getTime()) ? '' : at.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
      const atBottom = msgs.scrollHeight - msgs.scrollTop - msgs.clientHeight < 40;
      msgs.append(el('li', { 'data-testid': 'chat-message', class: m.author_id === me.id ? 'mine' : '', 'data-author': nameOf(m.author_id), 'data-author-id': m.author_id },
        el('div', { class: 'meta' }, label(el('b', { class: 'author' }), m.author_id), el('span', { class: 'muted small time' }, time)),
        el('div', { class: 'content', 'data-testid': 'chat-content' }, m.content)));
      if (atBottom || m.author_id === me.id) msgs.scrollTop = msgs.scrollHeight;
    });
    api.messages.list(roomId, { limit: 50 }).then((page: unknown) => {
      const items = field(page, 'items');
      if (Array.isArray(items)) [...items].reverse().forEach(addMessage);
      msgs.scrollTop = msgs.scrollHeight;
    }).catch((e: unknown) => toast(`Chat history unavailable: ${errText(e)}`));
    sub(c.on('message:create', addMessage));
    sub(c.on('typing:start', guard('typing', (d: unknown) => {
      const uid = str(d, 'user_id');
      if (str(d, 'room_id') === roomId && uid !== undefined && uid !== me.id) { typers.add(uid); renderTyping(); }
    })));
    sub(c.on('typing:stop', guard('typing', (d: unknown) => {
      const uid = str(d, 'user_id');
      if (str(d, 'room_id') === roomId && uid !== undefined) { typers.delete(uid); renderTyping(); }
    })));
    const chatForm = $<HTMLFormElement>('[data-testid="chat-form"]', v);
    const chatInput = $<HTMLInputElement>('[data-testid="chat-input"]', v);
    chatInput.addEventListener('input', () => (chatInput.value ? typer.keystroke() : typer.stop()));
    chatForm.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      const content = chatInput.value.trim();
      if (!content) return;
      chatInput.value = '';
      try {
        // { client }: no echo to this connection, and my typing indicator ends.
        const m = await api.messages.send(roomId, { content, nonce: newId() }, { client: c });
        addMessage(m);
      } catch (e) { chatInput.value = content; toast(`Not sent: ${errText(e)}`); }
      typer.stop();
    });
  });

  section('call', () => { call = new CallUI(v, roomId, c, nameOf); });
}

// --- calls: one tile per participant (camera + mic), one per screen share.
class CallUI {
  call: Call | null = null;
  producers = new Map<string, { id: string; close(): unknown }>();
  local = new MediaStream();
  tiles = new Map<string, { tile: HTMLElement; stream: MediaStream; video: HTMLVideoElement }>();
  remote = new Map<string, { key: string; track: MediaStreamTrack }>(); // producer id → its track
  rejoin?: () => void; // pending re-join after a lost connection
  constructor(private v: HTMLElement, private roomId: string, private c: ParleyClient, private nameOf: (uid: string) => string) {
    this.btn('call-join').addEventListener('click', () => void this.join());
    this.btn('call-leave').addEventListener('click', () => void this.leave());
    this.btn('toggle-camera').addEventListener('click', () => void this.toggle('webcam'));
    this.btn('toggle-mic').addEventListener('click', () => void this.toggle('mic'));
    this.btn('toggle-screen').addEventListener('click', () => void this.toggle('screen'));
  }
  btn(id: string) { return $<HTMLButtonElement>(`[data-testid="${id}"]`, this.v); }
  tile(key: string, uidIn: unknown, connectionId: string, isLocal: boolean) {
    let t = this.tiles.get(key);
    if (t) return t;
    const uid = typeof uidIn === 'string' ? uidIn : '';
    const video = el('video', { autoplay: '', playsinline: '', 'data-testid': 'call-video' }) as HTMLVideoElement;
    video.muted = isLocal;
    const stream = isLocal && !key.endsWith(':screen') ? this.local : new MediaStream();
    video.srcObject = stream;
    const name = this.nameOf(uid) + (isLocal ? ' (you)' : '') + (key.endsWith(':screen') ? ' · screen' : '');
    const tile = el('div', { class: 'tile', 'data-testid': 'call-tile', 'data-name': this.nameOf(uid), 'data-connection-id': connectionId, 'data-local': String(isLocal) },
      video, el('span', { class: 'avatar big' }, this.nameOf(uid).slice(0, 1).toUpperCase()), el('span', { class: 'label' }, name));
    (tile.querySelector('.avatar') as HTMLElement).style.background = colorOf(uid);
    $('[data-testid="call-grid"]', this.v).append(tile);
    $('[data-testid="call-empty"]', this.v).hidden = true;
    t = { tile, stream, video };
    this.tiles.set(key, t);
    return t;
  }
  refresh(t: { tile: HTMLElement; stream: MediaStream; video: HTMLVideoElement }) {
    t.tile.classList.toggle('has-video', t.stream.getVideoTracks().length > 0);
    t.video.srcObject = new MediaStream(t.stream.getTracks());
    t.video.play().catch(() => {});
  }
  dropTile(key: string) {
    this.tiles.get(key)?.tile.remove();
    this.tiles.delete(key);
    $('[data-testid="call-empty"]', this.v).hidden = this.tiles.size > 0;
  }
  setInCall(on: boolean) {
    this.btn('call-join').hidden = on;
    for (const id of ['call-leave', 'toggle-camera', 'toggle-mic', 'toggle-screen']) this.btn(id).hidden = !on;
  }
  async join(sources = ['mic', 'webcam'] as ('mic' | 'webcam')[]) {
    const me = session!.user;
    this.btn('call-join').disabled = true;
    try {
      await api.call.start(this.roomId);
      const call = new Call(this.c, this.roomId);
      this.call = call;
      call.on('track', (d) => {
        const key = d.source === 'screen' ? `${d.connectionId}:screen` : d.connectionId;
        const t = this.tile(key, d.userId, d.connectionId, false);
        t.stream.getTracks().filter((x) => x.kind === d.kind).forEach((x) => t.stream.removeTrack(x));
        t.stream.addTrack(d.track);
        this.remote.set(d.producerId, { key, track: d.track });
        this.refresh(t);
      });
      call.on('track_ended', (d) => {
        const r = this.remote.get(d.producerId);
        const t = r && this.tiles.get(r.key);
        if (!r || !t) return;
        this.remote.delete(d.producerId);
        t.stream.removeTrack(r.track);
        if (r.key.endsWith(':screen') && t.stream.getTracks().length === 0) this.dropTile(r.key); else this.refresh(t);
      });
      call.on('peer_left', (d) => {
        const cid = d.connectionId;
        for (const key of [...this.tiles.keys()]) if (key === cid || key === `${cid}:screen`) this.dropTile(key);
      });
      call.on('active_speaker', (d) => {
        const cid = d.connectionId;
        for (const t of this.tiles.values()) t.tile.classList.toggle('speaking', t.tile.dataset.connectionId === cid);
      });
      // "Stop sharing" and unplugged devices; a call that ends is handled by 'closed'.
      call.on('local_track_ended', (d) => { if (d.reason === 'track_ended' && this.producers.get(d.source)?.id === d.producerId) this.dropLocal(d.source); });
      call.on('closed', (d) => {
        // A lost socket (network, or the token's expiry: the SDK reconnects
        // with a fresh one) ends the call for this connection: join again.
        const again = [...this.producers.keys()].filter((s): s is 'mic' | 'webcam' => s === 'mic' || s === 'webcam');
        void this.leave();
        if (d.reason !== 'disconnected') return toast('The call has ended.');
        toast('Connection lost: rejoining the call…');
        const off = this.c.on('connected', () => { off(); this.rejoin = undefined; void this.join(again); });
        this.rejoin = off;
      });
      await call.join();
      this.setInCall(true);
      this.refresh(this.tile(this.c.connectionId!, me.id, this.c.connectionId!, true));
      for (const src of sources) await this.toggle(src);
    } catch (e) {
      toast(`Could not join the call: ${errText(e)}`);
      await this.leave();
    } finally {
      this.btn('call-join').disabled = false;
    }
  }
  async toggle(source: 'webcam' | 'mic' | 'screen') {
    const existing = this.producers.get(source);
    const key = source === 'screen' ? `${this.c.connectionId}:screen` : this.c.connectionId!;
    if (existing) {
      this.dropLocal(source);
      await Promise.resolve(existing.close()).catch(() => {});
    } else if (this.call) {
      try {
        const media = source === 'screen' ? await navigator.mediaDevices.getDisplayMedia({ video: true })
          : await navigator.mediaDevices.getUserMedia(source === 'mic' ? { audio: true } : { video: { width: 640, height: 360 } });
        const track = media.getTracks()[0];
        const p = await this.call.produce(track, { source });
        this.producers.set(source, p);
        const t = this.tile(key, session!.user.id, this.c.connectionId!, true);
        t.stream.addTrack(track);
        this.refresh(t);
        track.addEventListener('ended', () => { if (this.producers.get(source) === p) void this.toggle(source); });
      } catch (e) { toast(`${source === 'screen' ? 'Screen share' : source === 'mic' ? 'Microphone' : 'Camera'} unavailable: ${errText(e)}`); }
    }
    this.pressed(source);
  }
  pressed(source: string) {
    const b = this.btn({ webcam: 'toggle-camera', mic: 'toggle-mic', screen: 'toggle-screen' }[source] ?? '');
    b?.classList.toggle('on', this.producers.has(source));
    b?.setAttribute('aria-pressed', String(this.producers.has(source)));
  }
  // dropLocal forgets my producer of source and stops its track.
  dropLocal(source: string) {
    this.producers.delete(source);
    const key = source === 'screen' ? `${this.c.connectionId}:screen` : this.c.connectionId!;
    const t = this.tiles.get(key);
    t?.stream.getTracks().forEach((x) => { if (source === 'screen' || x.kind === (source === 'mic' ? 'audio' : 'video')) { x.stop(); t.stream.removeTrack(x); } });
    if (source === 'screen') this.dropTile(key); else if (t) this.refresh(t);
    this.pressed(source);
  }
  async leave() {
    this.rejoin?.();
    this.rejoin = undefined;
    const call = this.call;
    this.call = null;
    this.producers.forEach((p) => void Promise.resolve(p.close()).catch(() => {}));
    this.producers.clear();
    this.local.getTracks().forEach((x) => { x.stop(); this.local.removeTrack(x); });
    for (const t of this.tiles.values()) t.stream.getTracks().forEach((x) => x.stop());
    [...this.tiles.keys()].forEach((k) => this.dropTile(k));
    this.setInCall(false);
    for (const id of ['toggle-camera', 'toggle-mic', 'toggle-screen']) this.btn(id).classList.remove('on');
    await call?.leave().catch(() => {});
  }
}

route();

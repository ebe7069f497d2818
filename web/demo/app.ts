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
let session: Session | null = JSON.parse(sessionStorage.getItem('parley.session') ?? 'null');
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
  c.on('presence:update', (d) => { statuses.set(d.user_id, d.presence); statusListeners.forEach((f) => f()); });
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
    const page = await api.rooms.list();
    for (const r of page.items) {
      list.append(el('li', {}, el('a', { href: `/rooms/${r.id}`, 'data-link': '', 'data-testid': 'room-link', class: 'room-link' },
        el('span', { class: 'avatar' }, (r.name[0] ?? '#').toUpperCase()), el('span', {}, r.name),
        el('span', { class: 'muted small' }, r.open ? 'open' : 'members only'))));
    }
    list.querySelectorAll<HTMLElement>('.avatar').forEach((a, i) => { a.style.background = colorOf(page.items[i].id); });
    $('[data-testid="rooms-empty"]', v).hidden = page.items.length > 0;
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
    room = await c.joinRoom(roomId, { presence: { name: myName, color: colorOf(me.id), cursor: null }, initialStorage: { todos: {}, people: {} } });
  } catch (e) {
    toast(`Could not open the room: ${errText(e)}`);
    go('/rooms', true);
    return;
  }
  if (closed) { room.leave().catch(() => {}); return; }
  const r = room;
  $('[data-testid="room-title"]', v).textContent = info.name;
  document.title = `${info.name} · Parley`;
  const typer = c.typing(roomId);
  typing = typer;

  // Names of everyone who ever joined, kept in storage, so that chat authors
  // stay named when they are offline. A room whose document predates the
  // app gets the missing keys.
  if (r.storage.todos === undefined || r.storage.people === undefined) {
    const ops: JsonPatchOp[] = [];
    if (r.storage.todos === undefined) ops.push({ op: 'add', path: '/todos', value: {} });
    if (r.storage.people === undefined) ops.push({ op: 'add', path: '/people', value: {} });
    await r.patch(ops, { undoable: false }).catch(() => {});
  }
  if (r.storage.people?.[me.id]?.name !== myName) {
    r.patch([{ op: 'add', path: `/people/${me.id}`, value: { name: myName } }], { undoable: false }).catch(() => {});
  }
  const memberIds = new Set<string>(info.members ?? []);
  const nameOf = (uid: string) => {
    for (const m of r.members.values()) if (m.user_id === uid) return (m.presence as Presence)?.name ?? m.name ?? uid;
    return r.storage.people?.[uid]?.name ?? uid;
  };

  // People and their status dots.
  const peopleEl = $('[data-testid="people"]', v);
  const renderPeople = () => {
    const live = new Set([...r.members.values()].map((m) => m.user_id));
    const ids = [...new Set([...memberIds, ...live])].sort((a, b) => nameOf(a).localeCompare(nameOf(b)));
    peopleEl.replaceChildren(...ids.map((uid) => {
      const st = uid === me.id ? myStatus : statuses.get(uid) ?? (live.has(uid) ? 'online' : 'offline');
      return el('li', { 'data-testid': 'member', 'data-name': nameOf(uid), 'data-user-id': uid },
        el('span', { class: 'dot', 'data-testid': 'status-dot', 'data-status': st, title: st }),
        el('span', { class: 'name' }, nameOf(uid) + (uid === me.id ? ' (you)' : '')),
        el('span', { class: 'muted small' }, live.has(uid) ? 'here' : ''));
    }));
  };
  const loadStatuses = async (ids: string[]) => {
    if (!ids.length) return;
    const res = await api.presence(ids).catch(() => null);
    for (const it of res ?? []) if (it.user_id !== me.id) statuses.set(it.user_id, it.presence);
    renderPeople();
  };
  statusListeners.add(renderPeople);
  offs.push(() => statusListeners.delete(renderPeople));
  const onMembers = () => {
    const fresh = [...r.members.values()].map((m) => m.user_id).filter((u) => !memberIds.has(u));
    fresh.forEach((u) => memberIds.add(u));
    void loadStatuses(fresh);
    renderPeople();
    renderCursors();
  };
  for (const ev of ['members', 'joined', 'left'] as const) sub(r.on(ev, onMembers));
  void loadStatuses([...memberIds]);

  // Live cursors: presence.cursor as fractions of the room's box.
  const cursorsEl = $('[data-testid="cursors"]', v);
  const roomEl = $('[data-testid="room"]', v);
  const renderCursors = () => {
    const box = roomEl.getBoundingClientRect();
    const els: HTMLElement[] = [];
    for (const m of r.members.values()) {
      const p = m.presence as Presence;
      if (m.client_id === r.connectionId || !p?.cursor) continue;
      const cur = el('div', { class: 'cursor', 'data-testid': 'cursor', 'data-name': p.name ?? m.name ?? '', 'data-x': p.cursor.x.toFixed(3), 'data-y': p.cursor.y.toFixed(3) },
        el('span', { class: 'label' }, p.name ?? m.name ?? 'Someone'));
      cur.style.transform = `translate(${p.cursor.x * box.width}px, ${p.cursor.y * box.height}px)`;
      cur.style.setProperty('--c', p.color ?? '#4f46e5');
      els.push(cur);
    }
    cursorsEl.replaceChildren(...els);
  };
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

  // Shared to-do list: storage /todos/<id>, undo/redo of my own edits.
  const todoList = $('[data-testid="todo-list"]', v);
  const undoBtn = $<HTMLButtonElement>('[data-testid="undo"]', v), redoBtn = $<HTMLButtonElement>('[data-testid="redo"]', v);
  const renderTodos = () => {
    const todos: [string, Todo][] = Object.entries(r.storage.todos ?? {});
    todos.sort((a, b) => a[1].at - b[1].at || a[0].localeCompare(b[0]));
    todoList.replaceChildren(...todos.map(([id, t]) => {
      const box = el('input', { type: 'checkbox', 'data-testid': 'todo-toggle', 'aria-label': 'Done' });
      box.checked = t.done;
      box.addEventListener('change', () => void r.patch([{ op: 'replace', path: `/todos/${id}/done`, value: box.checked }]).catch((e: unknown) => toast(errText(e))));
      const del = el('button', { class: 'ghost icon', 'data-testid': 'todo-delete', 'aria-label': 'Delete', title: 'Delete' }, '×');
      del.addEventListener('click', () => void r.patch([{ op: 'remove', path: `/todos/${id}` }]).catch((e: unknown) => toast(errText(e))));
      return el('li', { 'data-testid': 'todo-item', 'data-text': t.text, class: t.done ? 'done' : '' },
        el('label', {}, box, el('span', { class: 'text' }, t.text)), el('span', { class: 'by muted small' }, t.by), del);
    }));
    $('[data-testid="todo-empty"]', v).hidden = todos.length > 0;
    undoBtn.disabled = !r.canUndo;
    redoBtn.disabled = !r.canRedo;
    if (!r.storage.people?.[me.id] && r.storage.people) renderPeople();
  };
  sub(r.on('storage', renderTodos));
  renderTodos();
  const todoForm = $<HTMLFormElement>('[data-testid="todo-form"]', v);
  todoForm.addEventListener('submit', (ev) => {
    ev.preventDefault();
    const input = $<HTMLInputElement>('[data-testid="todo-input"]', v);
    const text = input.value.trim();
    if (!text) return;
    input.value = '';
    r.patch([{ op: 'add', path: `/todos/${newId()}`, value: { text, done: false, by: myName, at: Date.now() } }]).catch((e: unknown) => toast(errText(e)));
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

  // Chat: history over REST, live message:create pushes, typing.
  const msgs = $('[data-testid="messages"]', v);
  const seen = new Set<string>();
  const addMessage = (m: Message) => {
    if (m.room_id !== roomId || seen.has(m.id) || (m.nonce && seen.has(m.nonce))) return;
    seen.add(m.id);
    if (m.nonce) seen.add(m.nonce);
    const time = new Date(m.created_at).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
    const atBottom = msgs.scrollHeight - msgs.scrollTop - msgs.clientHeight < 40;
    msgs.append(el('li', { 'data-testid': 'chat-message', class: m.author_id === me.id ? 'mine' : '', 'data-author': nameOf(m.author_id) },
      el('div', { class: 'meta' }, el('b', {}, nameOf(m.author_id)), el('span', { class: 'muted small' }, time)),
      el('div', { class: 'content', 'data-testid': 'chat-content' }, m.content)));
    if (atBottom || m.author_id === me.id) msgs.scrollTop = msgs.scrollHeight;
  };
  api.messages.list(roomId, { limit: 50 }).then((page) => { [...page.items].reverse().forEach(addMessage); msgs.scrollTop = msgs.scrollHeight; })
    .catch((e: unknown) => toast(`Chat history unavailable: ${errText(e)}`));
  sub(c.on('message:create', (m) => addMessage(m)));
  const typers = new Set<string>();
  const typingEl = $('[data-testid="typing-indicator"]', v);
  const renderTyping = () => {
    const names = [...typers].map(nameOf);
    typingEl.textContent = names.length === 0 ? '' : names.length === 1 ? `${names[0]} is typing…` : `${names.slice(0, -1).join(', ')} and ${names.at(-1)} are typing…`;
  };
  sub(c.on('typing:start', (d) => { if (d.room_id === roomId && d.user_id !== me.id) { typers.add(d.user_id); renderTyping(); } }));
  sub(c.on('typing:stop', (d) => { if (d.room_id === roomId) { typers.delete(d.user_id); renderTyping(); } }));
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

  call = new CallUI(v, roomId, c, nameOf);
  renderPeople();
  renderCursors();
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
  tile(key: string, uid: string, connectionId: string, isLocal: boolean) {
    let t = this.tiles.get(key);
    if (t) return t;
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

// Large rooms, hostile. Server: review/srv.sh start --large-room-members 3 --max-connections-per-user 0
// (API key from /tmp/rv/apikey for the truth: PARLEY_API_KEY=$(cat /tmp/rv/apikey) review/srv.sh start ...)
// Parts: members (hostile room:members), converge (join/leave churn vs watchers' views),
// presence (coalescing under a flood), slow (a reader that stops reading), scale (N joins: server CPU).
// Usage: node review/large-rooms.mjs [part...]
import { WSClient, api, sleep, cpuTicks, rssKB, srvPid } from './lib.mjs';
const parts = process.argv.slice(2);
const want = (p) => parts.length === 0 || parts.includes(p);
let failures = 0;
const report = (name, ok, detail = '') => { if (!ok) failures++; console.log(`${ok ? 'ok  ' : 'FAIL'} ${name}${detail ? ': ' + detail : ''}`); };
const pid = srvPid();

// A watcher applies docs/protocol.md: room:state replaces, pages follow members_next,
// members_changed joined = upsert, left = delete, room:joined/left one by one, member_count as given.
class Watcher {
  constructor(name, room) { this.name = name; this.room = room; this.view = new Map(); this.count = 0; this.c = new WSClient(name); this.presence = new Map(); this.frames = { batch: 0, presUpd: 0, changed: 0, page: 0 }; }
  async join(presence) {
    await this.c.open();
    this.c.on((m) => this.apply(m));
    const st = await this.c.req('room:join', { room_id: this.room, ...(presence ? { presence } : {}) });
    if (st.type !== 'room:state') throw new Error(this.name + ' join: ' + JSON.stringify(st));
    let next = st.data.members_next;
    while (next) {
      const p = await this.c.req('room:members', { room_id: this.room, after: next, limit: 2 });
      if (p.type !== 'room:members_page') throw new Error('page: ' + JSON.stringify(p));
      next = p.data.next_after;
    }
    this.paged = true;
    return this;
  }
  apply(m) {
    const d = m.data;
    if (!d || d.room_id !== this.room) return;
    switch (m.type) {
      case 'room:state': this.view = new Map(d.members.map((x) => [x.client_id, x.user_id])); this.count = d.member_count; for (const x of d.members) this.presence.set(x.client_id, x.presence); break;
      case 'room:members_page': this.frames.page++; for (const x of d.members) { this.view.set(x.client_id, x.user_id); this.presence.set(x.client_id, x.presence); } break;
      case 'room:members_changed': this.frames.changed++; for (const x of d.joined) { this.view.set(x.client_id, x.user_id); this.presence.set(x.client_id, x.presence); } for (const x of d.left) this.view.delete(x.client_id); this.count = d.member_count; if (this.paged && this.view.size !== d.member_count) this.mismatch = (this.mismatch ?? 0) + 1; break;
      case 'room:joined': this.view.set(d.client_id, d.user_id); this.count++; this.presence.set(d.client_id, d.presence); break;
      case 'room:left': if (d.client_id !== this.c.connectionId) { if (this.view.delete(d.client_id)) this.count--; } break;
      case 'room:presence_batch': this.frames.batch++; for (const u of d.updates) this.presence.set(u.client_id, u.presence); break;
      case 'room:presence_updated': this.frames.presUpd++; this.presence.set(d.client_id, d.presence); break;
    }
  }
}
async function truth(room) {
  const r = await api('GET', `/api/rooms/${room}/connections?limit=1000`);
  if (r.status !== 200) throw new Error('truth: ' + r.text);
  return new Map(r.json.items.map((x) => [x.connection_id, x.user_id]));
}
const diff = (view, t) => {
  const ghosts = [...view.keys()].filter((k) => !t.has(k)), missing = [...t.keys()].filter((k) => !view.has(k));
  return { ghosts, missing };
};

if (want('members')) {
  console.log('== hostile room:members (large-room-members 3)');
  const ws = []; for (let i = 0; i < 5; i++) { const c = await new WSClient('m' + i).open(); await c.req('room:join', { room_id: 'big-m' }); ws.push(c); }
  const other = await new WSClient('other').open(); await other.req('room:join', { room_id: 'other-room' });
  const c = ws[0];
  const cases = [
    ['limit -1', { room_id: 'big-m', limit: -1 }, 'bad_request'], ['limit 0', { room_id: 'big-m', limit: 0 }, 'bad_request'],
    ['limit 1001', { room_id: 'big-m', limit: 1001 }, 'bad_request'], ['limit 1e20', { room_id: 'big-m', limit: 1e20 }, 'bad_request'],
    ['limit 1.5', { room_id: 'big-m', limit: 1.5 }, 'bad_request'], ['limit "5"', { room_id: 'big-m', limit: '5' }, 'bad_request'],
    ['limit null', { room_id: 'big-m', limit: null }, 'room:members_page'], ['limit 1000', { room_id: 'big-m', limit: 1000 }, 'room:members_page'],
    ['after "abc"', { room_id: 'big-m', after: 'abc' }, 'bad_request'], ['after "-1"', { room_id: 'big-m', after: '-1' }, 'bad_request'],
    ['after "+1"', { room_id: 'big-m', after: '+1' }, 'bad_request'], ['after " 1"', { room_id: 'big-m', after: ' 1' }, 'bad_request'],
    ['after "1e3"', { room_id: 'big-m', after: '1e3' }, 'bad_request'], ['after 20 digits (overflow)', { room_id: 'big-m', after: '99999999999999999999' }, 'bad_request'],
    ['after 21 digits', { room_id: 'big-m', after: '999999999999999999999' }, 'bad_request'], ['after max uint64', { room_id: 'big-m', after: '18446744073709551615' }, 'room:members_page'],
    ['after 5 (number)', { room_id: 'big-m', after: 5 }, 'bad_request'], ['after "0"', { room_id: 'big-m', after: '0' }, 'room:members_page'],
    ['after "" ', { room_id: 'big-m', after: '' }, 'room:members_page'], ['after "00001"', { room_id: 'big-m', after: '00001' }, 'room:members_page'],
    ['not in the room (other member)', { room_id: 'other-room' }, 'not_found'], ['room that does not exist', { room_id: 'nope-room' }, 'not_found'],
    ['bad room id', { room_id: 'a/b' }, 'bad_request'], ['no room_id', {}, 'bad_request'], ['extra field', { room_id: 'big-m', x: 1 }, null],
    ['data null', null, 'bad_request'], ['small room (not large)', { room_id: 'other-room' }, null],
  ];
  for (const [name, data, wantT] of cases) {
    const cl = name === 'small room (not large)' ? other : c;
    const r = await cl.req('room:members', data);
    const got = r.type === 'error' ? r.data.code : r.type;
    const detail = r.type === 'room:members_page' ? `members ${r.data.members.length} next ${r.data.next_after}` : JSON.stringify(r.data ?? r.type);
    if (wantT === null) console.log(`info ${name}: ${got} ${detail}`); else report(`room:members ${name}`, got === wantT, `${got} ${detail}`);
  }
  // cursor survives its member leaving
  const p1 = await c.req('room:members', { room_id: 'big-m', limit: 2 });
  const cur = p1.data.next_after;
  await ws[1].req('room:leave', { room_id: 'big-m' });
  const p2 = await c.req('room:members', { room_id: 'big-m', after: cur, limit: 10 });
  report('cursor of a member who left stays valid', p2.type === 'room:members_page' && !p2.data.members.some((m) => m.client_id === ws[1].connectionId), `${p2.data.members.length} members after it`);
  for (const x of [...ws, other]) x.close();
  await sleep(300);
}

if (want('converge')) {
  console.log('== convergence under join/leave churn (large-room-members 3)');
  const room = 'big-churn';
  const watchers = [];
  for (let i = 0; i < 6; i++) watchers.push(await new Watcher('w' + i, room).join());
  const churners = []; for (let i = 0; i < 6; i++) churners.push(await new WSClient('ch' + i).open());
  const late = [];
  const t0 = Date.now();
  // tight loops: join and leave sent back to back without waiting; every 50th cycle a churner drops its socket mid-room
  let cycles = 0, reconnects = 0;
  await Promise.all(churners.map(async (c0, i) => {
    let c = c0;
    for (let k = 0; k < 150; k++) {
      c.send('room:join', { room_id: room }, 'j' + k);
      if (k % 3 !== 2) c.send('room:leave', { room_id: room }, 'l' + k);
      if (k % 50 === 49) { c.ws.terminate(); reconnects++; c = await new WSClient('ch' + i).open(); churners[i] = c; }
      if (k % 4 === 3) await sleep(45); // ~90 messages/s: under msg-rate, so nothing is refused
      cycles++;
    }
    // end state: half stay in, half leave
    await c.req('room:join', { room_id: room });
    if (i % 2) await c.req('room:leave', { room_id: room });
  }));
  // a late joiner mid-way and a watcher that leaves and rejoins
  late.push(await new Watcher('late', room).join());
  await watchers[0].c.req('room:leave', { room_id: room });
  watchers[0] = await new Watcher('w0b', room).join();
  await sleep(1000);
  const t = await truth(room);
  const errs = {}; for (const c of churners) for (const f of c.frames) if (f.type === 'error') errs[f.data.code] = (errs[f.data.code] ?? 0) + 1;
  console.log(`   churners' error replies (current sockets): ${JSON.stringify(errs)}`);
  console.log(`   ${cycles} join/leave cycles by 6 churners (${reconnects} abrupt disconnects) in ${Date.now() - t0} ms; truth: ${t.size} members`);
  for (const w of [...watchers, ...late]) {
    const { ghosts, missing } = diff(w.view, t);
    report(`watcher ${w.name} converges (view = truth, member_count = truth)`, ghosts.length === 0 && missing.length === 0 && w.count === t.size,
      `view ${w.view.size}, count ${w.count}, ghosts ${ghosts.length}, missing ${missing.length}; frames: members_changed ${w.frames.changed}; frames after which view size != member_count: ${w.mismatch ?? 0}`);
  }
  // SDK view of the same room
  const { ParleyClient } = await import('../web/client/dist/index.js');
  const { WebSocket, token } = await import('./lib.mjs');
  const sdk = new ParleyClient({ url: 'ws://127.0.0.1:7880/ws', token: token('sdk'), WebSocket });
  await sdk.connect();
  const sroom = await sdk.joinRoom(room);
  await sleep(500);
  // more churn while the SDK watches
  await Promise.all(churners.map(async (c) => { for (let k = 0; k < 40; k++) { c.send('room:join', { room_id: room }); c.send('room:leave', { room_id: room }); if (k % 4 === 3) await sleep(45); } await c.req('room:join', { room_id: room }); }));
  await sleep(1000);
  const t2 = await truth(room);
  const sd = diff(sroom.members, t2);
  report('SDK Room.members converges', sd.ghosts.length === 0 && sd.missing.length === 0 && sroom.memberCount === t2.size, `members ${sroom.members.size} memberCount ${sroom.memberCount} truth ${t2.size} ghosts ${sd.ghosts.length} missing ${sd.missing.length}`);
  for (const w of [...watchers, ...late]) { const { ghosts, missing } = diff(w.view, t2); report(`watcher ${w.name} converges after round 2`, ghosts.length === 0 && missing.length === 0 && w.count === t2.size, `ghosts ${ghosts.length} missing ${missing.length} count ${w.count}/${t2.size}`); }
  sdk.close();
  for (const x of [...watchers, ...late]) x.c.close();
  for (const c of churners) c.close();
  await sleep(500);
}

if (want('presence')) {
  console.log('== presence flood, coalesced (large-room-members 3, interval 100 ms)');
  const room = 'big-pres';
  const watchers = []; for (let i = 0; i < 4; i++) watchers.push(await new Watcher('pw' + i, room).join({ n: 0 }));
  const senders = []; for (let i = 0; i < 3; i++) senders.push(await new WSClient('ps' + i).open());
  for (const s of senders) await s.req('room:join', { room_id: room, presence: { n: 0 } });
  await sleep(300);
  for (const w of watchers) w.frames = { batch: 0, presUpd: 0, changed: 0, page: 0 };
  const t0 = Date.now();
  const N = 400; // 80/s for 5 s each (under msg-rate 100/s)
  let replies = 0, errs = {};
  await Promise.all(senders.map(async (s) => {
    const off = s.on((m) => { if (m.type === 'room:presence_updated' && m.data.client_id === s.connectionId && m.id) replies++; if (m.type === 'error') errs[m.data.code] = (errs[m.data.code] ?? 0) + 1; });
    for (let k = 1; k <= N; k++) { s.send('room:update_presence', { room_id: room, presence: { n: k, pad: 'x'.repeat(50) } }, 'p' + k); if (k % 8 === 0) await sleep(100); }
  }));
  await sleep(500);
  const secs = (Date.now() - t0) / 1000;
  console.log(`   ${senders.length}x${N} updates in ${secs.toFixed(1)} s; sender replies ${replies}, errors ${JSON.stringify(errs)}`);
  for (const w of watchers) {
    const last = senders.map((s) => w.presence.get(s.connectionId)?.n);
    report(`watcher ${w.name}: latest presence of every sender = ${N}; frames ~1 per interval`, last.every((n) => n === N) && w.frames.presUpd === 0 && w.frames.batch <= secs * 10 + 5,
      `last ${JSON.stringify(last)}, room:presence_batch ${w.frames.batch}, room:presence_updated ${w.frames.presUpd} (of ${senders.length * N} changes)`);
  }
  // a flood past the rate limit: what happens to the flooder
  const f = await new WSClient('flooder').open(); await f.req('room:join', { room_id: room });
  for (let k = 0; k < 3000 && !f.closed; k++) f.send('room:update_presence', { room_id: room, presence: { n: k } }, 'f' + k);
  await sleep(1500);
  console.log(`   flooder sending 3000 at once: closed ${JSON.stringify(f.closed)}, rate_limited errors ${f.frames.filter((m) => m.type === 'error' && m.data.code === 'rate_limited').length}`);
  for (const x of [...watchers.map((w) => w.c), ...senders, f]) x.close();
  await sleep(300);
}

if (want('slow')) {
  console.log('== slow reader in a large room');
  const room = 'big-slow';
  const others = []; for (let i = 0; i < 4; i++) { const c = await new WSClient('so' + i).open(); await c.req('room:join', { room_id: room }); others.push(c); }
  const slow = await new WSClient('slowpoke').open(); await slow.req('room:join', { room_id: room });
  slow.ws._socket.pause(); // stop reading; the kernel buffers fill, then the server's queue
  const rss0 = rssKB(pid); let rssMax = rss0;
  const t0 = Date.now();
  const big = 'x'.repeat(60000);
  let sent = 0;
  while (Date.now() - t0 < 15000) {
    const s = others[sent % others.length];
    const r = await s.req('room:broadcast', { room_id: room, event: big });
    if (r.type !== 'ack') { console.log('   broadcast reply', r.type, JSON.stringify(r.data)); break; }
    sent++;
    rssMax = Math.max(rssMax, rssKB(pid));
    const conns = sent % 20 === 0 ? (await truth(room)).size : null;
    if (conns === 4) break; // the slow one is out
    if (sent % 8 === 0) await sleep(10);
  }
  const outAt = Date.now() - t0;
  slow.ws._socket.resume();
  await sleep(1500);
  console.log(`   flood started ${new Date(t0).toISOString()}, slow reader out of the room list at ${new Date(t0 + outAt).toISOString()}; server log: ${(await import('node:fs')).readFileSync('/tmp/rv/srv.log', 'utf8').split('\n').filter((l) => l.includes('slow consumer')).at(-1)?.slice(0, 60)}`);
  console.log(`   ${sent} broadcasts of 60 KB; the slow reader ${slow.closed ? 'was closed ' + JSON.stringify(slow.closed) : 'is still open'} (out of the room after ~${outAt} ms); server RSS ${rss0} -> max ${rssMax} KB`);
  report('slow reader closed with 4008', slow.closed?.code === 4008, JSON.stringify(slow.closed));
  const t = await truth(room);
  report('others still in the room', t.size === 4, `${t.size}`);
  for (const c of others) c.close();
  await sleep(300);
}

if (want('scale')) {
  console.log('== N clients joining one room fast: server CPU (O(N^2)?)');
  for (const N of [100, 200, 300]) {
    const room = `big-scale-${N}-${Date.now()}`;
    const cs = [];
    for (let i = 0; i < N; i++) cs.push(new WSClient(`sc${i}`, { noKeep: true }));
    await Promise.all(cs.map((c) => c.open()));
    let frames = 0, bytes = 0;
    for (const c of cs) c.on((m) => { frames++; });
    await sleep(300);
    const cpu0 = cpuTicks(pid), t0 = Date.now();
    await Promise.all(cs.map((c) => c.req('room:join', { room_id: room }, 20000)));
    const joinMs = Date.now() - t0;
    await sleep(600); // batches flushed
    const cpu = cpuTicks(pid) - cpu0;
    // then everyone leaves at once
    const cpu1 = cpuTicks(pid), t1 = Date.now();
    await Promise.all(cs.map((c) => c.req('room:leave', { room_id: room }, 20000)));
    await sleep(600);
    const cpuLeave = cpuTicks(pid) - cpu1;
    console.log(`   N=${N}: all joined in ${joinMs} ms; server CPU for the joins ${cpu * 10} ms (${(cpu * 10 / N).toFixed(2)} ms/join), for the leaves ${cpuLeave * 10} ms; frames received by all clients ${frames} (${(frames / N).toFixed(1)} per client); rss ${rssKB(pid)} KB`);
    for (const c of cs) c.close();
    await sleep(800);
  }
}
if (want('scale2')) {
  console.log('== N clients joining one room one after another (2 ms apart, over many batch ticks): server CPU');
  for (const N of [100, 200, 300]) {
    const room = `big-spread-${N}-${Date.now()}`;
    const cs = [];
    for (let i = 0; i < N; i++) cs.push(new WSClient(`sp${i}`, { noKeep: true }));
    await Promise.all(cs.map((c) => c.open()));
    let frames = 0, bytes = 0;
    for (const c of cs) c.ws.on('message', (d) => { frames++; bytes += d.length; });
    await sleep(300);
    const cpu0 = cpuTicks(pid), t0 = Date.now();
    const joins = [];
    for (const c of cs) { joins.push(c.req('room:join', { room_id: room, presence: { name: 'member ' + c.user, cursor: { x: 1, y: 2 } } }, 20000)); await sleep(2); }
    await Promise.all(joins);
    await sleep(600);
    const cpu = cpuTicks(pid) - cpu0;
    console.log(`   N=${N}: joins over ${Date.now() - t0 - 600} ms; server CPU ${cpu * 10} ms (${(cpu * 10 / N).toFixed(2)} ms/join); frames to clients ${frames} (${(frames / N).toFixed(1)}/client), ${(bytes / 1048576).toFixed(1)} MiB`);
    for (const c of cs) c.close();
    await sleep(800);
  }
}
console.log(failures ? `${failures} checks failed` : 'all checks held');
process.exit(failures ? 1 : 0);

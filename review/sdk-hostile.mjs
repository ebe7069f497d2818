// Hostile server vs the SDK (web/client/dist, build it first): a fake Parley
// server (node `ws`) on 127.0.0.1 feeds a ParleyClient hostile frames and close
// codes. Checks: nothing throws uncaught, Object.prototype stays clean, at most
// one socket at a time, reconnect/backoff per API.md, stop on 4003.
// Usage: node review/sdk-hostile.mjs [scenario...]   (default: all)
import { createRequire } from 'node:module';
import http from 'node:http';
const require = createRequire(new URL('../web/client/node_modules/', import.meta.url));
const WS = require('ws');
const { ParleyClient, ParleyAPI } = await import('../web/client/dist/index.js');

const protoKeys0 = Object.getOwnPropertyNames(Object.prototype).sort().join(',');
const arrKeys0 = Object.getOwnPropertyNames(Array.prototype).sort().join(',');
let uncaught = 0, handlerErrors = 0;
process.on('uncaughtException', (e) => { uncaught++; console.log('  UNCAUGHT', e?.stack ?? e); });
process.on('unhandledRejection', (e) => { uncaught++; console.log('  UNHANDLED REJECTION', e?.code ?? '', e?.message ?? e); });
const origErr = console.error;
console.error = (...a) => { handlerErrors++; origErr('  console.error:', ...a.map((x) => (x instanceof Error ? x.message : x))); };
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const polluted = () => {
  const bad = [];
  if (Object.getOwnPropertyNames(Object.prototype).sort().join(',') !== protoKeys0) bad.push('Object.prototype keys changed');
  if (Object.getOwnPropertyNames(Array.prototype).sort().join(',') !== arrKeys0) bad.push('Array.prototype keys changed');
  for (const k of ['polluted', 'x', 'isAdmin', 'p1', 'p2', 'p3', 'p4', 'p5', 'p6', 'p7', 'p8', 'p9']) if (({})[k] !== undefined) bad.push(`({}).${k} = ${JSON.stringify(({})[k])}`);
  return bad;
};
let failures = 0;
const report = (name, ok, detail) => { if (!ok) failures++; console.log(`${ok ? 'ok  ' : 'FAIL'} ${name}${detail ? ': ' + detail : ''}`); };

// A fake server: onConn(ws, n, req) per connection; counts concurrent sockets.
async function fakeServer(onConn, { httpStatus = 404 } = {}) {
  const srv = http.createServer((req, res) => { res.writeHead(httpStatus, { 'content-type': 'application/json' }); res.end('{"error":"not_found","message":"x"}'); });
  const wss = new WS.WebSocketServer({ server: srv });
  const st = { n: 0, open: 0, maxOpen: 0, times: [], sockets: [] };
  wss.on('connection', (ws, req) => {
    st.n++; st.open++; st.maxOpen = Math.max(st.maxOpen, st.open); st.times.push(Date.now()); st.sockets.push(ws);
    ws.on('close', () => st.open--);
    ws.on('error', () => {});
    onConn(ws, st.n, req, st);
  });
  await new Promise((r) => srv.listen(0, '127.0.0.1', r));
  st.url = `ws://127.0.0.1:${srv.address().port}/ws`;
  st.close = () => new Promise((r) => { for (const c of wss.clients) c.terminate(); wss.close(); srv.close(r); srv.closeAllConnections?.(); });
  return st;
}
const connected = (ws, cid = 'c1', extra = {}) => ws.send(JSON.stringify({ type: 'connected', data: { user_id: 'u', connection_id: cid, heartbeat_interval_ms: 30000, server_time: new Date().toISOString(), ...extra } }));
const send = (ws, o) => ws.send(typeof o === 'string' ? o : JSON.stringify(o));

const P = '"__proto__":{"polluted":1,"isAdmin":true}';
const C = '"constructor":{"prototype":{"p1":1}}';
const hostileObj = `{${P},${C},"prototype":{"p2":1},"toString":"x","hasOwnProperty":1,"valueOf":null}`;

const scenarios = {
  async pollution() {
    const st = await fakeServer((ws) => {
      connected(ws, 'me');
      ws.on('message', (raw) => {
        const m = JSON.parse(raw);
        if (m.type === 'room:join') {
          const mem = (id) => `{"client_id":"${id}","user_id":"u-${id}",${P},"presence":${hostileObj},"joined_at":"x"}`;
          send(ws, `{"type":"room:state","id":"${m.id}","data":{"room_id":"r",${P},"client_id":"me","member_count":3,"members":[${mem('me')},${mem('a')},{"client_id":"__proto__","user_id":"x","presence":${hostileObj}},{"client_id":"constructor","user_id":"y"}],"storage":{"version":0,"data":${hostileObj}},"members_next":"n1"}}`);
          // storage ops aiming at the prototype
          const ops = [
            '{"op":"add","path":"/__proto__/p3","value":1}', '{"op":"add","path":"/constructor/prototype/p4","value":1}',
            '{"op":"add","path":"/__proto__","value":{"p5":1}}', '{"op":"copy","from":"/__proto__","path":"/q"}',
            '{"op":"replace","path":"/prototype/p2","value":{"__proto__":{"p6":1}}}', '{"op":"move","from":"/constructor","path":"/__proto__/p7"}',
            '{"op":"add","path":"/toString","value":"y"}', '{"op":"add","path":"/valueOf/p8","value":1}',
          ];
          ops.forEach((op, i) => send(ws, `{"type":"room:storage_updated","data":{"room_id":"r","version":${i + 1},"client_id":"a","ops":[${op}]}}`));
          send(ws, `{"type":"room:presence_updated","data":{"room_id":"r","client_id":"a","user_id":"u-a","presence":${hostileObj},"timestamp":"x"}}`);
          send(ws, `{"type":"room:presence_updated","data":{"room_id":"r","client_id":"__proto__","user_id":"x","presence":{"p9":1}}}`);
          send(ws, `{"type":"room:members_changed","data":{"room_id":"r","joined":[${mem('b')},{"client_id":"__proto__","user_id":"z",${P}},{${P}}],"left":[{"client_id":"a",${P}},{"client_id":"hasOwnProperty"}],"member_count":3,${P}}}`);
          send(ws, `{"type":"room:presence_batch","data":{"room_id":"r","updates":[{"client_id":"b","user_id":"u-b","presence":${hostileObj}},{${P}},{"client_id":"__proto__","presence":{"polluted":1}},null,5,"s"],${P}}}`);
          send(ws, `{"type":"room:members_page","data":{"room_id":"r","members":[${mem('c')},{${P}}],"next_after":null,${P}}}`);
          send(ws, `{"type":"room:event","data":{"room_id":"r","client_id":null,"user_id":null,"event":${hostileObj}}}`);
          for (const t of ['__proto__', 'constructor', 'hasOwnProperty', 'toString', 'state', 'connected', 'error', 'message', 'disconnected'])
            send(ws, `{"type":"${t}","data":${hostileObj}}`);
          send(ws, `{"type":"room:joined","data":{"room_id":"r","client_id":"d","user_id":"u-d",${P},"presence":${hostileObj}}}`);
          send(ws, `{"type":"presence:update","data":${hostileObj}}`);
          send(ws, `{${P},"type":"room:event","data":{"room_id":"r","event":1}}`);
          send(ws, `{"type":"room:state","data":{"room_id":"__proto__","members":[]}}`);
        }
        if (m.type === 'room:members') send(ws, `{"type":"room:members_page","id":"${m.id}","data":{"room_id":"r","members":[{${P}}],"next_after":null}}`);
      });
    });
    const c = new ParleyClient({ url: st.url, token: 't', WebSocket: WS });
    const seen = [];
    c.on('message', (e) => seen.push(e.type));
    await c.connect();
    const room = await c.joinRoom('r');
    let events = 0;
    room.on('storage', () => events++);
    await sleep(500);
    const bad = polluted();
    report('pollution: Object.prototype clean after hostile room:state/storage/presence/members_changed/presence_batch/members_page/event', bad.length === 0, bad.join('; '));
    report('pollution: storage mirror has __proto__ as own key only', Object.getPrototypeOf(room.storage) === Object.prototype || Object.getPrototypeOf(room.storage) === null, `keys ${JSON.stringify(Object.keys(room.storage))} version ${room.version}`);
    console.log(`   members: ${JSON.stringify([...room.members.keys()])} memberCount ${room.memberCount}; state ${room.state}; frames seen ${seen.length}`);
    c.close(); await st.close();
  },

  async types() {
    // wrong types / missing fields / huge numbers in every frame
    const frames = [
      'null', '[]', '"str"', '5', '{}', '{"type":5}', '{"type":""}', '{"type":"room:state"}', '{"type":"room:state","data":null}',
      '{"type":"room:state","data":[]}', '{"type":"room:state","data":{"room_id":"r","members":"x","storage":5}}',
      '{"type":"room:state","data":{"room_id":"r","members":[null,1,"x",[],{"client_id":5}],"storage":{"version":"1","data":[]}}}',
      '{"type":"room:state","data":{"room_id":"r","member_count":1e308,"members":[],"storage":{"version":1e308,"data":{}}}}',
      '{"type":"room:storage_updated","data":{"room_id":"r","version":1e308,"ops":[]}}',
      '{"type":"room:storage_updated","data":{"room_id":"r","version":-1,"ops":null}}',
      '{"type":"room:storage_updated","data":{"room_id":"r","version":1,"ops":[{"op":"add","path":"/a/b/c","value":1}]}}',
      '{"type":"room:storage_updated","data":{"room_id":"r","version":2,"ops":[null,5]}}',
      '{"type":"room:members_changed","data":{"room_id":"r","joined":{},"left":"x","member_count":-5}}',
      '{"type":"room:members_changed","data":{"room_id":"r","joined":[{"client_id":"z","user_id":"q","presence":[1]}],"left":[null,{"client_id":5}],"member_count":1e308}}',
      '{"type":"room:presence_batch","data":{"room_id":"r","updates":{"length":5}}}',
      '{"type":"room:presence_updated","data":{"room_id":"r","client_id":"z","presence":"x"}}',
      '{"type":"room:members_page","data":{"room_id":"r","members":null,"next_after":5}}',
      '{"type":"room:left","data":{"room_id":"r","client_id":null}}',
      '{"type":"room:joined","data":{"room_id":"r"}}',
      '{"type":"room:event","data":{"room_id":"r"}}',
      '{"type":"error","data":null}', '{"type":"error","id":"999","data":{"code":5}}',
      '{"type":"room:state","id":5,"data":{}}', '{"type":"message:create","data":null}', '{"type":"typing:start","data":5}',
      '{"type":"media:new_producer","data":null}', '{"type":"connected","data":null}', '{"type":"pong","id":"1"}',
      '{"type":"room:state","data":{"room_id":"r","members":[],"storage":{"version":0,"data":' + '['.repeat(20000) + ']'.repeat(20000) + '}}}',
      '{"type":"room:event","data":{"room_id":"r","event":' + '{"a":'.repeat(50000) + '1' + '}'.repeat(50000) + '}}',
      '{"type":"room:presence_updated","data":{"room_id":"r","client_id":"z","presence":{"a":' + '['.repeat(15000) + ']'.repeat(15000) + '}}}',
      '\u0000\uffff', 'x'.repeat(5 << 20),
    ];
    const st = await fakeServer((ws) => {
      connected(ws, 'me');
      ws.on('message', (raw) => {
        const m = JSON.parse(raw);
        if (m.type === 'room:join') {
          send(ws, { type: 'room:state', id: m.id, data: { room_id: 'r', client_id: 'me', member_count: 1, members: [{ client_id: 'me', user_id: 'u', presence: {} }], storage: { version: 0, data: {} } } });
          for (const f of frames) send(ws, f);
          send(ws, { type: 'room:event', data: { room_id: 'r', client_id: null, user_id: null, event: 'still-alive' } });
        }
      });
    });
    const c = new ParleyClient({ url: st.url, token: 't', WebSocket: WS });
    await c.connect();
    const room = await c.joinRoom('r');
    const alive = new Promise((r) => room.on('event', (e) => e.event === 'still-alive' && r(true)));
    const ok = await Promise.race([alive, sleep(5000).then(() => false)]);
    report('types: client survives malformed frames and still delivers a later event', ok, `state ${c.state}, room ${room.state}, version ${room.version}, memberCount ${room.memberCount}, members ${room.members.size}`);
    report('types: memberCount stays a sane number', Number.isFinite(room.memberCount) && room.memberCount >= 0 && room.memberCount < 1e6, String(room.memberCount));
    report('types: version stays sane', Number.isSafeInteger(room.version), String(room.version));
    c.close(); await st.close();
  },

  async loadMembersFilter() {
    const st = await fakeServer((ws) => {
      connected(ws, 'me');
      ws.on('message', (raw) => {
        const m = JSON.parse(raw);
        if (m.type === 'room:join') send(ws, { type: 'room:state', id: m.id, data: { room_id: 'r', client_id: 'me', member_count: 5, members: [{ client_id: 'me', user_id: 'u', presence: {} }], members_next: 'p1', storage: { version: 0, data: {} } } });
        if (m.type === 'room:members') send(ws, { type: 'room:members_page', id: m.id, data: { room_id: 'r', members: [{ client_id: 'a', user_id: 'ua', presence: {} }, { bogus: true }, 7], next_after: null } });
      });
    });
    const c = new ParleyClient({ url: st.url, token: 't', WebSocket: WS });
    await c.connect();
    const room = await c.joinRoom('r', { membersAutoFetchLimit: 0 });
    const page = await room.loadMembers(10);
    report('loadMembers: malformed entries are left out of the page', page.members.every((m) => m && typeof m.client_id === 'string'), `members: ${JSON.stringify(page.members)}`);
    c.close(); await st.close();
  },

  async neverConnected() {
    const st = await fakeServer(() => {});
    const c = new ParleyClient({ url: st.url, token: 't', WebSocket: WS, connectTimeoutMs: 1000 });
    const t0 = Date.now();
    let err;
    try { await c.connect(); } catch (e) { err = e; }
    report('never `connected`: connect() rejects with timeout', err?.code === 'timeout', `${err?.code} after ${Date.now() - t0} ms; state ${c.state}`);
    await sleep(4000);
    report('never `connected`: retries one socket at a time', st.maxOpen === 1, `attempts ${st.n} in ~5 s, max open at once ${st.maxOpen}`);
    c.close(); await sleep(100);
    report('never `connected`: close() ends it', st.open === 0, `open ${st.open}`);
    await st.close();
  },

  async closeCodes() {
    const codes = [1000, 1001, 1006, 1011, 4001, 4003, 4008, 4009, 4029, 4400, 4999];
    for (const code of codes) {
      for (const withGetToken of code === 4001 ? [false, true] : [false]) {
        const st = await fakeServer((ws) => {
          connected(ws, 'c' + Math.random());
          setTimeout(() => { if (code === 1006) ws.terminate(); else ws.close(code, 'bye ' + code); }, 50);
        }, { httpStatus: 200 });
        let tokens = 0;
        const opts = { url: st.url, WebSocket: WS };
        if (withGetToken) opts.getToken = async () => { tokens++; return 'tok' + tokens; }; else opts.token = 't';
        const c = new ParleyClient(opts);
        const dis = [], states = [], errs = [];
        c.on('disconnected', (d) => dis.push(d));
        c.on('state', (s) => states.push(s.state));
        c.on('error', (e) => errs.push(e.code));
        await c.connect().catch(() => {});
        await sleep(6000);
        const gaps = st.times.slice(1).map((t, i) => t - st.times[i]);
        console.log(`${code}${withGetToken ? ' (getToken)' : ''}: connections in 6 s ${st.n}, max open ${st.maxOpen}, gaps ms [${gaps.join(',')}], final state ${c.state}, willReconnect ${dis[0]?.willReconnect}, errors [${[...new Set(errs)].join(',')}]${withGetToken ? `, getToken calls ${tokens}` : ''}`);
        const stops = code === 4003 || (code === 4001 && !withGetToken);
        report(`close ${code}${withGetToken ? ' with getToken' : ''}: ${stops ? 'stops' : 'reconnects with backoff, one socket'}`,
          st.maxOpen === 1 && (stops ? st.n === 1 && c.state === 'closed' : st.n >= 2 && st.n <= 12), `n=${st.n}`);
        c.close(); await st.close();
      }
    }
  },

  async heartbeat() {
    for (const hb of [1, 1e10]) {
      let pings = 0;
      const st = await fakeServer((ws) => { connected(ws, 'me', { heartbeat_interval_ms: hb }); ws.on('message', (r) => { if (JSON.parse(r).type === 'ping') pings++; }); });
      const c = new ParleyClient({ url: st.url, token: 't', WebSocket: WS });
      await c.connect();
      const cpu0 = process.cpuUsage();
      await sleep(2000);
      const cpu = process.cpuUsage(cpu0);
      console.log(`heartbeat_interval_ms ${hb}: pings in 2 s ${pings}, connections ${st.n}, CPU ${((cpu.user + cpu.system) / 1000).toFixed(0)} ms in 2 s, state ${c.state}`);
      c.close(); await st.close();
    }
  },
};
const pick = process.argv.slice(2);
for (const [name, fn] of Object.entries(scenarios)) {
  if (pick.length && !pick.includes(name)) continue;
  console.log(`== ${name}`);
  try { await fn(); } catch (e) { failures++; console.log('  SCENARIO THREW', e?.stack ?? e); }
}
const bad = polluted();
report('end: Object.prototype clean', bad.length === 0, bad.join('; '));
report('end: no uncaught exception or unhandled rejection', uncaught === 0, `${uncaught}`);
console.log(`handler errors logged by the SDK (console.error): ${handlerErrors}`);
console.log(failures ? `${failures} checks failed` : 'all checks held');
process.exit(failures ? 1 : 0);

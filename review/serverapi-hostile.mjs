// Hostile pass over the server API. Server: PARLEY_API_KEY=$(cat /tmp/rv/apikey) review/srv.sh start --max-connections-per-user 100
// Prints one line per probe: status, content-type, body (cut), and a verdict
// when the expectation is checkable. Exit code 1 when a check failed.
import { WSClient, api, token, sleep, APIKEY, BASE } from './lib.mjs';
import net from 'node:net';
let bad = 0;
const cut = (s, n = 160) => (s.length > n ? s.slice(0, n) + `…(${s.length} bytes)` : s);
function check(name, r, wantStatus, wantCode) {
  const jsonErr = r.json && typeof r.json.error === 'string' && typeof r.json.message === 'string';
  const ok = r.status === wantStatus && (wantCode ? jsonErr && r.json.error === wantCode : true) && (r.ct ?? '').startsWith('application/json');
  if (!ok) bad++;
  console.log(`${ok ? 'ok  ' : 'FAIL'} ${name}: ${r.status} ${r.ct} ${cut(r.text.replace(/\n/g, '\\n'))}${ok ? '' : `   (want ${wantStatus} ${wantCode ?? ''} JSON)`}`);
  return r;
}
// raw HTTP for paths fetch would normalise (.., %2F)
function rawReq(method, path, { headers = {}, body = '' } = {}) {
  return new Promise((resolve) => {
    const u = new URL(BASE);
    const s = net.connect(Number(u.port), u.hostname);
    let out = '';
    s.on('data', (d) => (out += d.toString('latin1')));
    s.on('end', () => {
      const [head, ...rest] = out.split('\r\n\r\n');
      const status = Number(head.split(' ')[1]);
      const ct = /content-type: ([^\r\n]+)/i.exec(head)?.[1] ?? null;
      const text = rest.join('\r\n\r\n');
      let json; try { json = JSON.parse(text); } catch {}
      resolve({ status, ct, text, json, head });
    });
    const b = Buffer.isBuffer(body) ? body : Buffer.from(body);
    const hs = { Host: u.host, Connection: 'close', Authorization: `Bearer ${APIKEY}`, 'Content-Length': b.length, ...headers };
    s.write(`${method} ${path} HTTP/1.1\r\n` + Object.entries(hs).filter(([, v]) => v !== null).map(([k, v]) => `${k}: ${v}`).join('\r\n') + '\r\n\r\n');
    s.write(b);
  });
}
// a live room with watchers: every refused broadcast must reach nobody
const w1 = await new WSClient('watcher').open(); await w1.req('room:join', { room_id: 'live-1' });
const events = () => w1.frames.filter((f) => f.type === 'room:event').length;
const B = '/api/rooms/live-1/broadcast';

console.log('== authentication');
check('no Authorization', await api('POST', B, { key: null, body: { event: 1 } }), 401, 'unauthorized');
check('Bearer empty', await api('POST', B, { key: '', body: { event: 1 } }), 401, 'unauthorized');
check('Basic scheme', await api('POST', B, { key: null, headers: { Authorization: 'Basic ' + Buffer.from('x:' + APIKEY).toString('base64') }, body: { event: 1 } }), 401, 'unauthorized');
check('wrong key', await api('POST', B, { key: 'x' + APIKEY, body: { event: 1 } }), 401, 'unauthorized');
check('short key (prefix)', await api('POST', B, { key: APIKEY.slice(0, 8), body: { event: 1 } }), 401, 'unauthorized');
check('key + trailing space', await api('POST', B, { key: APIKEY + ' ', body: { event: 1 } }), 401, 'unauthorized');
check('lowercase bearer', await api('POST', B, { key: null, headers: { Authorization: 'bearer ' + APIKEY }, body: { event: 1 } }), 202);
check('user token', await api('POST', B, { key: token('alice'), body: { event: 1 } }), 403, 'forbidden');
check('user token on GET live rooms', await api('GET', '/api/live/rooms', { key: token('alice') }), 403, 'forbidden');
check('expired user token', await api('GET', '/api/live/rooms', { key: token('alice', { ttl: -10 }) }), 401, 'unauthorized');
check('key as ?token= query', await api('GET', '/api/live/rooms?token=' + APIKEY, { key: null }), 401, 'unauthorized');
check('key 10 KB of garbage', await api('GET', '/api/live/rooms', { key: 'A'.repeat(10240) }), 401, 'unauthorized');
check('two Authorization headers (key first)', await rawReq('GET', '/api/live/rooms', { headers: { Authorization: `Bearer ${APIKEY}\r\nAuthorization: Bearer nope` } }), 401, 'unauthorized');
const before = events();

console.log('== broadcast bodies');
check('empty body', await api('POST', B, { raw: '' }), 400, 'bad_request');
check('not JSON', await api('POST', B, { raw: '{event:' }), 400, 'bad_request');
check('array', await api('POST', B, { raw: '[1]' }), 400, 'bad_request');
check('null body', await api('POST', B, { raw: 'null' }), 400, 'bad_request');
check('event missing', await api('POST', B, { raw: '{}' }), 400, 'bad_request');
check('extra member', await api('POST', B, { raw: '{"event":1,"x":2}' }), 400, 'bad_request');
check('trailing data', await api('POST', B, { raw: '{"event":1} {"event":2}' }), 400, 'bad_request');
check('invalid UTF-8 in event', await api('POST', B, { raw: Buffer.concat([Buffer.from('{"event":"'), Buffer.from([0xff, 0xfe]), Buffer.from('"}')]) }), 400, 'bad_request');
check('invalid UTF-8 outside event', await api('POST', B, { raw: Buffer.concat([Buffer.from('{"event":1}'), Buffer.from([0x20, 0xff])]) }), 400, 'bad_request');
check('duplicate "event" (Event + event)', await api('POST', B, { raw: '{"event":1,"Event":2}' }), 400, 'bad_request');
check('"EVENT" only (case-folded name)', await api('POST', B, { raw: '{"EVENT":"case"}' }), 400, 'bad_request');
check('deep nesting 100k', await api('POST', B, { raw: '{"event":' + '['.repeat(100000) + ']'.repeat(100000) + '}' }), 400);
check('body 1 MiB + 1', await api('POST', B, { raw: '{"event":"' + 'a'.repeat(1048576) + '"}' }), 413, 'too_large');
check('body 20 MiB', await api('POST', B, { raw: '{"event":"' + 'a'.repeat(20 << 20) + '"}' }), 413, 'too_large');
const big = (n) => '{"event":"' + 'a'.repeat(n - 2) + '"}'; // event of exactly n bytes
check('event 65536 bytes', await api('POST', B, { raw: big(65536) }), 202);
check('event 65537 bytes', await api('POST', B, { raw: big(65537) }), 413, 'too_large');
check('event 60 KB + 10 KB whitespace (compact < 64 KiB)', await api('POST', B, { raw: '{"event":["' + 'a'.repeat(60000) + '"' + ' '.repeat(10000) + ']}' }), 202);
check('wrong content-type', await api('POST', B, { raw: '{"event":1}', headers: { 'Content-Type': 'text/plain' } }), 202);
check('event with \\u0000 and lone surrogate', await api('POST', B, { raw: '{"event":"\\u0000\\ud800"}' }), 202);
await sleep(300);
console.log(`   watcher got ${events() - before} events from the probes above (expect 6: lowercase bearer, 65536, whitespace, content-type, lone surrogate ... count the 202s)`);
const frames = w1.frames.filter((f) => f.type === 'room:event').slice(-5).map((f) => cut(JSON.stringify(f.data.event), 60));
console.log('   last events:', frames.join(' | '));

console.log('== room ids');
for (const [name, path, st, code] of [
  ['%2F in id', '/api/rooms/a%2Fb/broadcast', 400, 'bad_request'],
  ['.. segment', '/api/rooms/../live/rooms', null],
  ['%2E%2E', '/api/rooms/%2E%2E/connections', 400, 'bad_request'],
  ['unicode', '/api/rooms/%C3%A9t%C3%A9/connections', 400, 'bad_request'],
  ['invalid UTF-8 %FF', '/api/rooms/%FF/connections', 400, 'bad_request'],
  ['%00', '/api/rooms/a%00b/connections', 400, 'bad_request'],
  ['129 chars', '/api/rooms/' + 'a'.repeat(129) + '/connections', 400, 'bad_request'],
  ['128 chars', '/api/rooms/' + 'a'.repeat(128) + '/connections', 200],
  ['empty id', '/api/rooms//connections', null],
  ['space', '/api/rooms/a%20b/connections', 400, 'bad_request'],
  ['10 KB id', '/api/rooms/' + 'a'.repeat(10240) + '/connections', 400, 'bad_request'],
]) {
  const r = await rawReq('GET', path);
  if (st === null) console.log(`info ${name}: ${r.status} ${r.ct} ${cut(r.text)} ${/location: ([^\r\n]+)/i.exec(r.head)?.[1] ?? ''}`);
  else check(name, r, st, code);
}
console.log('== paging');
for (const q of ['limit=0', 'limit=-1', 'limit=1001', 'limit=99999999999999999999', 'limit=1e3', 'limit=', 'limit=1&limit=2000', 'after=' + 'z'.repeat(257), 'after=%FF%FE', 'after=%00', 'limit=%201']) {
  const r = await api('GET', '/api/live/rooms?' + q);
  console.log(`info live/rooms?${cut(q, 40)}: ${r.status} ${cut(r.text, 120)}`);
  const r2 = await api('GET', '/api/rooms/live-1/connections?' + q);
  console.log(`info connections?${cut(q, 40)}: ${r2.status} ${cut(r2.text, 120)}`);
}

console.log('== disconnect');
const D = (u) => `/api/users/${u}/disconnect`;
check('user with 0 connections', await api('POST', D('nobody'), {}), 200);
check('reason invalid UTF-8', await api('POST', D('nobody'), { raw: Buffer.concat([Buffer.from('{"reason":"'), Buffer.from([0xc3, 0x28]), Buffer.from('"}')]) }), 400, 'bad_request');
check('reason number', await api('POST', D('nobody'), { raw: '{"reason":5}' }), 400, 'bad_request');
check('reason + extra', await api('POST', D('nobody'), { raw: '{"reason":"x","y":1}' }), 400, 'bad_request');
check('body null', await api('POST', D('nobody'), { raw: 'null' }), 400, 'bad_request');
check('body []', await api('POST', D('nobody'), { raw: '[]' }), 400, 'bad_request');
check('user id 129 chars', await api('POST', D('u'.repeat(129)), {}), 400, 'bad_request');
check('user id 128 x "é" (256 bytes)', await api('POST', D(encodeURIComponent('é'.repeat(128))), {}), 200);
check('user id %00', await rawReq('POST', D('a%00b')), 400, 'bad_request');
check('user id %0A', await rawReq('POST', D('a%0Ab')), 400, 'bad_request');
check('user id spaces only', await rawReq('POST', D('%20%20')), 400, 'bad_request');
check('user id %FF (invalid UTF-8)', await rawReq('POST', D('%FF')), 400, 'bad_request');
check('user id with %2F', await rawReq('POST', D('a%2Fb')), 200);
check('user id "\\u202e" (RTL override)', await rawReq('POST', D('%E2%80%AEx')), 200);
// real closes: reason with control chars, 10 KB, and a multi-byte cut
async function disconnectWith(user, raw, n = 1) {
  const cs = []; for (let i = 0; i < n; i++) cs.push(await new WSClient(user).open());
  const t0 = Date.now();
  const r = await api('POST', D(encodeURIComponent(user)), { raw });
  await sleep(300);
  const codes = {}; for (const c of cs) { const k = c.closed ? `${c.closed.code}:${JSON.stringify(c.closed.reason)}` : 'open'; codes[k] = (codes[k] ?? 0) + 1; }
  for (const c of cs) c.close();
  return { r, codes, ms: Date.now() - t0 };
}
let x = await disconnectWith('ctl', JSON.stringify({ reason: 'line1\nline2\u0000\u001b[31mred\u0007' }));
console.log(`info reason with control chars: ${x.r.status} ${x.r.text} closes ${JSON.stringify(x.codes)}`);
x = await disconnectWith('tenkb', JSON.stringify({ reason: 'é'.repeat(5120) }));
console.log(`info reason 10 KB of é: ${x.r.status} ${x.r.text} closes ${cut(JSON.stringify(x.codes), 300)}`);
x = await disconnectWith('emoji', JSON.stringify({ reason: 'a' + '😀'.repeat(40) }));
console.log(`info reason 1+160 bytes of emoji: ${x.r.status} ${x.r.text} closes ${cut(JSON.stringify(x.codes), 300)}`);
x = await disconnectWith('sixty', '', 60);
console.log(`info user with 60 connections: ${x.r.status} ${x.r.text} in ${x.ms} ms; closes ${JSON.stringify(x.codes)}`);
x = await disconnectWith('sixty', '', 0);
console.log(`info again: ${x.r.status} ${x.r.text}`);

console.log('== concurrency: 100 broadcasts + 50 lists + 20 disconnects at once');
const wc = await new WSClient('conc').open(); await wc.req('room:join', { room_id: 'conc' });
const victims = []; for (let i = 0; i < 20; i++) victims.push(await new WSClient('victim').open());
const t0 = Date.now();
const all = await Promise.all([
  ...Array.from({ length: 100 }, (_, i) => api('POST', '/api/rooms/conc/broadcast', { body: { event: i } })),
  ...Array.from({ length: 50 }, () => api('GET', '/api/live/rooms')),
  ...Array.from({ length: 20 }, () => api('POST', D('victim'), {})),
]);
await sleep(500);
const st = {}; for (const r of all) st[r.status] = (st[r.status] ?? 0) + 1;
const closedSum = all.slice(150).reduce((a, r) => a + (r.json?.closed ?? 0), 0);
const got = wc.frames.filter((f) => f.type === 'room:event').map((f) => f.data.event);
const inOrder = got.every((v, i) => i === 0 || true);
console.log(`info statuses ${JSON.stringify(st)} in ${Date.now() - t0} ms; watcher got ${got.length}/100 events (distinct ${new Set(got).size}); disconnect calls closed ${closedSum} in total (want 20), victims closed: ${victims.filter((v) => v.closed?.code === 4003).length}/20`);
for (const c of [w1, wc, ...victims]) c.close();
console.log(bad ? `${bad} checks failed` : 'all checks held');
process.exitCode = bad ? 1 : 0;

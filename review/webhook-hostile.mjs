// Hostile webhook receivers vs the real-time path. Starts its own receivers on
// 127.0.0.1 (hang, 500 forever, 307 to a loopback sentinel, 1 byte/s reader, a good one),
// then the server (review/srv.sh) with all five URLs, generates EVENTS webhook events
// (join/leave cycles), and reports: room:broadcast round trip (p50/p99/max) before and
// during the load, server RSS over time, /metrics webhook counters, and whether the
// redirect was followed. Usage: EVENTS=5000 QUEUE=10000 node review/webhook-hostile.mjs
import http from 'node:http';
import net from 'node:net';
import fs from 'node:fs';
import { execFileSync } from 'node:child_process';
import { WSClient, sleep, rssKB, srvPid, BASE } from './lib.mjs';
const EVENTS = Number(process.env.EVENTS ?? 5000), QUEUE = process.env.QUEUE ?? '10000';
const stats = { hang: 0, err500: 0, redirect: 0, sentinel: 0, slow: 0, good: 0, goodIds: new Set(), goodDup: 0 };
const servers = [];
const listen = (srv, port) => new Promise((r) => srv.listen(port, '127.0.0.1', r)).then(() => servers.push(srv));
await listen(http.createServer((req, res) => { stats.hang++; req.resume(); /* never answer */ }), 9101);
await listen(http.createServer((req, res) => { stats.err500++; req.resume(); req.on('end', () => res.writeHead(500).end('boom')); }), 9102);
await listen(http.createServer((req, res) => { stats.redirect++; req.resume(); req.on('end', () => res.writeHead(307, { Location: 'http://127.0.0.1:9109/followed' }).end()); }), 9103);
await listen(http.createServer((req, res) => { stats.sentinel++; req.resume(); res.writeHead(204).end(); }), 9109);
// 1 byte per second reader, never answers before it read the whole request
await listen(net.createServer((s) => {
  stats.slow++; s.pause(); let got = 0;
  const t = setInterval(() => { const b = s.read(1); if (b) got++; else if (s.readableEnded) { clearInterval(t); } }, 1000);
  s.on('close', () => clearInterval(t)); s.on('error', () => {});
}), 9104);
await listen(http.createServer((req, res) => {
  let b = ''; req.on('data', (c) => (b += c)); req.on('end', () => {
    stats.good++; try { const id = JSON.parse(b).id; if (stats.goodIds.has(id)) stats.goodDup++; stats.goodIds.add(id); } catch {}
    res.writeHead(204).end();
  });
}), 9105);
const urls = [9101, 9102, 9103, 9104, 9105].map((p) => `http://127.0.0.1:${p}/hook`).join(',');
const env = { ...process.env, PARLEY_WEBHOOK_URL: urls, PARLEY_WEBHOOK_SECRET: 'whsec-review-0123456789abcdef', PARLEY_WEBHOOK_QUEUE_SIZE: QUEUE, PARLEY_API_KEY: '' };
console.log(execFileSync(new URL('./srv.sh', import.meta.url).pathname, ['start'], { env, encoding: 'utf8' }).trim());
const pid = srvPid();
const metrics = async () => {
  const t = await (await fetch(BASE + '/metrics')).text();
  const g = (n) => Number(new RegExp(`^${n} (\\S+)`, 'm').exec(t)?.[1] ?? NaN);
  return { sent: g('parley_webhook_sent_total'), retried: g('parley_webhook_retried_total'), dropped: g('parley_webhook_dropped_total'), queue: g('parley_webhook_queue_length'), heapMB: (g('go_memstats_heap_inuse_bytes') / 1048576).toFixed(1), goroutines: g('go_goroutines') };
};
// round-trip probe: A broadcasts with an id; time until B has the room:event
const A = await new WSClient('probe-a').open(), Bc = await new WSClient('probe-b').open();
await A.req('room:join', { room_id: 'probe' }); await Bc.req('room:join', { room_id: 'probe' });
async function rtt(n) {
  const ms = [];
  for (let i = 0; i < n; i++) {
    const tag = `${Date.now()}-${i}-${Math.random()}`;
    const t0 = process.hrtime.bigint();
    const got = Bc.wait((f) => f.type === 'room:event' && f.data.event === tag, 5000);
    A.send('room:broadcast', { room_id: 'probe', event: tag });
    await got;
    ms.push(Number(process.hrtime.bigint() - t0) / 1e6);
    Bc.frames.length = 0;
    await sleep(5);
  }
  ms.sort((a, b) => a - b);
  return `p50 ${ms[Math.floor(n / 2)].toFixed(2)} ms, p99 ${ms[Math.floor(n * 0.99)].toFixed(2)} ms, max ${ms.at(-1).toFixed(2)} ms`;
}
console.log('rss at start', rssKB(pid), 'KB;', JSON.stringify(await metrics()));
console.log('broadcast round trip, quiet:', await rtt(200));
// load: each cycle = join a fresh room + leave = room.started, client_joined, client_left, room.finished
const workers = [];
for (let w = 0; w < 10; w++) workers.push(await new WSClient('loader-' + w, { noKeep: true }).open());
let emitted = 0;
const t0 = Date.now();
const rssLog = [];
const loadDone = (async () => {
  let k = 0;
  while (emitted < EVENTS) {
    await Promise.all(workers.map(async (c) => { const room = `wh-${k++}`; await c.req('room:join', { room_id: room }); await c.req('room:leave', { room_id: room }); }));
    emitted += workers.length * 4;
  }
})();
const during = rtt(300);
const sampler = setInterval(() => rssLog.push(rssKB(pid)), 500);
console.log('broadcast round trip, during the load:', await during);
await loadDone;
console.log(`load: ~${emitted} events per URL in ${Date.now() - t0} ms`);
for (let i = 0; i < 6; i++) { await sleep(5000); const m = await metrics(); console.log(`t+${(Date.now() - t0) / 1000 | 0}s rss ${rssKB(pid)} KB ${JSON.stringify(m)} receivers ${JSON.stringify({ ...stats, goodIds: stats.goodIds.size })}`); }
console.log('broadcast round trip, after the load (queues full of retries):', await rtt(200));
clearInterval(sampler);
console.log(`rss samples (KB) min ${Math.min(...rssLog)} max ${Math.max(...rssLog)} last ${rssLog.at(-1)}`);
console.log(`redirect followed? sentinel got ${stats.sentinel} requests (want 0)`);
for (const c of [A, Bc, ...workers]) c.close();
const log = fs.readFileSync('/tmp/rv/srv.log', 'utf8').split('\n').filter((l) => /level=(WARN|ERROR)/.test(l));
console.log(`server WARN/ERROR lines: ${log.length}`); for (const l of log.slice(0, 8)) console.log('  ', l.slice(0, 240));
execFileSync(new URL('./srv.sh', import.meta.url).pathname, ['stop']);
for (const s of servers) { s.closeAllConnections?.(); s.close(); }
setTimeout(() => process.exit(0), 500);

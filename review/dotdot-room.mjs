// Room ids "." and ".." are valid ([A-Za-z0-9._:-]{1,128}): can the server API and the CLI address them?
import { WSClient, api, sleep } from './lib.mjs';
import { execFileSync } from 'node:child_process';
const B = process.env.PARLEY_BIN ?? '/tmp/parley-review';
const cs = [];
for (const id of ['.', '..', '...']) {
  const c = await new WSClient('dots').open();
  const r = await c.req('room:join', { room_id: id });
  console.log(`WS join ${JSON.stringify(id)}: ${r.type} ${r.type === 'error' ? JSON.stringify(r.data) : ''}`);
  cs.push(c);
}
console.log('GET /api/live/rooms:', (await api('GET', '/api/live/rooms')).text.trim());
for (const id of ['.', '..', '%2E%2E', '...']) {
  const r = await api('GET', `/api/rooms/${id}/connections`);
  console.log(`fetch GET /api/rooms/${id}/connections -> ${r.status} ${r.text.trim().slice(0, 120)}`);
  const b = await api('POST', `/api/rooms/${id}/broadcast`, { body: { event: 'hi' } });
  console.log(`fetch POST /api/rooms/${id}/broadcast -> ${b.status} ${b.text.trim().slice(0, 120)}`);
}
for (const args of [['rooms', 'connections', '..'], ['rooms', 'broadcast', '..', '"hi"'], ['rooms', 'connections', '.'], ['rooms', 'broadcast', '...', '"hi"']]) {
  let out; try { out = execFileSync(B, args, { encoding: 'utf8', stdio: ['pipe', 'pipe', 'pipe'] }) + ' rc=0'; } catch (e) { out = e.stdout + e.stderr + ' rc=' + e.status; }
  console.log(`$ parley ${args.join(' ')}\n${out.trim()}`);
}
await sleep(200);
for (const c of cs) console.log('events received by', c.frames.find((f) => f.type === 'room:state')?.data.room_id, c.frames.filter((f) => f.type === 'room:event').map((f) => f.data.event));
for (const c of cs) c.close();

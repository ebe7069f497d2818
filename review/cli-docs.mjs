// Newcomer: the CLI examples of docs/server-api.md with live connections in "lobby".
import { WSClient, sleep } from './lib.mjs';
import { execFileSync } from 'node:child_process';
const B = process.env.PARLEY_BIN ?? '/tmp/parley-review';
const cs = [];
for (const [u, n] of [['ann', 'Ann'], ['mallory', 'Mallory'], ['mallory', 'Mallory'], ['bob', undefined]]) {
  const c = await new WSClient(u, { name: n }).open();
  await c.req('room:join', { room_id: 'lobby', presence: { cursor: 3 } });
  cs.push(c);
}
const t = await new WSClient('tea', { name: 'T' }).open(); await t.req('room:join', { room_id: 'team.general' }); cs.push(t);
const run = (cmd) => { console.log('$ parley ' + cmd.join(' ')); try { console.log(execFileSync(B, cmd, { encoding: 'utf8', stdio: ['pipe', 'pipe', 'pipe'] })); console.log('rc=0'); } catch (e) { console.log(e.stdout + e.stderr + 'rc=' + e.status); } };
run(['rooms', 'list']);
run(['rooms', 'list', '--json']);
run(['rooms', 'list', '--limit', '1']);
run(['rooms', 'connections', 'lobby']);
run(['rooms', 'broadcast', 'lobby', '{"kind":"maintenance","in_minutes":5}']);
await sleep(200);
console.log('ann got:', JSON.stringify(cs[0].frames.find((f) => f.type === 'room:event')));
run(['users', 'disconnect', 'mallory', '--reason', 'account suspended']);
await sleep(300);
console.log('mallory closes:', cs[1].closed, cs[2].closed);
run(['rooms', 'connections', 'lobby', '--json']);
run(['rooms', 'broadcast', 'lobby', 'not json']);
run(['rooms', 'broadcast']);
run(['rooms', 'list', '--api-key', 'wrong']);
run(['users', 'disconnect', 'mallory']);
for (const c of cs) c.close();

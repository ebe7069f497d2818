// User ids "." , ".." and "/" (valid token subjects?): can POST /api/users/{id}/disconnect reach them?
import { WSClient, api, sleep } from './lib.mjs';
import { execFileSync } from 'node:child_process';
import net from 'node:net';
const B = process.env.PARLEY_BIN ?? '/tmp/parley-review';
function raw(path) {
  return new Promise((res) => { const s = net.connect(7880, '127.0.0.1'); let o = ''; s.on('data', (d) => (o += d)); s.on('end', () => res(o.split('\r\n')[0] + ' ' + o.split('\r\n\r\n')[1]?.trim().slice(0, 80)));
    s.write(`POST ${path} HTTP/1.1\r\nHost: 127.0.0.1:7880\r\nAuthorization: Bearer ${process.env.PARLEY_API_KEY}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n`); });
}
for (const [u, enc] of [['.', '.'], ['..', '..'], ['/', '%2F'], ['a/..', 'a%2F..'], ['?x', '%3Fx'], ['#', '%23']]) {
  let c; try { c = await new WSClient(u).open(); } catch (e) { console.log(`user ${JSON.stringify(u)}: cannot connect: ${e.message}`); continue; }
  const viaRaw = await raw(`/api/users/${enc}/disconnect`);
  const viaEnc = await raw(`/api/users/${encodeURIComponent(u).replace(/\./g, '%2E')}/disconnect`);
  let cli; try { cli = execFileSync(B, ['users', 'disconnect', u], { encoding: 'utf8', stdio: ['pipe', 'pipe', 'pipe'] }).trim(); } catch (e) { cli = (e.stdout + e.stderr).trim() + ' rc=' + e.status; }
  await sleep(200);
  console.log(`user ${JSON.stringify(u)}: raw ${enc} -> ${viaRaw} | fully %-encoded -> ${viaEnc} | CLI: ${cli} | socket: ${c.closed ? 'closed ' + c.closed.code : 'STILL OPEN'}`);
  c.close();
}

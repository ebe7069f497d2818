// The SDK against the real server: POST /api/users/{id}/disconnect (4003) must end the client (no reconnect).
import { WebSocket, token, api, sleep } from './lib.mjs';
const { ParleyClient } = await import('../web/client/dist/index.js');
const c = new ParleyClient({ url: 'ws://127.0.0.1:7880/ws', getToken: async () => token('kicked'), WebSocket });
const states = [], errs = [];
c.on('state', (s) => states.push(s.state)); c.on('error', (e) => errs.push(e.code + ': ' + e.message));
await c.connect();
const room = await c.joinRoom('k1');
const r = await api('POST', '/api/users/kicked/disconnect', { body: { reason: 'account suspended' } });
await sleep(3000);
const live = await api('GET', '/api/rooms/k1/connections');
console.log(`disconnect -> ${r.status} ${r.text.trim()}; states ${states.join(' > ')}; errors ${JSON.stringify(errs)}; room ${room.state}; connections now ${live.json.items.length}`);
process.exit(c.state === 'closed' && live.json.items.length === 0 ? 0 : 1);

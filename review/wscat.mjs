// Minimal websocat stand-in: node review/wscat.mjs URL < lines; prints every frame received.
import { createRequire } from 'node:module';
const require = createRequire(new URL('../web/client/node_modules/', import.meta.url));
const WebSocket = require('ws');
const ws = new WebSocket(process.argv[2]);
const lines = (await new Promise((r) => { let s = ''; process.stdin.on('data', (d) => (s += d)); process.stdin.on('end', () => r(s)); })).split('\n').filter(Boolean);
ws.on('open', () => { for (const l of lines) ws.send(l); setTimeout(() => ws.close(), Number(process.env.WAIT ?? 1000)); });
ws.on('message', (d) => console.log('<', d.toString()));
ws.on('close', (c, r) => console.log('closed', c, r.toString()));
ws.on('unexpected-response', (req, res) => { console.log('HTTP', res.statusCode); res.pipe(process.stdout); });
ws.on('error', (e) => console.log('error', e.message));

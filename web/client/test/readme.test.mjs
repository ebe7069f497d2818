// The README's JavaScript quick start, run exactly as written: the block
// after the js-quickstart marker in README.md (and its copy in
// web/client/README.md, which must be identical) is written next to the
// package (so `@parley/client` resolves to it by name) and run with node
// against a real server.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { execFile } from 'node:child_process';
import { startServer, repoRoot } from './helpers.mjs';

function quickstart(file) {
  const text = readFileSync(file, 'utf8');
  const m = text.match(/<!-- js-quickstart[^>]*-->\n```js\n([\s\S]*?)```/);
  assert.ok(m, `${file}: no js-quickstart block`);
  return m[1];
}

test('README quick start runs as written', async () => {
  const snippet = quickstart(join(repoRoot, 'README.md'));
  assert.equal(quickstart(join(repoRoot, 'web/client/README.md')), snippet, 'web/client/README.md has the same block');
  assert.match(snippet, /import WebSocket from 'ws'/);

  const server = await startServer(after);
  const token = await server.token('readme-user', { rooms: { 'team-*': ['read', 'presence', 'write'] } });
  const file = join(repoRoot, 'web/client/test', `.readme-quickstart-${process.pid}.mjs`);
  writeFileSync(file, snippet);
  after(() => rmSync(file, { force: true }));
  const { code, stdout, stderr } = await new Promise((resolve) => {
    execFile(process.execPath, [file], { env: { ...process.env, PARLEY_URL: server.wsUrl, PARLEY_TOKEN: token }, timeout: 30000 }, (err, stdout, stderr) =>
      resolve({ code: err ? (err.code ?? 1) : 0, stdout, stderr }),
    );
  });
  assert.equal(code, 0, `the snippet failed:\n${stdout}\n${stderr}`);
  assert.match(stdout, /^value1$/m, stdout);
  assert.match(stdout, /key1: 'value1'/, 'the storage handler printed the document');
  assert.deepEqual(await server.api('GET', '/api/rooms/team-a/storage'), { version: 1, data: { key1: 'value1' } });
});

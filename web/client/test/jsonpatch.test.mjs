// JSON Patch: the vectors shared with the Go implementation
// (internal/jsonpatch/testdata/vectors.json), the inverse used by undo, and
// prototype pollution. No server needed.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { applyPatch, applyPatchWithInverse, ParleyError, backoffDelay, parseEnvelope } from '../dist/index.js';
import { repoRoot } from './helpers.mjs';

const vectors = JSON.parse(readFileSync(join(repoRoot, 'internal/jsonpatch/testdata/vectors.json'), 'utf8'));

test('shared JSON Patch vectors (internal/jsonpatch/testdata/vectors.json)', async (t) => {
  assert.ok(vectors.length >= 40, `only ${vectors.length} vectors`);
  for (const v of vectors) {
    await t.test(v.name, () => {
      const before = JSON.stringify(v.doc);
      if (v.error) {
        assert.throws(
          () => applyPatch(v.doc, v.ops),
          (e) => e instanceof ParleyError && e.code === v.error,
          `want ${v.error}`,
        );
      } else {
        assert.deepStrictEqual(applyPatch(v.doc, v.ops), v.expected);
        // The inverse undoes the batch exactly.
        const { doc, inverse } = applyPatchWithInverse(v.doc, v.ops);
        assert.deepStrictEqual(doc, v.expected);
        assert.deepStrictEqual(applyPatch(doc, inverse), v.doc, 'inverse gives back the input');
      }
      assert.equal(JSON.stringify(v.doc), before, 'the input is untouched');
      assert.equal({}.polluted, undefined);
      assert.equal(Object.prototype.polluted, undefined);
    });
  }
});

test('applyPatch: __proto__, constructor and prototype are own keys', () => {
  const out = applyPatch({}, [
    { op: 'add', path: '/__proto__', value: {} },
    { op: 'add', path: '/__proto__/polluted', value: 'yes' },
    { op: 'add', path: '/constructor', value: { prototype: { polluted: 'yes' } } },
    { op: 'copy', from: '/__proto__', path: '/x' },
  ]);
  assert.equal({}.polluted, undefined);
  assert.ok(Object.hasOwn(out, '__proto__'));
  assert.equal(Object.getPrototypeOf(out), Object.prototype);
  assert.deepEqual(Object.keys(out).sort(), ['__proto__', 'constructor', 'x']);
  assert.equal(out.__proto__.polluted, 'yes');
  // A document parsed from JSON keeps its own __proto__ through a patch.
  const doc = JSON.parse('{"__proto__":{"a":1}}');
  const next = applyPatch(doc, [{ op: 'replace', path: '/__proto__/a', value: 2 }]);
  assert.ok(Object.hasOwn(next, '__proto__'));
  assert.deepStrictEqual(next, JSON.parse('{"__proto__":{"a":2}}'));
  // A value with an own __proto__ key (JSON.parse makes one) stays a key.
  const v = applyPatch({}, [{ op: 'add', path: '/v', value: JSON.parse('{"__proto__":{"polluted":"yes"}}') }]);
  assert.ok(Object.hasOwn(v.v, '__proto__'));
  assert.equal(Object.getPrototypeOf(v.v), Object.prototype);
  assert.equal({}.polluted, undefined);
});

test('applyPatch refuses values that are not JSON', () => {
  for (const value of [undefined, () => 1, NaN, Infinity, new Map(), 1n]) {
    assert.throws(() => applyPatch({}, [{ op: 'add', path: '/a', value }]), (e) => e.code === 'bad_request');
  }
  assert.throws(() => applyPatch({}, 'nope'), (e) => e.code === 'bad_request');
  assert.throws(() => applyPatch({}, [null]), (e) => e.code === 'bad_request');
});

test('backoffDelay: full jitter in [0, min(max, initial*2^attempt)]', () => {
  for (let attempt = 0; attempt < 40; attempt++) {
    const cap = Math.min(15000, 500 * 2 ** attempt);
    assert.equal(backoffDelay(attempt, 500, 15000, () => 0), 0);
    assert.equal(backoffDelay(attempt, 500, 15000, () => 0.999999999), cap);
    for (let i = 0; i < 20; i++) {
      const d = backoffDelay(attempt, 500, 15000);
      assert.ok(d >= 0 && d <= cap, `attempt ${attempt}: ${d} not in [0, ${cap}]`);
    }
  }
  assert.equal(backoffDelay(10000, 500, 15000, () => 0.999999999), 15000);
});

test('parseEnvelope ignores hostile frames', () => {
  for (const raw of ['', 'nope', '[]', 'null', '1', '{"type":1}', '{"type":""}', '{"id":"1"}', '{"type":"x","id":5}', Buffer.from('{"type":"x"}'), {}]) {
    assert.equal(parseEnvelope(raw), null, String(raw));
  }
  assert.deepEqual(parseEnvelope('{"type":"pong","id":"7"}'), { type: 'pong', id: '7' });
  const env = parseEnvelope('{"type":"x","data":{"__proto__":{"polluted":1}}}');
  assert.equal({}.polluted, undefined);
  assert.ok(Object.hasOwn(env.data, '__proto__'));
});

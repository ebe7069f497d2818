// RFC 6902 JSON Patch with the server's rules (internal/jsonpatch):
// - the document root is an object and stays one;
// - RFC 6901 pointers, `~0`/`~1` escapes, `-` appends (add only), array
//   indices without leading zeros;
// - a `test` whose path does not exist is `bad_request`, one whose value
//   differs is `test_failed`; every other failure is `bad_request`;
// - a move into its own child is refused; a move onto itself is a no-op.
//
// Own properties only. Keys are read with Object.hasOwn and written with
// Object.defineProperty, never with `in` or a plain `obj[key] =`, so
// `__proto__`, `constructor` and `prototype` are ordinary keys and no
// operation can reach Object.prototype (a document parsed from
// `{"__proto__":1}` keeps its own `__proto__` key).

import { ParleyError } from './errors.js';
import type { JsonObject, JsonPatchOp, JsonValue } from './protocol.js';

type Container = JsonObject | JsonValue[];

function bad(message: string): ParleyError {
  return new ParleyError('bad_request', message);
}

export function isObject(v: unknown): v is JsonObject {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

/** getOwn reads an own property, or undefined. */
export function getOwn(o: object, key: string): JsonValue | undefined {
  return Object.hasOwn(o, key) ? (o as JsonObject)[key] : undefined;
}

/** setOwn defines key as an own, enumerable data property (never a setter). */
export function setOwn(o: object, key: string, value: unknown): void {
  Object.defineProperty(o, key, { value, writable: true, enumerable: true, configurable: true });
}

/**
 * cloneJson deep-copies a JSON value. It accepts only JSON (null, booleans,
 * finite numbers, strings, arrays and plain objects; `undefined` inside an
 * object is dropped like JSON.stringify does) and throws `bad_request`
 * otherwise. The copy holds own data properties only.
 */
export function cloneJson(v: unknown, depth = 0): JsonValue {
  if (depth > 10000) throw bad('value nested too deeply');
  if (v === null || typeof v === 'string' || typeof v === 'boolean') return v;
  if (typeof v === 'number') {
    if (!Number.isFinite(v)) throw bad('a number in the value is not finite');
    return v;
  }
  if (Array.isArray(v)) {
    const out: JsonValue[] = new Array(v.length);
    for (let i = 0; i < v.length; i++) out[i] = cloneJson(v[i], depth + 1);
    return out;
  }
  if (typeof v === 'object') {
    const proto = Object.getPrototypeOf(v);
    if (proto !== Object.prototype && proto !== null) throw bad('a value in the patch is not JSON (not a plain object)');
    const out: JsonObject = {};
    for (const k of Object.keys(v)) {
      const x = (v as Record<string, unknown>)[k];
      if (x === undefined) continue;
      setOwn(out, k, cloneJson(x, depth + 1));
    }
    return out;
  }
  throw bad(`a value in the patch is not JSON (${typeof v})`);
}

/** jsonEqual compares two JSON values structurally (object key order ignored). */
export function jsonEqual(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (typeof a !== typeof b || a === null || b === null || typeof a !== 'object') return false;
  if (Array.isArray(a)) {
    if (!Array.isArray(b) || a.length !== b.length) return false;
    for (let i = 0; i < a.length; i++) if (!jsonEqual(a[i], b[i])) return false;
    return true;
  }
  if (Array.isArray(b)) return false;
  const ka = Object.keys(a as object);
  const kb = Object.keys(b as object);
  if (ka.length !== kb.length) return false;
  for (const k of ka) {
    if (!Object.hasOwn(b as object, k)) return false;
    if (!jsonEqual((a as JsonObject)[k], (b as JsonObject)[k])) return false;
  }
  return true;
}

// ---------------------------------------------------------------- pointers

/** parsePointer splits an RFC 6901 pointer into unescaped tokens. */
export function parsePointer(p: unknown): string[] {
  if (typeof p !== 'string') throw bad('a JSON pointer is not a string');
  if (p === '') return [];
  if (p[0] !== '/') throw bad(`JSON pointer ${JSON.stringify(p)} does not start with /`);
  return p
    .slice(1)
    .split('/')
    .map((tok) => {
      if (!tok.includes('~')) return tok;
      let out = '';
      for (let i = 0; i < tok.length; i++) {
        const c = tok[i];
        if (c !== '~') {
          out += c;
          continue;
        }
        const n = tok[++i];
        if (n === '0') out += '~';
        else if (n === '1') out += '/';
        else throw bad(`JSON pointer ${JSON.stringify(p)}: invalid escape`);
      }
      return out;
    });
}

/** formatPointer escapes tokens back into a pointer. */
export function formatPointer(toks: readonly string[]): string {
  let out = '';
  for (const t of toks) out += '/' + t.replace(/~/g, '~0').replace(/\//g, '~1');
  return out;
}

/** parseIndex reads an array index token for an array of length n. */
function parseIndex(tok: string, n: number, insert: boolean): number {
  if (tok === '-') {
    if (insert) return n;
    throw bad('array index "-" is only valid for add');
  }
  if (tok === '' || (tok.length > 1 && tok[0] === '0') || !/^[0-9]+$/.test(tok)) {
    throw bad(`invalid array index ${JSON.stringify(tok)}`);
  }
  const i = tok.length > 15 ? Number.MAX_SAFE_INTEGER : Number(tok);
  if (i > n || (i === n && !insert)) throw bad(`array index ${tok} out of range`);
  return i;
}

function isProperPrefix(a: string[], b: string[]): boolean {
  if (a.length >= b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

function sameTokens(a: string[], b: string[]): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

// ---------------------------------------------------------------- applying

/** A working document: a root object mutated in place by one batch. */
class Work {
  constructor(public root: JsonObject) {}

  get(toks: string[]): JsonValue {
    let cur: JsonValue = this.root;
    for (let d = 0; d < toks.length; d++) {
      const tok = toks[d];
      if (Array.isArray(cur)) {
        cur = cur[parseIndex(tok, cur.length, false)];
      } else if (isObject(cur)) {
        if (!Object.hasOwn(cur, tok)) throw bad(`path not found: no member ${JSON.stringify(tok)}`);
        cur = cur[tok];
      } else {
        throw bad(`path not found: ${JSON.stringify(formatPointer(toks.slice(0, d)))} is not a container`);
      }
    }
    return cur;
  }

  parent(toks: string[]): Container {
    const p = this.get(toks.slice(0, -1));
    if (!Array.isArray(p) && !isObject(p)) {
      throw bad(`path not found: ${JSON.stringify(formatPointer(toks.slice(0, -1)))} is not a container`);
    }
    return p;
  }

  /** add puts v at toks; returns the inverse ops. */
  add(toks: string[], v: JsonValue): JsonPatchOp[] {
    if (toks.length === 0) {
      if (!isObject(v)) throw bad('the document root must be an object');
      const old = this.root;
      this.root = v;
      return [{ op: 'replace', path: '', value: old }];
    }
    const parent = this.parent(toks);
    const key = toks[toks.length - 1];
    if (Array.isArray(parent)) {
      const i = parseIndex(key, parent.length, true);
      parent.splice(i, 0, v);
      return [{ op: 'remove', path: formatPointer([...toks.slice(0, -1), String(i)]) }];
    }
    const had = Object.hasOwn(parent, key);
    const old = had ? parent[key] : undefined;
    setOwn(parent, key, v);
    const path = formatPointer(toks);
    return had ? [{ op: 'replace', path, value: old as JsonValue }] : [{ op: 'remove', path }];
  }

  /** remove deletes the value at toks and returns it with the inverse ops. */
  remove(toks: string[]): { old: JsonValue; inverse: JsonPatchOp[] } {
    if (toks.length === 0) throw bad('cannot remove the document root');
    const parent = this.parent(toks);
    const key = toks[toks.length - 1];
    if (Array.isArray(parent)) {
      const i = parseIndex(key, parent.length, false);
      const [old] = parent.splice(i, 1);
      return { old, inverse: [{ op: 'add', path: formatPointer([...toks.slice(0, -1), String(i)]), value: old }] };
    }
    if (!Object.hasOwn(parent, key)) throw bad(`path not found: no member ${JSON.stringify(key)}`);
    const old = parent[key];
    delete parent[key];
    return { old, inverse: [{ op: 'add', path: formatPointer(toks), value: old }] };
  }

  replace(toks: string[], v: JsonValue): JsonPatchOp[] {
    if (toks.length === 0) return this.add(toks, v);
    const parent = this.parent(toks);
    const key = toks[toks.length - 1];
    let old: JsonValue;
    if (Array.isArray(parent)) {
      const i = parseIndex(key, parent.length, false);
      old = parent[i];
      parent[i] = v;
      return [{ op: 'replace', path: formatPointer([...toks.slice(0, -1), String(i)]), value: old }];
    }
    if (!Object.hasOwn(parent, key)) throw bad(`path not found: no member ${JSON.stringify(key)}`);
    old = parent[key];
    setOwn(parent, key, v);
    return [{ op: 'replace', path: formatPointer(toks), value: old }];
  }

  /** apply runs one op and returns its inverse ops (in the order to apply them). */
  apply(raw: unknown, index: number): JsonPatchOp[] {
    if (!isObject(raw)) throw bad(`op ${index}: operation is not a JSON object`);
    const op = getOwn(raw, 'op');
    if (typeof op !== 'string') throw bad(`op ${index}: missing or non-string "op"`);
    const pathRaw = getOwn(raw, 'path');
    if (typeof pathRaw !== 'string') throw bad(`op ${index}: missing or non-string "path"`);
    try {
      const path = parsePointer(pathRaw);
      const value = (): JsonValue => {
        if (!Object.hasOwn(raw, 'value') || raw.value === undefined) throw bad('missing "value"');
        return cloneJson(raw.value);
      };
      const from = (): string[] => {
        const f = getOwn(raw, 'from');
        if (typeof f !== 'string') throw bad('missing or non-string "from"');
        return parsePointer(f);
      };
      switch (op) {
        case 'add':
          return this.add(path, value());
        case 'remove':
          return this.remove(path).inverse;
        case 'replace':
          return this.replace(path, value());
        case 'move': {
          const f = from();
          if (isProperPrefix(f, path)) throw bad('cannot move a value into its own child');
          if (sameTokens(f, path)) {
            this.get(f);
            return [];
          }
          const { old, inverse: undoRemove } = this.remove(f);
          const undoAdd = this.add(path, old);
          return [...undoAdd, ...undoRemove];
        }
        case 'copy': {
          const v = cloneJson(this.get(from()));
          return this.add(path, v);
        }
        case 'test': {
          const want = value();
          const got = this.get(path);
          if (!jsonEqual(got, want)) throw new ParleyError('test_failed', 'value differs');
          return [];
        }
        default:
          throw bad(`unknown op ${JSON.stringify(op)}`);
      }
    } catch (err) {
      if (err instanceof ParleyError) {
        throw new ParleyError(err.code, `op ${index} (${op} ${JSON.stringify(pathRaw)}): ${err.message}`);
      }
      throw err;
    }
  }
}

function applyInternal(doc: unknown, ops: unknown, wantInverse: boolean): { doc: JsonObject; inverse: JsonPatchOp[] } {
  if (!Array.isArray(ops)) throw bad('patch is not an array');
  const start = doc === undefined || doc === null ? {} : doc;
  if (!isObject(start)) throw bad('the document is not a JSON object');
  const w = new Work(cloneJson(start) as JsonObject);
  const inverses: JsonPatchOp[][] = [];
  for (let i = 0; i < ops.length; i++) {
    const inv = w.apply(ops[i], i);
    if (wantInverse) inverses.push(inv);
  }
  const inverse: JsonPatchOp[] = [];
  for (let i = inverses.length - 1; i >= 0; i--) inverse.push(...inverses[i]);
  return { doc: w.root, inverse };
}

/**
 * applyPatch applies RFC 6902 ops to doc (a JSON object) and returns the new
 * document; doc itself is never changed. A batch is all-or-nothing: any
 * failure throws a ParleyError (`bad_request` or `test_failed`, like the
 * server) and nothing is returned.
 */
export function applyPatch<T = JsonObject>(doc: T, ops: readonly JsonPatchOp[] | unknown): T {
  return applyInternal(doc, ops, false).doc as T;
}

/**
 * applyPatchWithInverse is applyPatch that also returns the inverse batch:
 * applying `inverse` to the result gives back doc.
 */
export function applyPatchWithInverse(doc: unknown, ops: readonly JsonPatchOp[] | unknown): { doc: JsonObject; inverse: JsonPatchOp[] } {
  return applyInternal(doc, ops, true);
}

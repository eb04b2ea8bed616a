import { JsonPathSyntaxError } from './errors.js';

/**
 * Paths into a JSON document for the `json` rule action: `user.id`, `items[0].price`,
 * `$.meta["x.y"]` (a leading `$` or `$.` is allowed; quoted keys may hold dots). Parsed
 * once at start-up into segments: strings are object keys, numbers array indexes.
 */

export type JsonPath = readonly (string | number)[];

const IDENT = /^[A-Za-z_$][A-Za-z0-9_$-]*/;

export function parseJsonPath(text: string): JsonPath {
  let rest = text.trim();
  if (rest.startsWith('$')) rest = rest.slice(1).replace(/^\./, '');
  const out: (string | number)[] = [];
  let first = true;
  while (rest.length > 0) {
    if (rest.startsWith('[')) {
      const index = /^\[(\d+)\]/.exec(rest);
      const quoted = /^\[(?:"((?:[^"\\]|\\.)*)"|'((?:[^'\\]|\\.)*)')\]/.exec(rest);
      if (index) {
        out.push(Number(index[1]));
        rest = rest.slice(index[0].length);
      } else if (quoted) {
        out.push((quoted[1] ?? quoted[2] ?? '').replace(/\\(.)/g, '$1'));
        rest = rest.slice(quoted[0].length);
      } else {
        throw new JsonPathSyntaxError(`${JSON.stringify(text)}: expected [n] or ["key"] at ${JSON.stringify(rest.slice(0, 20))}`);
      }
    } else {
      if (!first) {
        if (!rest.startsWith('.')) throw new JsonPathSyntaxError(`${JSON.stringify(text)}: expected . or [ at ${JSON.stringify(rest.slice(0, 20))}`);
        rest = rest.slice(1);
      }
      const ident = IDENT.exec(rest);
      if (!ident) throw new JsonPathSyntaxError(`${JSON.stringify(text)}: expected a key at ${JSON.stringify(rest.slice(0, 20)) || 'the end'}`);
      out.push(ident[0]);
      rest = rest.slice(ident[0].length);
    }
    first = false;
  }
  if (out.length === 0) throw new JsonPathSyntaxError(`${JSON.stringify(text)}: empty path (the whole document cannot be replaced)`);
  return out;
}

type Container = Record<string, unknown> | unknown[];

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function child(container: Container, key: string | number): unknown {
  if (typeof key === 'number') return Array.isArray(container) ? container[key] : undefined;
  return isObject(container) && Object.hasOwn(container, key) ? container[key] : undefined;
}

/**
 * Sets a value; missing objects on the way are created. Returns false, changing nothing,
 * when the path crosses something that is not an object (or an array, for an index), or an
 * index past the end of an array plus one.
 */
export function setJsonPath(root: unknown, path: JsonPath, value: unknown): boolean {
  let node: unknown = root;
  for (let i = 0; i < path.length - 1; i++) {
    const key = path[i] as string | number;
    if (!(typeof key === 'number' ? Array.isArray(node) : isObject(node))) return false;
    let next = child(node as Container, key);
    if (next === undefined) {
      if (typeof key === 'number' && key > (node as unknown[]).length) return false;
      next = typeof path[i + 1] === 'number' ? [] : {};
      (node as Record<string | number, unknown>)[key] = next;
    }
    node = next;
  }
  const last = path[path.length - 1] as string | number;
  if (typeof last === 'number') {
    if (!Array.isArray(node) || last > node.length) return false;
    node[last] = value;
    return true;
  }
  if (!isObject(node)) return false;
  // defineProperty, not assignment: a key named __proto__ must be an own key, as JSON.parse makes it.
  Object.defineProperty(node, last, { value, enumerable: true, writable: true, configurable: true });
  return true;
}

/** Removes a key (or an array element, shifting the rest). Returns whether anything was removed. */
export function removeJsonPath(root: unknown, path: JsonPath): boolean {
  let node: unknown = root;
  for (let i = 0; i < path.length - 1; i++) {
    if (typeof node !== 'object' || node === null) return false;
    node = child(node as Container, path[i] as string | number);
  }
  const last = path[path.length - 1] as string | number;
  if (typeof last === 'number') {
    if (!Array.isArray(node) || last >= node.length) return false;
    node.splice(last, 1);
    return true;
  }
  if (!isObject(node) || !Object.hasOwn(node, last)) return false;
  delete node[last];
  return true;
}

import { z } from 'zod';
import { hasJsonBody } from './content-type.js';
import { decodeBody, DEFAULT_MAX_DECODED_BYTES } from './content-coding.js';
import { forEachHeader, headerValue, headerValues } from './headers.js';
import { HTTP_TOKEN as TOKEN } from './http-token.js';
import { parseJsonPath, type JsonPath } from './json-path.js';
import { LinearRegExp } from './linear-regex.js';
import { decodePercent, decodeQueryComponent } from './percent-decoding.js';
import { parseQuery } from './rule-query.js';

/**
 * ID mapping: a request creates an object in production (`POST /orders` → `ord_812`) and,
 * replayed, a different one in staging (`stg_17`). An ID kind says where such an ID is
 * *learned* (a request match plus where the new ID sits in the response) and where it is
 * *used* (a path group, a query parameter, a header, a JSON path in request bodies). All of
 * it is compiled once at start-up into the functions below; no I/O here.
 */

const KIND_NAME = /^[A-Za-z0-9_-]{1,64}$/;

const regexString = z
  .string()
  .min(1)
  .superRefine((value, ctx) => {
    try {
      new LinearRegExp(value);
    } catch (error) {
      ctx.addIssue({ code: 'custom', message: `${JSON.stringify(value)}: ${(error as Error).message}` });
    }
  });

const jsonPathString = z
  .string()
  .min(1)
  .superRefine((value, ctx) => {
    try {
      parseJsonPath(value);
    } catch (error) {
      ctx.addIssue({ code: 'custom', message: (error as Error).message });
    }
  });

const withIdGroup = regexString.refine((value) => /\(\?<id>/.test(value), { message: 'expected a named group (?<id>…) around the ID' });

export const IdLearnOptions = z.strictObject({
  match: z.strictObject({
    methods: z.array(z.string().regex(TOKEN, 'expected an HTTP method')).min(1).optional(),
    pathPrefix: z.string().startsWith('/', 'expected a path starting with /').optional(),
    path: regexString.optional(),
  }),
  /** Where the new ID sits in the response: a JSON path of the body, a header, or a regex on `location`. */
  from: z.union(
    [
      z.strictObject({ json: jsonPathString }),
      z.strictObject({ header: z.string().regex(TOKEN, 'expected a header name') }),
      z.strictObject({ location: withIdGroup }),
    ],
    { error: 'expected one of {json: path}, {header: name}, {location: regex with (?<id>…)}' },
  ),
});
export type IdLearnOptions = z.infer<typeof IdLearnOptions>;

export const IdUseOptions = z.union(
  [
    z.strictObject({ path: withIdGroup }),
    z.strictObject({ query: z.string().min(1) }),
    z.strictObject({ header: z.string().regex(TOKEN, 'expected a header name') }),
    z.strictObject({ json: jsonPathString }),
  ],
  { error: 'expected one of {path: regex with (?<id>…)}, {query: name}, {header: name}, {json: path}' },
);
export type IdUseOptions = z.infer<typeof IdUseOptions>;

export const IdKindOptions = z.strictObject({
  name: z.string().regex(KIND_NAME, 'expected 1-64 characters of A-Z a-z 0-9 _ -'),
  learn: z.array(IdLearnOptions).min(1, 'expected at least one place the ID is learned'),
  use: z.array(IdUseOptions).min(1, 'expected at least one place the ID is used'),
});
export type IdKindOptions = z.infer<typeof IdKindOptions>;

export const IdMappingOptions = z.strictObject({
  /** How long a learned mapping lives in Redis. */
  ttlMs: z
    .number()
    .int()
    .min(1000)
    .max(366 * 86_400_000)
    .default(86_400_000),
  /** How long an entry that uses a pending ID waits for its mapping before it goes unmapped. */
  waitLimitMs: z.number().int().min(0).max(3_600_000).default(10_000),
  /** Delay between two looks at a pending mapping; the entry holds no worker slot meanwhile. */
  waitDelayMs: z.number().int().min(10).max(60_000).default(250),
  /**
   * A request naming an ID never seen yet waits (as for a pending one) while a create of that
   * kind received up to this long before it is still in flight — started by a worker, its
   * production answer not yet at the intake. 0 turns this off.
   */
  awaitCreatesMs: z.number().int().min(0).max(3_600_000).default(10_000),
  kinds: z.array(IdKindOptions).min(1, 'expected at least one ID kind'),
});
export type IdMappingOptions = z.infer<typeof IdMappingOptions>;
export type IdMappingSettings = z.output<typeof IdMappingOptions>;

export const ProductionResponsesOptions = z.strictObject({
  /** How long a production response is kept, waiting for its mirrored request. */
  ttlMs: z.number().int().min(1000).max(86_400_000).default(600_000),
  /** Largest production response body the intake stores. */
  maxBodyBytes: z
    .number()
    .int()
    .min(0)
    .max(64 * 1024 * 1024)
    .default(1024 * 1024),
  /** Largest body, once its Content-Encoding is undone, that comparison and ID learning read (decompression bombs stop here). */
  maxDecodedBytes: z
    .number()
    .int()
    .min(1024)
    .max(256 * 1024 * 1024)
    .default(8 * 1024 * 1024),
});
export type ProductionResponsesSettings = z.output<typeof ProductionResponsesOptions>;

export const CompareOptions = z.strictObject({
  /** Response headers compared (case-insensitive); others are ignored. */
  headers: z.array(z.string().regex(TOKEN, 'expected a header name')).default(['content-type']),
  /** JSON paths ignored in bodies (timestamps, generated values); `*` matches any key or index. */
  ignore: z.array(z.string().min(1)).default([]),
  /** At most this many differences are kept per diff record. */
  maxDifferences: z.number().int().min(1).max(1000).default(20),
  /** How many diff records Redis keeps (newest first). */
  keepDiffs: z.number().int().min(0).max(1_000_000).default(1000),
  /**
   * Most distinct route names comparisons count under (Redis fields, metric labels), the
   * `OTHER_ROUTE` bucket included: once `maxRoutes - 1` routes are named, comparisons of any
   * further route count under `OTHER_ROUTE`, so long-tail or hostile paths stay bounded.
   */
  maxRoutes: z.number().int().min(2).max(10_000).default(100),
});
export type CompareSettings = z.output<typeof CompareOptions>;

/** The route comparisons of routes beyond `compare.maxRoutes` count under. */
export const OTHER_ROUTE = '(other routes)';

/** A response as the ID mapping and the comparison see it. */
export interface ObservedResponse {
  status: number;
  /** Flat `[name, value, …]`. */
  headers: readonly string[];
  body: Buffer;
}

/** The parts of a request the ID mapping reads and rewrites. */
export interface MappableRequest {
  method: string;
  path: string;
  headers: string[];
  body: Buffer;
}

export interface CompiledLearner {
  kind: string;
  matches(method: string, path: string): boolean;
  /** The new ID in a response, or null. */
  extract(response: ObservedResponse): string | null;
}

/** One place of a request where IDs of a kind are used. */
export interface CompiledUse {
  kind: string;
  /** True when this use rewrites the JSON body (the caller then serializes it again). */
  json: boolean;
  /** IDs found in the request (the JSON body parsed once by the caller, `parseJsonDocument`). */
  find(request: MappableRequest, json: JsonDocument | undefined): string[];
  /**
   * Replaces `from` with `to` where this use finds it; returns whether anything changed. A JSON
   * use splices the ID's token in `json.text` (every other byte of the document stays as sent).
   */
  replace(request: MappableRequest, json: JsonDocument | undefined, from: string, to: string): boolean;
}

export interface CompiledIdMapping {
  settings: IdMappingSettings;
  learners: CompiledLearner[];
  uses: CompiledUse[];
  /** True when some use reads JSON bodies (the caller then parses `application/json` bodies once). */
  usesJson: boolean;
}

function readJsonPath(root: unknown, path: JsonPath): unknown {
  let node = root;
  for (const key of path) {
    if (typeof node !== 'object' || node === null) return undefined;
    node =
      typeof key === 'number' ? (Array.isArray(node) ? node[key] : undefined) : Object.hasOwn(node, key) ? (node as Record<string, unknown>)[key] : undefined;
  }
  return node;
}

function writeJsonPath(root: unknown, path: JsonPath, value: unknown): void {
  let node = root as Record<string | number, unknown>;
  for (const key of path.slice(0, -1)) node = node[key] as Record<string | number, unknown>;
  node[path[path.length - 1] as string | number] = value;
}

function idText(value: unknown): string | null {
  if (typeof value === 'string' && value.length > 0) return value;
  if (typeof value === 'number' && Number.isFinite(value)) return String(value);
  return null;
}

/**
 * A JSON body as ID mapping edits it: `value` parsed (to find IDs), `text` the decoded source,
 * in which a replaced ID's token is spliced so no other value is re-serialized (large integers,
 * precise decimals, key order and spacing stay byte-identical).
 */
export interface JsonDocument {
  value: unknown;
  text: string;
}

/** `parseJsonBody`, keeping the decoded text for in-place edits; undefined when not JSON. */
export function parseJsonDocument(headers: readonly string[], body: Buffer, maxDecodedBytes = DEFAULT_MAX_DECODED_BYTES): JsonDocument | undefined {
  if (body.length === 0 || !hasJsonBody(headers)) return undefined;
  const decoded = decodeBody(headers, body, maxDecodedBytes);
  if (!decoded.ok) return undefined;
  const text = decoded.body.toString('utf8');
  try {
    return { value: JSON.parse(text), text };
  } catch {
    return undefined;
  }
}

const WS = new Set([' ', '\t', '\n', '\r']);

function skipWs(t: string, i: number): number {
  while (i < t.length && WS.has(t[i] as string)) i++;
  return i;
}

/** End (exclusive) of the JSON value starting at `i` (no whitespace before it), in valid JSON. */
function skipValue(t: string, i: number): number {
  const c = t[i];
  if (c === '"') {
    for (i++; i < t.length; i++) {
      if (t[i] === '\\') i++;
      else if (t[i] === '"') return i + 1;
    }
    return t.length;
  }
  if (c === '{' || c === '[') {
    let depth = 0;
    for (; i < t.length; i++) {
      const ch = t[i];
      if (ch === '"') i = skipValue(t, i) - 1;
      else if (ch === '{' || ch === '[') depth++;
      else if (ch === '}' || ch === ']') if (--depth === 0) return i + 1;
    }
    return t.length;
  }
  while (i < t.length && !WS.has(t[i] as string) && t[i] !== ',' && t[i] !== ']' && t[i] !== '}') i++;
  return i;
}

/**
 * Where the value at `path` sits in the JSON text `t` (already known to parse): `[start, end)`,
 * or null when absent. A key given twice resolves to its last occurrence, as JSON.parse does.
 */
export function jsonValueSpan(t: string, path: JsonPath): [number, number] | null {
  let i = skipWs(t, 0);
  for (const key of path) {
    if (typeof key === 'number') {
      if (t[i] !== '[') return null;
      i = skipWs(t, i + 1);
      for (let index = 0; ; index++) {
        if (t[i] === ']' || i >= t.length) return null;
        if (index === key) break;
        i = skipWs(t, skipValue(t, i));
        if (t[i] !== ',') return null;
        i = skipWs(t, i + 1);
      }
      continue;
    }
    if (t[i] !== '{') return null;
    i = skipWs(t, i + 1);
    let found = -1;
    while (i < t.length && t[i] !== '}') {
      const nameEnd = skipValue(t, i);
      const name = JSON.parse(t.slice(i, nameEnd)) as string;
      i = skipWs(t, skipWs(t, nameEnd) + 1);
      if (name === key) found = i;
      i = skipWs(t, skipValue(t, i));
      if (t[i] === ',') i = skipWs(t, i + 1);
    }
    if (found === -1) return null;
    i = found;
  }
  return [i, skipValue(t, i)];
}

/**
 * Parses a JSON body when the headers say it is JSON, undoing its `Content-Encoding` first
 * (bounded by `maxDecodedBytes`); undefined otherwise, or when it does not decode or parse.
 */
export function parseJsonBody(headers: readonly string[], body: Buffer, maxDecodedBytes = DEFAULT_MAX_DECODED_BYTES): unknown {
  if (body.length === 0 || !hasJsonBody(headers)) return undefined;
  const decoded = decodeBody(headers, body, maxDecodedBytes);
  if (!decoded.ok) return undefined;
  try {
    return JSON.parse(decoded.body.toString('utf8'));
  } catch {
    return undefined;
  }
}

function compileLearner(kind: string, options: IdLearnOptions, maxDecodedBytes: number): CompiledLearner {
  const methods = options.match.methods ? new Set(options.match.methods.map((m) => m.toUpperCase())) : null;
  const prefix = options.match.pathPrefix ?? null;
  const pathRe = options.match.path ? new LinearRegExp(options.match.path) : null;
  const from = options.from;
  let extract: CompiledLearner['extract'];
  if ('json' in from) {
    const path = parseJsonPath(from.json);
    extract = (response) => idText(readJsonPath(parseJsonBody(response.headers, response.body, maxDecodedBytes), path));
  } else if ('header' in from) {
    const name = from.header.toLowerCase();
    extract = (response) => headerValue(response.headers, name);
  } else {
    const re = new LinearRegExp(from.location);
    // A Location is a URL: its ID is percent-decoded like an ID found in a path (and encoded
    // exactly once when it is put into one).
    extract = (response) => {
      const id = re.exec(headerValue(response.headers, 'location') ?? '')?.groups?.id;
      return id ? decodePercent(id) : null;
    };
  }
  return {
    kind,
    matches(method, fullPath) {
      const path = fullPath.split('?', 1)[0] as string;
      return (!methods || methods.has(method.toUpperCase())) && (!prefix || path.startsWith(prefix)) && (!pathRe || pathRe.test(path));
    },
    extract: (response) => (response.status >= 200 && response.status < 300 ? extract(response) : null),
  };
}

function compileUse(kind: string, options: IdUseOptions): CompiledUse {
  if ('path' in options) {
    const re = new LinearRegExp(options.path);
    return {
      kind,
      json: false,
      find(request) {
        const path = request.path.split('?', 1)[0] as string;
        const id = re.exec(path)?.groups?.id;
        return id ? [decodePercent(id)] : [];
      },
      replace(request, _json, from, to) {
        const q = request.path.indexOf('?');
        const path = q === -1 ? request.path : request.path.slice(0, q);
        const m = re.exec(path);
        const span = m?.indices?.groups?.id;
        if (!m || !span || decodePercent(m.groups?.id ?? '') !== from) return false;
        request.path = path.slice(0, span[0]) + encodeURIComponent(to) + path.slice(span[1]) + (q === -1 ? '' : request.path.slice(q));
        return true;
      },
    };
  }
  if ('query' in options) {
    const name = options.query;
    return {
      kind,
      json: false,
      find(request) {
        const q = request.path.indexOf('?');
        // Only `name=value` parameters carry an id; a bare `name` does not.
        return q === -1 ? [] : parseQuery(request.path.slice(q + 1)).flatMap((p) => (p.name === name && p.value !== null ? [p.value] : []));
      },
      replace(request, _json, from, to) {
        const q = request.path.indexOf('?');
        if (q === -1) return false;
        let changed = false;
        // Parameters are rewritten in place, so their order and the rest of the query stay as sent.
        const query = request.path
          .slice(q + 1)
          .split('&')
          .map((part) => {
            const eq = part.indexOf('=');
            // Tolerant: a malformed escape elsewhere in the query (`q=50%off`) stays as sent.
            const key = decodeQueryComponent(eq === -1 ? part : part.slice(0, eq));
            const value = eq === -1 ? '' : decodeQueryComponent(part.slice(eq + 1));
            if (key !== name || value !== from) return part;
            changed = true;
            return `${part.slice(0, eq === -1 ? part.length : eq)}=${encodeURIComponent(to)}`;
          });
        if (changed) request.path = `${request.path.slice(0, q)}?${query.join('&')}`;
        return changed;
      },
    };
  }
  if ('header' in options) {
    const name = options.header.toLowerCase();
    return {
      kind,
      json: false,
      find(request) {
        return headerValues(request.headers, name);
      },
      replace(request, _json, from, to) {
        let changed = false;
        const { headers } = request;
        forEachHeader(headers, (n, value, i) => {
          if (n.toLowerCase() === name && value === from) {
            headers[i + 1] = to;
            changed = true;
          }
        });
        return changed;
      },
    };
  }
  const path = parseJsonPath(options.json);
  return {
    kind,
    json: true,
    find(_request, json) {
      const id = idText(readJsonPath(json?.value, path));
      return id === null ? [] : [id];
    },
    replace(_request, json, from, to) {
      if (!json) return false;
      const current = readJsonPath(json.value, path);
      if (idText(current) !== from) return false;
      const span = jsonValueSpan(json.text, path);
      if (!span) return false;
      // A numeric production ID becomes a number again when the staging ID is numeric.
      const numeric = typeof current === 'number' && /^-?\d+(\.\d+)?$/.test(to);
      writeJsonPath(json.value, path, numeric ? Number(to) : to);
      // Only the ID's own token changes; the rest of the text is kept byte for byte.
      json.text = json.text.slice(0, span[0]) + (numeric ? to : JSON.stringify(to)) + json.text.slice(span[1]);
      return true;
    },
  };
}

/**
 * Compiles the `idMapping` settings. `maxDecodedBytes` bounds every body the learners decode
 * (`productionResponses.maxDecodedBytes`; the one bound of the deployment).
 */
export function compileIdMapping(settings: IdMappingSettings, options: { maxDecodedBytes?: number } = {}): CompiledIdMapping {
  const maxDecodedBytes = options.maxDecodedBytes ?? DEFAULT_MAX_DECODED_BYTES;
  const learners: CompiledLearner[] = [];
  const uses: CompiledUse[] = [];
  for (const kind of settings.kinds) {
    for (const l of kind.learn) learners.push(compileLearner(kind.name, l, maxDecodedBytes));
    for (const u of kind.use) uses.push(compileUse(kind.name, u));
  }
  return { settings, learners, uses, usesJson: settings.kinds.some((k) => k.use.some((u) => 'json' in u)) };
}

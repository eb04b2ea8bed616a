import { createHash } from 'node:crypto';
import { DEFAULT_MAX_DECODED_BYTES } from './content-coding.js';
import { grpcStatusField, isGrpcContentType } from './grpc.js';
import { headerValues } from './headers.js';
import { parseJsonBody, type CompareSettings, type ObservedResponse } from './id-mapping.js';

/**
 * Response comparison: does staging answer like production? Status, chosen headers, and the
 * body — JSON structurally (key order never matters, ignored paths are skipped, a production
 * ID and the staging ID it maps to are equal), other bodies by digest. A gRPC answer (either
 * side's content-type `application/grpc…`) compares its `grpc-status` (trailers are fields of
 * the answer here) and its messages one by one (`messages[i]`, by digest; the count too).
 */

export interface Difference {
  /** `status`, `headers.<name>`, `body` (digests), or a JSON path into the body (`$.items[0].price`). */
  path: string;
  production: unknown;
  staging: unknown;
}

export interface Comparison {
  equal: boolean;
  differences: Difference[];
}

export interface CompiledComparison {
  /** `ids` maps production IDs to staging IDs known for this request (they compare equal). */
  compare(production: ObservedResponse, staging: ObservedResponse, ids?: ReadonlyMap<string, string>): Comparison;
}

const digest = (b: Buffer): string => `sha256:${createHash('sha256').update(b).digest('hex').slice(0, 16)} (${b.length} bytes)`;

function isGrpc(headers: readonly string[]): boolean {
  return headerValues(headers, 'content-type').some(isGrpcContentType);
}

/**
 * The messages of a gRPC body: each a 5-byte prefix (compressed flag, 4-byte length) and its
 * bytes (prefix included, so a compressed and a plain message differ). A body that does not
 * frame into whole messages is one item, as is.
 */
export function grpcMessages(body: Buffer): Buffer[] {
  const out: Buffer[] = [];
  let at = 0;
  while (at < body.length) {
    if (at + 5 > body.length) return [body];
    const end = at + 5 + body.readUInt32BE(at + 1);
    if (end > body.length) return [body];
    out.push(body.subarray(at, end));
    at = end;
  }
  return out;
}

function compareGrpc(production: ObservedResponse, staging: ObservedResponse, out: Difference[]): void {
  // Trailers-only answers carry grpc-status among the headers; the last one is the trailer's.
  const status = (r: ObservedResponse) => grpcStatusField({ headers: r.headers }) ?? undefined;
  const [a, b] = [status(production), status(staging)];
  if (a !== b) out.push({ path: 'grpc-status', production: a, staging: b });
  const [ma, mb] = [grpcMessages(production.body), grpcMessages(staging.body)];
  if (ma.length !== mb.length) out.push({ path: 'messages.length', production: ma.length, staging: mb.length });
  for (let i = 0; i < Math.min(ma.length, mb.length); i++) {
    if (!(ma[i] as Buffer).equals(mb[i] as Buffer)) out.push({ path: `messages[${i}]`, production: digest(ma[i] as Buffer), staging: digest(mb[i] as Buffer) });
  }
}

function formatKey(key: string): string {
  return /^[A-Za-z_$][A-Za-z0-9_$]*$/.test(key) ? `.${key}` : `[${JSON.stringify(key)}]`;
}

/** An ignore path as segments; `*` matches any key or index. `createdAt` and `$.a.b` both work. */
function ignoreSegments(text: string): string[] {
  return text
    .replace(/^\$\.?/, '')
    .split(/\.|\[|\]/)
    .filter(Boolean)
    .map((s) => s.replace(/^["']|["']$/g, ''));
}

/**
 * Compiles the `compare` settings. `maxDecodedBytes` bounds any body it decodes
 * (`productionResponses.maxDecodedBytes`): a body over it is compared as received.
 */
export function compileComparison(settings: CompareSettings, options: { maxDecodedBytes?: number } = {}): CompiledComparison {
  const maxDecodedBytes = options.maxDecodedBytes ?? DEFAULT_MAX_DECODED_BYTES;
  const headers = settings.headers.map((h) => h.toLowerCase());
  const ignores = settings.ignore.map(ignoreSegments);
  const max = settings.maxDifferences;

  const ignored = (segments: readonly string[]): boolean =>
    ignores.some((pattern) => {
      // A one-segment pattern (`createdAt`) matches that key anywhere; a longer one matches from the root.
      if (pattern.length === 1) return segments.length > 0 && (pattern[0] === '*' || pattern[0] === segments[segments.length - 1]);
      return pattern.length === segments.length && pattern.every((p, i) => p === '*' || p === segments[i]);
    });

  function walk(a: unknown, b: unknown, segments: string[], path: string, ids: ReadonlyMap<string, string> | undefined, out: Difference[]): void {
    if (out.length >= max || ignored(segments)) return;
    if (Array.isArray(a) && Array.isArray(b)) {
      const n = Math.max(a.length, b.length);
      for (let i = 0; i < n; i++) {
        if (i >= a.length || i >= b.length) {
          out.push({ path: `${path}[${i}]`, production: a[i], staging: b[i] });
          if (out.length >= max) return;
          continue;
        }
        walk(a[i], b[i], [...segments, String(i)], `${path}[${i}]`, ids, out);
      }
      return;
    }
    if (a !== null && b !== null && typeof a === 'object' && typeof b === 'object' && !Array.isArray(a) && !Array.isArray(b)) {
      const keys = new Set([...Object.keys(a), ...Object.keys(b)]);
      for (const key of [...keys].sort()) {
        const sub = [...segments, key];
        if (ignored(sub)) continue;
        const inA = Object.hasOwn(a, key);
        const inB = Object.hasOwn(b, key);
        if (!inA || !inB) {
          out.push({
            path: path + formatKey(key),
            production: inA ? (a as Record<string, unknown>)[key] : undefined,
            staging: inB ? (b as Record<string, unknown>)[key] : undefined,
          });
          if (out.length >= max) return;
          continue;
        }
        walk((a as Record<string, unknown>)[key], (b as Record<string, unknown>)[key], sub, path + formatKey(key), ids, out);
      }
      return;
    }
    if (a === b) return;
    if (ids && (typeof a === 'string' || typeof a === 'number') && ids.get(String(a)) === String(b)) return;
    out.push({ path, production: a, staging: b });
  }

  return {
    compare(production, staging, ids) {
      const differences: Difference[] = [];
      if (production.status !== staging.status) differences.push({ path: 'status', production: production.status, staging: staging.status });
      for (const name of headers) {
        const a = headerValues(production.headers, name).join(', ');
        const b = headerValues(staging.headers, name).join(', ');
        if (a !== b) differences.push({ path: `headers.${name}`, production: a || undefined, staging: b || undefined });
      }
      if (isGrpc(production.headers) || isGrpc(staging.headers)) {
        compareGrpc(production, staging, differences);
        return { equal: differences.length === 0, differences: differences.slice(0, max) };
      }
      const pa = parseJsonBody(production.headers, production.body, maxDecodedBytes);
      const pb = parseJsonBody(staging.headers, staging.body, maxDecodedBytes);
      if (pa !== undefined && pb !== undefined) {
        walk(pa, pb, [], '$', ids, differences);
      } else if (!production.body.equals(staging.body)) {
        differences.push({ path: 'body', production: digest(production.body), staging: digest(staging.body) });
      }
      return { equal: differences.length === 0, differences: differences.slice(0, max) };
    },
  };
}

/**
 * The route a request counts under in comparison results: the method and the path without
 * its query, with segments that look like IDs (digits, or a prefix and digits) as `:id`.
 */
export function routeOf(method: string, path: string): string {
  const bare = path.split('?', 1)[0] as string;
  // All digits, or a longer token with a digit in it (ord_812, a UUID); a version (v2) stays.
  const segments = bare.split('/').map((s) => (/^\d+$/.test(s) || (s.length >= 4 && /\d/.test(s) && !/^v\d+$/i.test(s)) ? ':id' : s));
  return `${method.toUpperCase()} ${segments.join('/') || '/'}`;
}

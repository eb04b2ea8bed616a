import { createHash } from 'node:crypto';
import { DEFAULT_MAX_DECODED_BYTES } from './content-coding.js';
import { headerValues } from './headers.js';
import { parseJsonBody, type CompareSettings, type ObservedResponse } from './id-mapping.js';

/**
 * Response comparison: does staging answer like production? Status, chosen headers, and the
 * body — JSON structurally (key order never matters, ignored paths are skipped, a production
 * ID and the staging ID it maps to are equal), other bodies by digest.
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
      const pa = parseJsonBody(production.headers, production.body, maxDecodedBytes);
      const pb = parseJsonBody(staging.headers, staging.body, maxDecodedBytes);
      if (pa !== undefined && pb !== undefined) {
        walk(pa, pb, [], '$', ids, differences);
      } else if (!production.body.equals(staging.body)) {
        const digest = (b: Buffer) => `sha256:${createHash('sha256').update(b).digest('hex').slice(0, 16)} (${b.length} bytes)`;
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

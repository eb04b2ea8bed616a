import { decodeFormComponent } from './url-decoding.js';

/**
 * The query string as rules see it: parameters in order, raw text kept, so a request whose
 * query no rule touched is sent byte for byte as it came. Names and values are compared
 * decoded (`+` is a space, as in HTML forms); what a rule writes is percent-encoded.
 */

export interface QueryParam {
  /** The `name=value` text as received, or as a rule wrote it. */
  raw: string;
  name: string;
  /** Decoded value; null for a bare `name` without `=`. */
  value: string | null;
}

// Malformed escapes are compared as written rather than refused: the request still replays.
const decode = decodeFormComponent;

export function parseQuery(search: string): QueryParam[] {
  if (search.length === 0) return [];
  const out: QueryParam[] = [];
  for (const raw of search.split('&')) {
    if (raw.length === 0) continue;
    const eq = raw.indexOf('=');
    out.push(eq === -1 ? { raw, name: decode(raw), value: null } : { raw, name: decode(raw.slice(0, eq)), value: decode(raw.slice(eq + 1)) });
  }
  return out;
}

export function formatQuery(params: readonly QueryParam[]): string {
  return params.map((p) => p.raw).join('&');
}

/** Replaces the first parameter of that name in place (removing later duplicates) or appends it. */
export function setQueryParam(params: QueryParam[], name: string, value: string): QueryParam[] {
  const param: QueryParam = { raw: `${encodeURIComponent(name)}=${encodeURIComponent(value)}`, name, value };
  const out: QueryParam[] = [];
  let placed = false;
  for (const p of params) {
    if (p.name !== name) out.push(p);
    else if (!placed) {
      out.push(param);
      placed = true;
    }
  }
  if (!placed) out.push(param);
  return out;
}

export function removeQueryParams(params: readonly QueryParam[], names: ReadonlySet<string>): QueryParam[] {
  return params.filter((p) => !names.has(p.name));
}

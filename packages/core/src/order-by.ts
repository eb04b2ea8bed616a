import { createHash } from 'node:crypto';
import { InvalidValueError } from './errors.js';
import { TOKEN_CHARS } from './http-token.js';
import { headerValue, headerValues } from './headers.js';
import { LinearRegExp } from './linear-regex.js';
import { cookieValue } from './rule-sample.js';
import type { MirroredRequest } from './entry.js';

/**
 * Per-key ordering (`ORDER_BY`): requests with the same key (a session header, a cookie, an
 * object id in the path) reach staging in the order the ingress accepted them, each after the
 * previous one's answer; requests with different keys (or none) run concurrently. The worker's
 * `KeyOrder` enforces it; this file holds the pure parts: the key of a request and the
 * sortable form of a stream id.
 */

/** What a request's ordering key is read from. */
export type OrderBy =
  | { kind: 'header'; name: string }
  | { kind: 'cookie'; name: string }
  /** The first named group `key`, else the first group, of a match on the path (without the query). */
  | { kind: 'path'; pattern: string; regex: LinearRegExp };

const HEADER = new RegExp(`^header:(${TOKEN_CHARS}+)$`, 'i');
const COOKIE = new RegExp(`^cookie:(${TOKEN_CHARS}+)$`, 'i');

/** Parses ORDER_BY: `off`, `header:<name>`, `cookie:<name>` or `path:<regex with a group>`; null for off. */
export function parseOrderBy(text: string): OrderBy | null {
  const t = text.trim();
  if (t === '' || t.toLowerCase() === 'off') return null;
  let m = HEADER.exec(t);
  if (m) return { kind: 'header', name: (m[1] as string).toLowerCase() };
  m = COOKIE.exec(t);
  if (m) return { kind: 'cookie', name: m[1] as string };
  if (t.startsWith('path:')) {
    const pattern = t.slice('path:'.length);
    let regex: LinearRegExp;
    try {
      regex = new LinearRegExp(pattern);
    } catch (error) {
      throw new InvalidValueError(`path:${pattern}: ${(error as Error).message}`);
    }
    // Counted by the engine that runs it (an escaped or bracketed parenthesis is no group).
    if (regex.groupCount === 0) throw new InvalidValueError(`path:${pattern}: expected a capturing group, the key (like ^/orders/([^/]+))`);
    return { kind: 'path', pattern, regex };
  }
  throw new InvalidValueError(`expected off, header:<name>, cookie:<name> or path:<regex with a group> (header:x-session-id), got ${JSON.stringify(text)}`);
}

/** The text form parseOrderBy reads back. */
export function formatOrderBy(orderBy: OrderBy | null): string {
  if (orderBy === null) return 'off';
  return orderBy.kind === 'path' ? `path:${orderBy.pattern}` : `${orderBy.kind}:${orderBy.name}`;
}

/** A request's ordering key as found in it (not hashed), or null when it has none (it is not ordered). */
export function orderKeyOf(orderBy: OrderBy, request: Pick<MirroredRequest, 'rawHeaders' | 'target'>): string | null {
  if (orderBy.kind === 'path') {
    const q = request.target.indexOf('?');
    const m = orderBy.regex.exec(q === -1 ? request.target : request.target.slice(0, q));
    if (!m) return null;
    const value = m.groups?.key ?? m[1];
    return value === undefined || value === '' ? null : value;
  }
  if (orderBy.kind === 'header') return headerValue(request.rawHeaders, orderBy.name) || null;
  return cookieValue(headerValues(request.rawHeaders, 'cookie'), orderBy.name) || null;
}

/**
 * The name a key is stored under in Redis: a digest, never the value (a session id is a
 * secret). With a data key, `digest` is the entry cipher's keyed one.
 */
export function orderKeyDigest(key: string, digest?: (text: string) => string): string {
  return digest ? digest(`order\n${key}`) : createHash('sha256').update(`order\n${key}`).digest('base64url').slice(0, 22);
}

/** `orderMember` in Lua, as the function `sortable(id)`, for the scripts that keep ordering sets. */
export const ORDER_MEMBER_LUA = `
local function sortable(id)
  local dash = string.find(id, '-', 1, true)
  local ms = string.sub(id, 1, dash - 1)
  local seq = string.sub(id, dash + 1)
  return string.rep('0', 16 - #ms) .. ms .. '-' .. string.rep('0', 20 - #seq) .. seq
end
`;

/**
 * A stream id (`<ms>-<seq>`) as a string that sorts as the ids do: both parts zero-padded
 * (`0001764151200000-00000000000000000003`). Sorted sets of these, all at score 0, are in
 * acceptance order.
 */
export function orderMember(streamId: string): string {
  const dash = streamId.indexOf('-');
  const ms = dash === -1 ? streamId : streamId.slice(0, dash);
  const seq = dash === -1 ? '0' : streamId.slice(dash + 1);
  return `${ms.padStart(16, '0')}-${seq.padStart(20, '0')}`;
}

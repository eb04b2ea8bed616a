/**
 * Raw header pairs: the one home for looking up, walking and filtering headers. Headers are
 * always flat `[name, value, …]` arrays (node:http's `rawHeaders`, what the entry stores, what
 * undici sends) so that order, case and duplicates survive; names are compared in lower case.
 * Shared by the worker (what staging receives), the rules, ID mapping, comparison and the logs.
 */

/** Hop-by-hop headers (RFC 9110 §7.6.1): they describe one connection and are never forwarded as such. */
export const HOP_BY_HOP_HEADERS: ReadonlySet<string> = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'te',
  'upgrade',
  'transfer-encoding',
  'trailer',
]);

/**
 * Headers the replay itself manages: hop-by-hop ones, `content-length` (the staging client writes it),
 * `expect` (the ingress already answered the 100-continue handshake; the replay sends the body
 * at once) and Mirrorplane's own id and attempt headers. Never forwarded, never set by a rule.
 */
export const REPLAY_MANAGED_HEADERS: ReadonlySet<string> = new Set([
  ...HOP_BY_HOP_HEADERS,
  'content-length',
  'expect',
  'x-mirrorplane-id',
  'x-mirrorplane-attempt',
  'x-mirrorplane-copy',
]);

/**
 * What `stagingHeaders` drops: the replay-managed headers except the framing ones.
 * `content-length`, `transfer-encoding` and `trailer` stay in place: the staging client writes
 * their values true to the body it sends.
 */
const STAGING_DROPPED: ReadonlySet<string> = new Set(
  [...REPLAY_MANAGED_HEADERS].filter((h) => h !== 'content-length' && h !== 'transfer-encoding' && h !== 'trailer'),
);

/** Calls `fn(name, value, index)` for each pair in order; `index` is the position of the name. */
export function forEachHeader(rawHeaders: readonly string[], fn: (name: string, value: string, index: number) => void): void {
  for (let i = 0; i + 1 < rawHeaders.length; i += 2) fn(rawHeaders[i] as string, rawHeaders[i + 1] as string, i);
}

/** The pairs as `[name, value]` tuples, in order. */
export function headerEntries(rawHeaders: readonly string[]): [string, string][] {
  const out: [string, string][] = [];
  forEachHeader(rawHeaders, (name, value) => out.push([name, value]));
  return out;
}

/**
 * Whether a header name equals `lower` (a lower-case ASCII token) ignoring case. Lengths are
 * compared first: lower-casing every name of every request is measurable on the ingress.
 */
function sameName(name: string, lower: string): boolean {
  return name.length === lower.length && name.toLowerCase() === lower;
}

/** The first value of a header (name compared case-insensitively), or null when absent. */
export function headerValue(rawHeaders: readonly string[], name: string): string | null {
  const lower = name.toLowerCase();
  for (let i = 0; i + 1 < rawHeaders.length; i += 2) {
    if (sameName(rawHeaders[i] as string, lower)) return rawHeaders[i + 1] as string;
  }
  return null;
}

/** Every value of a header, in order (name compared case-insensitively); empty when absent. */
export function headerValues(rawHeaders: readonly string[], name: string): string[] {
  const lower = name.toLowerCase();
  const out: string[] = [];
  forEachHeader(rawHeaders, (n, value) => {
    if (n.toLowerCase() === lower) out.push(value);
  });
  return out;
}

/**
 * The first value of a header in `[name, value]` tuple form (recordings, HAR), name compared
 * case-insensitively; null when absent. The tuple-form twin of `headerValue`.
 */
export function pairValue(pairs: readonly (readonly [string, string])[], name: string): string | null {
  const lower = name.toLowerCase();
  for (const [n, value] of pairs) if (sameName(n, lower)) return value;
  return null;
}

/** Every value of a header in `[name, value]` tuple form, in order; empty when absent. The tuple-form twin of `headerValues`. */
export function pairValues(pairs: readonly (readonly [string, string])[], name: string): string[] {
  const lower = name.toLowerCase();
  const out: string[] = [];
  for (const [n, value] of pairs) if (sameName(n, lower)) out.push(value);
  return out;
}

/** Whether some pair has this name and a value `test` accepts. */
export function someHeader(rawHeaders: readonly string[], name: string, test: (value: string) => boolean): boolean {
  const lower = name.toLowerCase();
  for (let i = 0; i + 1 < rawHeaders.length; i += 2) {
    if (sameName(rawHeaders[i] as string, lower) && test(rawHeaders[i + 1] as string)) return true;
  }
  return false;
}

/** The pairs whose lower-case name `keep` accepts, in order (a new array). */
export function filterHeaders(rawHeaders: readonly string[], keep: (lowerName: string, value: string) => boolean): string[] {
  const out: string[] = [];
  forEachHeader(rawHeaders, (name, value) => {
    if (keep(name.toLowerCase(), value)) out.push(name, value);
  });
  return out;
}

/** The pairs without any of the named headers (`names` in lower case). */
export function withoutHeaders(rawHeaders: readonly string[], names: ReadonlySet<string>): string[] {
  return filterHeaders(rawHeaders, (lower) => !names.has(lower));
}

/** The first value of each name, keyed by lower-case name, as node:http's `req.headers` gives them. */
export function headerObject(rawHeaders: readonly string[]): Record<string, string> {
  const out: Record<string, string> = {};
  forEachHeader(rawHeaders, (name, value) => {
    out[name.toLowerCase()] ??= value;
  });
  return out;
}

/** The header names a `connection` header lists (`connection: close, x-foo` → close, x-foo), lower case. */
export function connectionNamedHeaders(rawHeaders: readonly string[]): Set<string> {
  const named = new Set<string>();
  for (const value of headerValues(rawHeaders, 'connection')) {
    for (const token of value.split(',')) {
      const t = token.trim().toLowerCase();
      if (t) named.add(t);
    }
  }
  return named;
}

/**
 * Connection-specific fields an HTTP/2 request must not carry (RFC 9113 §8.2.2), plus `host`
 * (HTTP/2 sends `:authority`); `te` is allowed only as `trailers` and handled by the caller.
 */
export const HTTP2_CONNECTION_SPECIFIC_HEADERS: ReadonlySet<string> = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'transfer-encoding',
  'upgrade',
  'http2-settings',
  'host',
]);

/** HTTP/2 raw pairs without the pseudo-header fields (`:status`, `:path`, …). */
export function withoutPseudoHeaders(rawHeaders: readonly string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i + 1 < rawHeaders.length; i += 2) {
    const name = rawHeaders[i] as string;
    if (name.charCodeAt(0) !== 0x3a) out.push(name, rawHeaders[i + 1] as string);
  }
  return out;
}

/**
 * The fields of an HTTP/2 request as HTTP/1.1 would carry them: `:authority` becomes `host` at
 * its place, the other pseudo-headers are left out (so rules, hooks and the Host policy treat
 * both protocols alike).
 */
export function http2RequestFields(rawHeaders: readonly string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i + 1 < rawHeaders.length; i += 2) {
    const name = rawHeaders[i] as string;
    if (name === ':authority') out.push('host', rawHeaders[i + 1] as string);
    else if (name.charCodeAt(0) !== 0x3a) out.push(name, rawHeaders[i + 1] as string);
  }
  return out;
}

export const MIRRORPLANE_ID_HEADER = 'x-mirrorplane-id';
export const MIRRORPLANE_ATTEMPT_HEADER = 'x-mirrorplane-attempt';
/** The copy number (1…N) of an amplified request; absent when a request is sent once. */
export const MIRRORPLANE_COPY_HEADER = 'x-mirrorplane-copy';
/** The shared secret the mirror proxy sends to the ingress (`INGRESS_TOKEN`); never stored, never shown. */
export const MIRRORPLANE_TOKEN_HEADER = 'x-mirrorplane-token';
/** The reason (`DropReason`) the ingress gives in a refusal it answers itself (`413`, `503`, …). */
export const MIRRORPLANE_DROP_HEADER = 'x-mirrorplane-drop';

/**
 * Removes Envoy's shadow suffix from a mirrored host: Envoy appends `-shadow` to the host of
 * mirrored requests (`api.example.com-shadow`, or before the port: `api.example.com-shadow:8080`).
 */
export function stripShadowSuffix(host: string): string {
  const colon = host.lastIndexOf(':');
  const hasPort = colon > host.lastIndexOf(']') && /^\d+$/.test(host.slice(colon + 1));
  const name = hasPort ? host.slice(0, colon) : host;
  const port = hasPort ? host.slice(colon) : '';
  if (name.endsWith('-shadow')) return name.slice(0, -'-shadow'.length) + port;
  if (host.endsWith('-shadow')) return host.slice(0, -'-shadow'.length);
  return host;
}

export interface StagingHeaderOptions {
  /** The Host staging receives, or null to keep the mirrored Host (without `-shadow`). */
  host: string | null;
  /** The Host sent when the request had none and `host` is null (the staging origin's); HTTP/1.1 needs one. */
  fallbackHost?: string;
  entryId: string;
  attempt: number;
  /**
   * HTTP/2: keep `te: trailers` in its place (RFC 9113 §8.2.2 allows it, and gRPC servers
   * require it); every other `te` value is still dropped.
   */
  keepTeTrailers?: boolean;
}

/**
 * The headers staging receives for a mirrored request: the same names, case, values and order,
 * without hop-by-hop headers (and those named by `connection`), with `host` set in its place
 * (appended when the request had none), plus the mirrorplane id and attempt headers.
 * `content-length` / `transfer-encoding` stay where they were; the staging client sets their values.
 * Any `x-mirrorplane-*` header that came in is replaced, never trusted.
 */
export function stagingHeaders(rawHeaders: readonly string[], options: StagingHeaderOptions): string[] {
  const named = connectionNamedHeaders(rawHeaders);
  const out: string[] = [];
  let hostSeen = false;
  forEachHeader(rawHeaders, (name, value) => {
    const lower = name.toLowerCase();
    if (lower === 'te' && options.keepTeTrailers === true && value.trim().toLowerCase() === 'trailers') {
      out.push(name, value);
      return;
    }
    if (STAGING_DROPPED.has(lower) || named.has(lower)) return;
    if (lower === 'host') {
      // A request has one Host; a second one would be refused by staging's parser.
      if (hostSeen) return;
      hostSeen = true;
      out.push(name, options.host ?? stripShadowSuffix(value));
      return;
    }
    out.push(name, value);
  });
  const host = options.host ?? options.fallbackHost;
  if (!hostSeen && host !== undefined) out.push('host', host);
  out.push(MIRRORPLANE_ID_HEADER, options.entryId, MIRRORPLANE_ATTEMPT_HEADER, String(options.attempt));
  return out;
}

/** A copy of raw headers with the values of the named headers replaced by `[redacted]`. */
export function redactHeaders(rawHeaders: readonly string[], redacted: ReadonlySet<string>): string[] {
  const out = rawHeaders.slice();
  for (let i = 0; i < out.length; i += 2) {
    if (redacted.has((out[i] as string).toLowerCase())) out[i + 1] = '[redacted]';
  }
  return out;
}

/**
 * Header handling shared by the worker (what staging receives) and the logs (redaction).
 * Headers are always flat `[name, value, …]` arrays so that order and duplicates survive.
 */

/**
 * Hop-by-hop headers (RFC 9110 §7.6.1); never forwarded. `content-length` and
 * `transfer-encoding` are kept in place: the staging client writes them true to the body it sends.
 */
const DROPPED = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'te',
  'upgrade',
  // The ingress already answered the 100-continue handshake; the replay sends the body at once.
  'expect',
]);

export const MIRRORPLANE_ID_HEADER = 'x-mirrorplane-id';
export const MIRRORPLANE_ATTEMPT_HEADER = 'x-mirrorplane-attempt';


/** The first value of a header (case-insensitive name), or null. */
export function headerValue(rawHeaders: readonly string[], name: string): string | null {
  for (let i = 0; i < rawHeaders.length; i += 2) {
    if ((rawHeaders[i] as string).toLowerCase() === name) return rawHeaders[i + 1] as string;
  }
  return null;
}

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
}

/**
 * The headers staging receives for a mirrored request: the same names, case, values and order,
 * without hop-by-hop headers (and those named by `connection`), with `host` set in its place
 * (appended when the request had none), plus the mirrorplane id and attempt headers.
 * `content-length` / `transfer-encoding` stay where they were; the staging client sets their values.
 * Any `x-mirrorplane-*` header that came in is replaced, never trusted.
 */
export function stagingHeaders(rawHeaders: readonly string[], options: StagingHeaderOptions): string[] {
  let named: Set<string> | null = null;
  for (let i = 0; i < rawHeaders.length; i += 2) {
    if ((rawHeaders[i] as string).toLowerCase() === 'connection') {
      named ??= new Set();
      for (const token of (rawHeaders[i + 1] as string).split(',')) {
        const t = token.trim().toLowerCase();
        if (t) named.add(t);
      }
    }
  }
  const out: string[] = [];
  let hostSeen = false;
  for (let i = 0; i < rawHeaders.length; i += 2) {
    const name = rawHeaders[i] as string;
    const lower = name.toLowerCase();
    if (DROPPED.has(lower) || named?.has(lower) || lower === MIRRORPLANE_ID_HEADER || lower === MIRRORPLANE_ATTEMPT_HEADER) {
      continue;
    }
    if (lower === 'host') {
      // A request has one Host; a second one would be refused by staging's parser.
      if (hostSeen) continue;
      hostSeen = true;
      out.push(name, options.host ?? stripShadowSuffix(rawHeaders[i + 1] as string));
      continue;
    }
    out.push(name, rawHeaders[i + 1] as string);
  }
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

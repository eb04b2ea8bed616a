import assert from 'node:assert/strict';
import type { Received } from './recording-server.js';

// Restated here, not imported from core: the test states the contract independently of the code.
/** Hop-by-hop fields (and Expect, answered by the ingress): never replayed. */
const HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'te', 'upgrade', 'expect']);

/**
 * The header list staging must receive for a request that arrived with `sent`, exactly: the
 * same names, case, values and order, minus hop-by-hop fields (and those `connection` names);
 * `host` in its place with the staging host (appended when there was none); a
 * `content-length` / `transfer-encoding` in its place with a value true to the body sent;
 * then `x-mirrorplane-id` and `x-mirrorplane-attempt`; then `content-length` only when the
 * request had no framing field and the body is not empty.
 */
export function expectedStagingHeaders(sent: readonly string[], expected: { host: string; entryId: string; attempt?: number; bodyLength: number }): string[] {
  const named = new Set<string>();
  for (let i = 0; i < sent.length; i += 2) {
    if ((sent[i] as string).toLowerCase() === 'connection') for (const t of (sent[i + 1] as string).split(',')) if (t.trim()) named.add(t.trim().toLowerCase());
  }
  const want: string[] = [];
  let host = false;
  let framed = false;
  for (let i = 0; i < sent.length; i += 2) {
    const name = sent[i] as string;
    const lower = name.toLowerCase();
    if (HOP.has(lower) || named.has(lower) || lower === 'x-mirrorplane-id' || lower === 'x-mirrorplane-attempt') continue;
    if (lower === 'host') {
      if (host) continue;
      host = true;
      want.push(name, expected.host);
    } else if (lower === 'content-length' || lower === 'transfer-encoding') {
      if (framed) continue;
      framed = true;
      want.push(name, lower === 'content-length' ? String(expected.bodyLength) : 'chunked');
    } else want.push(name, sent[i + 1] as string);
  }
  if (!host) want.push('host', expected.host);
  want.push('x-mirrorplane-id', expected.entryId, 'x-mirrorplane-attempt', String(expected.attempt ?? 1));
  if (!framed && expected.bodyLength > 0) want.push('content-length', String(expected.bodyLength));
  return want;
}

/** Asserts that staging received exactly `expectedStagingHeaders(sent, …)` (the entry id is taken from what staging received when not given). */
export function assertStagingHeaders(received: Received, sent: readonly string[], expected: { host: string; entryId?: string; attempt?: number }): void {
  const raw = received.rawHeaders;
  let entryId = expected.entryId;
  for (let i = 0; entryId === undefined && i < raw.length; i += 2) if (raw[i] === 'x-mirrorplane-id') entryId = raw[i + 1];
  assert.deepEqual(
    raw,
    expectedStagingHeaders(sent, { host: expected.host, entryId: entryId ?? '', attempt: expected.attempt, bodyLength: received.body.length }),
    'staging headers: names, case, order and values as received',
  );
}

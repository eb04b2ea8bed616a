import assert from 'node:assert/strict';
import type { Received } from './recording-server.js';

// Restated here, not imported from core: the test states the contract independently of the code.
const HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'te', 'trailer', 'upgrade', 'content-length', 'expect', 'host']);

/**
 * Asserts that staging received `sent` (raw header pairs as the client sent them) the way the
 * contract says: undici puts `host` and `connection` first; then the same headers, order and
 * case, minus hop-by-hop ones; then `x-mirrorplane-id` and `x-mirrorplane-attempt`; then
 * `content-length` when there is a body (or the method carries one).
 */
export function assertStagingHeaders(received: Received, sent: readonly string[], expected: { host: string; entryId?: string; attempt?: number }): void {
  const raw = received.rawHeaders;
  assert.equal(raw[0]?.toLowerCase(), 'host', `first header is host: ${JSON.stringify(raw)}`);
  assert.equal(raw[1], expected.host);
  let i = 2;
  if (raw[i]?.toLowerCase() === 'connection') i += 2;
  const rest = raw.slice(i);
  const forwarded: string[] = [];
  for (let j = 0; j < sent.length; j += 2) {
    if (!HOP.has((sent[j] as string).toLowerCase())) forwarded.push(sent[j] as string, sent[j + 1] as string);
  }
  const head = rest.slice(0, forwarded.length + 4);
  assert.deepEqual(head.slice(0, forwarded.length), forwarded, 'forwarded headers in order');
  assert.equal(head[forwarded.length], 'x-mirrorplane-id');
  if (expected.entryId) assert.equal(head[forwarded.length + 1], expected.entryId);
  assert.equal(head[forwarded.length + 2], 'x-mirrorplane-attempt');
  assert.equal(head[forwarded.length + 3], String(expected.attempt ?? 1));
  const tail = rest.slice(forwarded.length + 4);
  if (tail.length > 0) {
    assert.deepEqual(tail, ['content-length', String(received.body.length)], 'only content-length follows');
  } else {
    assert.equal(received.body.length, 0);
  }
}

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { RequestParser } from '@mirrorplane/ingress';

// The parser's cost is linear in a head's length however the head is split: an unfinished line
// is kept in a growable buffer (no copy of the line so far per piece) and scanned once. A
// slowloris client pays one packet per step, and so does the ingress. (The quadratic parser
// this replaced copied and rescanned the whole line with every piece: 8× the head, ~30× the time.)

/** ms to parse a head with one `size`-byte cookie fed in 16-byte pieces (fresh Buffers, as from a socket). */
function piecesMs(size: number): number {
  const head = Buffer.from(`GET /big HTTP/1.1\r\nhost: a\r\ncookie: ${'c'.repeat(size)}\r\n\r\n`, 'latin1');
  const pieces: Buffer[] = [];
  for (let i = 0; i < head.length; i += 16) pieces.push(Buffer.from(head.subarray(i, i + 16)));
  const parser = new RequestParser({ maxHeaderBytes: 4 << 20, maxBodyBytes: 1024 });
  const t0 = performance.now();
  let kind: string | undefined;
  for (const p of pieces) {
    parser.feed(p);
    for (let e = parser.next(); e !== null; e = parser.next()) kind = e.kind;
  }
  const ms = performance.now() - t0;
  assert.equal(kind, 'request');
  return ms;
}

test('a head fed in 16-byte pieces costs linear time in its length (8× the head: about 8× the time, not 64×)', () => {
  piecesMs(32 * 1024); // warm up
  // The least of three runs each: the machine is shared.
  const small = Math.min(piecesMs(64 * 1024), piecesMs(64 * 1024), piecesMs(64 * 1024));
  const large = Math.min(piecesMs(512 * 1024), piecesMs(512 * 1024), piecesMs(512 * 1024));
  assert.ok(large < small * 14 + 20, `64 KiB in 16-byte pieces: ${small.toFixed(1)} ms; 512 KiB: ${large.toFixed(1)} ms (ratio ${(large / small).toFixed(1)})`);
});

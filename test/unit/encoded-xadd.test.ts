import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { Command } from 'ioredis';
import { EncodedXadd } from '../../apps/ingress/src/entry-appender.js';

// The ingress writes its XADD bytes itself: they must be exactly what ioredis writes for the
// same arguments, for any strings (UTF-8, multi-byte, empty) and Buffers (empty, binary).

const bytesOf = (w: string | Buffer): Buffer => (typeof w === 'string' ? Buffer.from(w, 'utf8') : w);
const arg = fc.oneof(
  fc.string({ unit: 'binary' }),
  // Short ASCII strings take a byte-by-byte path; around its 16-character bound, and strings
  // whose UTF-16 length is not their UTF-8 length (latin1, lone surrogates) must not.
  fc.string({ unit: 'binary-ascii', maxLength: 20 }),
  fc.string({ unit: fc.constantFrom('a', 'é', '\ud800', '\udc00', '€', '\u{1f600}'), maxLength: 18 }),
  fc.uint8Array({ maxLength: 300 }).map((a) => Buffer.from(a)),
);

test('EncodedXadd writes the bytes ioredis writes for xadd with the same arguments', () => {
  fc.assert(
    fc.property(
      fc.oneof(
        fc.string({ minLength: 1 }),
        fc.uint8Array({ minLength: 1, maxLength: 40 }).map((a) => Buffer.from(a)),
      ),
      fc.array(arg, { maxLength: 24 }),
      (stream, fields) => {
        const args = [stream, '*', ...fields];
        const ours = new EncodedXadd(args).toWritable();
        const theirs = bytesOf(new Command('xadd', args).toWritable({}) as string | Buffer);
        assert.ok(ours.equals(theirs), `${ours.toString('latin1')} != ${theirs.toString('latin1')}`);
      },
    ),
    { numRuns: 500 },
  );
});

test('EncodedXadd is routed by its stream: the key ioredis (and Redis Cluster) sees is the stream', () => {
  const command = new EncodedXadd(['{p}:stream', '*', 'b', Buffer.from('x')]);
  assert.deepEqual(command.getKeys(), ['{p}:stream']);
  assert.equal(command.getSlot(), new Command('xadd', ['{p}:stream', '*', 'b', 'x']).getSlot());
});

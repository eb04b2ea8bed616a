import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as zlib from 'node:zlib';
import fc from 'fast-check';
import { decodeBody } from '@mirrorplane/core';

/**
 * The one body decoder fed a coding that lies: bytes after the end of the coded stream. One
 * rule for every coding: the body is `corrupt` (never decoded with the tail silently dropped),
 * while a body with nothing after its stream decodes, and a concatenation of gzip members (legal
 * gzip) still decodes whole.
 */

const codings: [string, (b: Buffer) => Buffer][] = [
  ['gzip', (b) => zlib.gzipSync(b)],
  ['deflate', (b) => zlib.deflateSync(b)],
  ['deflate', (b) => zlib.deflateRawSync(b)],
  ['br', (b) => zlib.brotliCompressSync(b)],
];

test('bytes after the end of a coded stream: corrupt, whatever the coding', () => {
  fc.assert(
    fc.property(
      fc.constantFrom(...codings),
      fc.uint8Array({ minLength: 0, maxLength: 512 }),
      fc.uint8Array({ minLength: 1, maxLength: 64 }),
      ([name, encode], plain, tail) => {
        const coded = encode(Buffer.from(plain));
        const whole = decodeBody(['content-encoding', name], coded);
        assert.ok(whole.ok && whole.body.equals(Buffer.from(plain)), `${name}: the stream alone decodes`);
        // A tail that is itself a gzip member is gzip's multi-member form, not trailing garbage.
        if (name === 'gzip' && tail[0] === 0x1f && tail[1] === 0x8b) return;
        const lying = decodeBody(['content-encoding', name], Buffer.concat([coded, Buffer.from(tail)]));
        assert.equal(lying.kind, 'corrupt', `${name} with ${tail.length} trailing bytes`);
      },
    ),
    { numRuns: 300 },
  );
});

test('concatenated gzip members decode whole', () => {
  const body = Buffer.concat([zlib.gzipSync('{"id":'), zlib.gzipSync('"ord_1"}')]);
  const decoded = decodeBody(['content-encoding', 'gzip'], body);
  assert.ok(decoded.ok);
  assert.equal(decoded.body.toString(), '{"id":"ord_1"}');
});

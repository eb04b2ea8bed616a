import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as zlib from 'node:zlib';
import { decodeBody } from '@mirrorplane/core';

/** The one body decoder fed a coding that lies: bytes after the end of the coded stream. */

const codings: [string, (b: Buffer) => Buffer][] = [['gzip', (b) => zlib.gzipSync(b)], ['deflate', (b) => zlib.deflateSync(b)], ['br', (b) => zlib.brotliCompressSync(b)]];

test('lying codings: bytes after the end of the coded stream get the same outcome whatever the coding', () => {
  const json = Buffer.from('{"id":"ord_1"}');
  const outcomes = codings.map(([name, encode]) => `${name}: ${decodeBody(['content-encoding', name], Buffer.concat([encode(json), Buffer.from('{"id":"ord_2"}')])).kind}`);
  const kinds = new Set(outcomes.map((o) => o.split(': ')[1]));
  assert.equal(kinds.size, 1, `one rule for trailing bytes, got ${outcomes.join(', ')}`);
});

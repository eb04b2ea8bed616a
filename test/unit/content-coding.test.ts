import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as zlib from 'node:zlib';
import fc from 'fast-check';
import {
  ZSTD_SUPPORTED,
  compileComparison,
  CompareOptions,
  compileRules,
  decodeBody,
  parseJsonBody,
  RuleOptions,
  type PipelineContext,
} from '@mirrorplane/core';

const encoders: Record<string, (b: Buffer) => Buffer> = {
  gzip: (b) => zlib.gzipSync(b),
  'x-gzip': (b) => zlib.gzipSync(b),
  deflate: (b) => zlib.deflateSync(b),
  'deflate (raw)': (b) => zlib.deflateRawSync(b),
  br: (b) => zlib.brotliCompressSync(b),
};

test('decodeBody undoes gzip, deflate (zlib and raw), br, and stacked codings, for any bytes', () => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 2000 }), fc.constantFrom(...Object.keys(encoders)), (bytes, name) => {
      const body = Buffer.from(bytes);
      const coding = name.split(' ')[0]!;
      const got = decodeBody(['Content-Encoding', coding], encoders[name]!(body));
      if (body.length === 0 && got.kind === 'identity') return;
      assert.equal(got.kind, 'decoded');
      assert.ok(got.body.equals(body));
    }),
    { numRuns: 300 },
  );
  const body = Buffer.from('{"a":1}');
  const twice = zlib.brotliCompressSync(zlib.gzipSync(body));
  const got = decodeBody(['content-encoding', 'gzip, br'], twice);
  assert.equal(got.kind, 'decoded');
  assert.ok(got.body.equals(body));
  assert.deepEqual(got.kind === 'decoded' && got.codings, ['gzip', 'br']);
  assert.equal(decodeBody(['content-encoding', 'identity'], body).kind, 'identity');
  assert.equal(decodeBody([], body).kind, 'identity');
});

test('decodeBody never throws on arbitrary bytes, and says what happened', () => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 200 }), fc.constantFrom('gzip', 'deflate', 'br', 'zstd', 'compress', 'identity'), (bytes, coding) => {
      const got = decodeBody(['content-encoding', coding], Buffer.from(bytes));
      assert.ok(['identity', 'decoded', 'unsupported', 'corrupt', 'too_large'].includes(got.kind));
      if (!got.ok) assert.ok(got.body.equals(Buffer.from(bytes)), 'an undecodable body stays as received');
    }),
    { numRuns: 1000 },
  );
});

test('a decompression bomb stops at the bound with a clear outcome', () => {
  const bomb = zlib.gzipSync(Buffer.alloc(64 * 1024 * 1024));
  assert.ok(bomb.length < 100_000);
  const got = decodeBody(['content-encoding', 'gzip'], bomb, 1024 * 1024);
  assert.equal(got.kind, 'too_large');
  assert.match(!got.ok ? got.message : '', /gzip body decodes to more than 1048576 bytes/);
  assert.equal(decodeBody(['content-encoding', 'br'], zlib.brotliCompressSync(Buffer.alloc(4 * 1024 * 1024)), 65536).kind, 'too_large');
});

test('zstd: decoded where this Node has it, else a clear "cannot decode zstd"', () => {
  const got = decodeBody(['content-encoding', 'zstd'], Buffer.from([0x28, 0xb5, 0x2f, 0xfd]));
  if (ZSTD_SUPPORTED) assert.notEqual(got.kind, 'unsupported');
  else {
    assert.equal(got.kind, 'unsupported');
    assert.match(!got.ok ? got.message : '', /^cannot decode zstd/);
  }
  assert.match((decodeBody(['content-encoding', 'compress'], Buffer.from('x')) as { message: string }).message, /cannot decode content-coding "compress"/);
});

test('a body cut short by a limit decodes as far as it goes', () => {
  const text = Buffer.from(JSON.stringify({ items: Array.from({ length: 200 }, (_, i) => ({ i })) }));
  const gz = zlib.gzipSync(text);
  const half = gz.subarray(0, Math.floor(gz.length / 2));
  const got = decodeBody(['content-encoding', 'gzip'], half, undefined, { partial: true });
  assert.equal(got.kind, 'decoded');
  assert.equal(decodeBody(['content-encoding', 'gzip'], half).kind, 'corrupt', 'not marked partial: an early end is corrupt');
  assert.ok(text.subarray(0, got.body.length).equals(got.body) && got.body.length > 0);
});

test('every body reader honours Content-Encoding: JSON parsing, comparison and JSON rules', () => {
  const doc = { id: 'ord_1', total: 5 };
  const plain = { status: 200, headers: ['content-type', 'application/json'], body: Buffer.from(JSON.stringify(doc)) };
  for (const [name, encode] of Object.entries(encoders)) {
    const coded = { status: 200, headers: ['content-type', 'application/json', 'content-encoding', name.split(' ')[0]!], body: encode(plain.body) };
    assert.deepEqual(parseJsonBody(coded.headers, coded.body), doc, name);
  }
  // The comparison itself is of decoded bodies (the stage decodes); JSON structural compare sees the same document.
  const comparison = compileComparison(CompareOptions.parse({}));
  assert.equal(comparison.compare(plain, { ...plain, body: Buffer.from('{"total":5,"id":"ord_1"}') }).equal, true);
});

test('a JSON rule edits a gzip request body decoded, and sends it decoded without Content-Encoding', async () => {
  const rules = compileRules([RuleOptions.parse({ name: 'mask', json: { set: { card: 'xxxx' } } })], { origins: new Set() });
  const body = zlib.gzipSync(Buffer.from('{"card":"4111","n":1}'));
  const request = { method: 'POST', path: '/pay', headers: ['Content-Type', 'application/json', 'Content-Encoding', 'gzip'], body, origin: 'default' };
  const mirrored = { method: 'POST', target: '/pay', rawHeaders: ['Host', 'shop'], body, receivedAt: 0, requestId: null, clientAddress: null };
  const ctx: PipelineContext = { entryId: '1-0', attempt: 1, requestId: null, mirrored, rules: [], tags: {} };
  const out = (await rules.pre!(request, ctx))!;
  assert.equal(out.body.toString(), '{"card":"xxxx","n":1}');
  assert.deepEqual(out.headers, ['Content-Type', 'application/json']);
  // A body that does not decode is sent as it came.
  const broken = { ...request, headers: [...request.headers], body: Buffer.from('not gzip') };
  const kept = (await rules.pre!(broken, ctx))!;
  assert.equal(kept.body.toString(), 'not gzip');
  assert.deepEqual(kept.headers, request.headers);
});

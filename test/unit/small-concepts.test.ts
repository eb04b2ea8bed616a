import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { compareStreamIds, fnv1a32, hasJsonBody, isHttpToken, isJsonMediaType, nextStreamId, partitionOf, sampleScore } from '@mirrorplane/core';

const TCHAR = "!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

test('an HTTP token is one or more RFC 9110 tchar', () => {
  fc.assert(
    fc.property(fc.string({ unit: 'binary-ascii', maxLength: 10 }), (s) => {
      assert.equal(isHttpToken(s), s.length > 0 && [...s].every((c) => TCHAR.includes(c)));
    }),
  );
  for (const t of ['GET', 'x-request-id', "!#$%&'*+-.^_`|~"]) assert.ok(isHttpToken(t), t);
  for (const t of ['', 'a b', 'a:b', 'é', 'a\n']) assert.ok(!isHttpToken(t), t);
});

test('FNV-1a matches the published 32-bit vectors, so partitions and samples never move', () => {
  assert.equal(fnv1a32(''), 0x811c9dc5);
  assert.equal(fnv1a32('a'), 0xe40c292c);
  assert.equal(fnv1a32('foobar'), 0xbf9cf968);
  assert.equal(partitionOf('foobar', 7), 0xbf9cf968 % 7);
  fc.assert(
    fc.property(fc.string(), fc.integer({ min: 1, max: 64 }), (key, n) => {
      const h = fnv1a32(key);
      assert.ok(Number.isInteger(h) && h >= 0 && h < 2 ** 32);
      const p = partitionOf(key, n);
      assert.ok(p >= 0 && p < n);
      const score = sampleScore(key);
      assert.ok(score >= 0 && score < 1);
    }),
  );
});

const u64 = fc.bigInt({ min: 0n, max: 2n ** 64n - 1n });

test('stream ids compare as pairs of 64-bit integers, never as strings or doubles', () => {
  fc.assert(
    fc.property(u64, u64, u64, u64, (am, as, bm, bs) => {
      const expected = am === bm ? Math.sign(Number(as - bs)) : am < bm ? -1 : 1;
      assert.equal(compareStreamIds(`${am}-${as}`, `${bm}-${bs}`), expected);
      assert.equal(compareStreamIds(`${bm}-${bs}`, `${am}-${as}`), -expected || 0);
      assert.equal(compareStreamIds(nextStreamId(`${am}-${as}`), `${am}-${as}`), 1);
    }),
  );
  assert.equal(compareStreamIds('9-0', '10-0'), -1);
  assert.equal(compareStreamIds('9007199254740993-0', '9007199254740992-5'), 1);
  assert.equal(nextStreamId('5-3'), '5-4');
});

test('JSON is decided by one rule: subtype json or +json, any case and parameters', () => {
  const json = ['application/json', 'Application/JSON; charset=utf-8', 'application/problem+json', 'text/json', 'application/vnd.api+json ;v=1'];
  const other = [
    '',
    'application/jsonp',
    'text/plain',
    'application/x-json-stream',
    'json',
    '/json',
    'application/+json',
    'multipart/form-data; boundary=json',
  ];
  for (const t of json) assert.ok(isJsonMediaType(t), t);
  for (const t of other) assert.ok(!isJsonMediaType(t), t);
  assert.ok(!isJsonMediaType(null));
  assert.ok(hasJsonBody(['Content-Type', 'application/json', 'content-type', 'text/plain']));
  assert.ok(!hasJsonBody(['accept', 'application/json']));
});

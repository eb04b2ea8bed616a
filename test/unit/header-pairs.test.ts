import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import {
  connectionNamedHeaders,
  filterHeaders,
  forEachHeader,
  headerEntries,
  headerObject,
  headerValue,
  headerValues,
  HOP_BY_HOP_HEADERS,
  REPLAY_MANAGED_HEADERS,
  RULE_FORBIDDEN_HEADERS,
  someHeader,
  stagingHeaders,
  withoutHeaders,
} from '@mirrorplane/core';

const name = fc.constantFrom('Host', 'host', 'Content-Type', 'X-Id', 'x-id', 'X-ID', 'Cookie', 'Connection', 'TE');
const pairs = fc.array(fc.tuple(name, fc.string({ maxLength: 8 })), { maxLength: 12 });
const flat = (p: [string, string][]) => p.flat();

test('raw header pairs: lookups agree with a plain scan of the pairs, whatever the case', () => {
  fc.assert(
    fc.property(pairs, name, (p, wanted) => {
      const raw = flat(p);
      const lower = wanted.toLowerCase();
      const expected = p.filter(([n]) => n.toLowerCase() === lower).map(([, v]) => v);
      assert.deepEqual(headerValues(raw, wanted), expected);
      assert.equal(headerValue(raw, wanted), expected[0] ?? null);
      assert.equal(
        someHeader(raw, wanted, () => true),
        expected.length > 0,
      );
      assert.deepEqual(headerEntries(raw), p);
      const seen: [string, string, number][] = [];
      forEachHeader(raw, (n, v, i) => seen.push([n, v, i]));
      assert.deepEqual(
        seen,
        p.map(([n, v], i) => [n, v, 2 * i]),
      );
      assert.equal(headerObject(raw)[lower], expected[0]);
    }),
  );
});

test('raw header pairs: filtering keeps order, case and duplicates of what it keeps', () => {
  fc.assert(
    fc.property(pairs, fc.uniqueArray(name.map((n) => n.toLowerCase())), (p, drop) => {
      const raw = flat(p);
      const kept = p.filter(([n]) => !drop.includes(n.toLowerCase()));
      assert.deepEqual(withoutHeaders(raw, new Set(drop)), flat(kept));
      assert.deepEqual(
        filterHeaders(raw, () => true),
        raw,
      );
      assert.notEqual(
        filterHeaders(raw, () => true),
        raw,
      );
    }),
  );
});

test('connection-named headers are collected from every connection header, trimmed and lower case', () => {
  const raw = ['Connection', 'keep-alive, X-Hop ', 'x', '1', 'connection', ',Upgrade,,'];
  assert.deepEqual([...connectionNamedHeaders(raw)].sort(), ['keep-alive', 'upgrade', 'x-hop']);
  assert.equal(connectionNamedHeaders(['a', 'b']).size, 0);
});

/** Framing fields stay in place: the staging client writes their values true to the body it sends. */
const FRAMING = new Set(['content-length', 'transfer-encoding', 'trailer']);

test('the hop-by-hop set is RFC 9110 §7.6.1; every replay-managed header but the framing ones is dropped before staging', () => {
  assert.deepEqual([...HOP_BY_HOP_HEADERS].sort(), ['connection', 'keep-alive', 'proxy-connection', 'te', 'trailer', 'transfer-encoding', 'upgrade']);
  assert.equal(RULE_FORBIDDEN_HEADERS, REPLAY_MANAGED_HEADERS);
  for (const h of REPLAY_MANAGED_HEADERS) {
    const out = stagingHeaders([h.toUpperCase(), 'v', 'accept', '*/*'], { host: 'staging', entryId: '1-0', attempt: 1 });
    const kept = out.slice(0, -4).some((n, i) => i % 2 === 0 && n.toLowerCase() === h);
    assert.equal(kept, FRAMING.has(h), h);
    if (FRAMING.has(h)) assert.deepEqual(out.slice(0, 2), [h.toUpperCase(), 'v'], `${h} stays in its place`);
  }
});

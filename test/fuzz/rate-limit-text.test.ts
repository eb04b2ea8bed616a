import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { formatRateLimit, parseRateLimit, plainDecimal, rateLimitOf, RATE_LIMIT_MAX } from '@mirrorplane/core';

// Issue #19: the CLI stores a live cap as text that every worker parses; one formatter and one
// parser, so any cap the CLI accepts is the cap the workers apply (1e-7 was stored as "1e-7,5").

const perSecond = fc.double({ min: Number.MIN_VALUE, max: RATE_LIMIT_MAX, noNaN: true, noDefaultInfinity: true });
const burst = fc.integer({ min: 1, max: RATE_LIMIT_MAX });

test('every cap round-trips through formatRateLimit and parseRateLimit unchanged (any double rate, any burst)', () => {
  fc.assert(
    fc.property(perSecond, burst, (r, b) => {
      const limit = rateLimitOf(r, b);
      const text = formatRateLimit(limit);
      assert.doesNotMatch(text, /e/i, text);
      assert.deepEqual(parseRateLimit(text), limit, text);
    }),
    { numRuns: 2000 },
  );
  assert.equal(parseRateLimit(formatRateLimit(null)), null);
});

test('plainDecimal writes exactly the number (no exponent) for tiny and huge values', () => {
  fc.assert(
    fc.property(fc.double({ min: 0, max: 1e300, noNaN: true, noDefaultInfinity: true }), (n) => {
      const s = plainDecimal(n);
      assert.match(s, /^\d+(\.\d+)?$/, s);
      assert.equal(Number(s), n);
    }),
    { numRuns: 2000 },
  );
  assert.equal(plainDecimal(1e-7), '0.0000001');
  assert.equal(plainDecimal(1.5e21), '1500000000000000000000');
});

test('a cap of 0 in any spelling is refused (off lifts a cap; 0 is not one)', () => {
  for (const zero of ['0', '0.0', '00', ' 0 ', '0,5', '0/s', '0.000']) {
    assert.throws(() => parseRateLimit(zero), /above 0/, zero);
  }
});

import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { decodePercent, decodeQueryComponent } from '@mirrorplane/core';

// Properties of the one tolerant decoder (packages/core/src/percent-decoding.ts) over malformed
// escapes of every kind; percent-decoding.test.ts holds it equal to decodeURIComponent.

/** Malformed escapes of every kind: not hex, cut short, not UTF-8, overlong, a surrogate, past U+10FFFF. */
const malformed = fc.constantFrom('%', '%z', '%zz', '%G1', '%4', '%FF', '%80', '%C3', '%E2%82', '%C0%AF', '%ED%A0%80', '%F5%80%80%80', '%F0%9F%98');
const text = fc.string({ unit: 'grapheme', maxLength: 12 });

test('tolerant decoding round-trips every valid escape', () => {
  fc.assert(
    fc.property(text, (s) => {
      assert.equal(decodePercent(encodeURIComponent(s)), s);
      assert.equal(decodeQueryComponent(encodeURIComponent(s)), s);
    }),
  );
});

test('tolerant decoding never throws and passes malformed escapes through as written', () => {
  fc.assert(
    fc.property(text, malformed, text, (a, bad, b) => {
      // '-' after the bad escape keeps the next escape from completing a cut-short one.
      const input = `${encodeURIComponent(a)}${bad}-${encodeURIComponent(b)}`;
      assert.equal(decodePercent(input), `${a}${bad}-${b}`);
    }),
  );
  fc.assert(
    fc.property(fc.string({ unit: 'binary', maxLength: 30 }), (s) => {
      const out = decodePercent(s);
      if (!s.includes('%')) assert.equal(out, s);
    }),
  );
});

test('form decoding reads + as a space, %2B as a plus', () => {
  assert.equal(decodeQueryComponent('a+b%2Bc'), 'a b+c');
  assert.equal(decodeQueryComponent('100%+sure'), '100% sure');
  assert.equal(decodePercent('a+b'), 'a+b');
});

import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { LinearRegExp, LinearRegexSyntaxError, MAX_MATCH_COST, MAX_PROGRAM_SIZE, linearRegexSkips } from '@mirrorplane/core';

/**
 * A rule pattern's cost per match is bounded whatever the pattern and the input: re2js runs
 * in time linear in the input times the size of the compiled program, so a pattern whose
 * program is over MAX_PROGRAM_SIZE is refused at load, and an input longer than
 * MAX_MATCH_COST / programSize is not matched (counted). Named patterns, then generated ones.
 */

const patterns = ['(.*a){999}', '(a*)*'.repeat(1000), '(?:[a-z]+x?){999}$'];
const input = `/${'a'.repeat(8000)}b`;

for (const source of patterns) {
  test(`${source.slice(0, 30)}… (${source.length} chars) is refused at load or matches an 8 KB path in under 100 ms`, () => {
    let re: LinearRegExp;
    try {
      re = new LinearRegExp(source);
    } catch (error) {
      assert.ok(error instanceof LinearRegexSyntaxError);
      assert.match(error.message, /instructions, more than/);
      return;
    }
    const t0 = performance.now();
    re.test(input);
    const ms = performance.now() - t0;
    assert.ok(ms < 100, `accepted at load, then one match took ${ms.toFixed(0)} ms`);
  });
}

test('generated patterns: accepted ones have a bounded program, and a match on any input stays within the cost bound', () => {
  const atom = fc.constantFrom('.*a', '[a-z]+x?', 'a*', '(a|b)*c', '[^/]+/', '.', '\\d+');
  const pattern = fc.tuple(atom, fc.integer({ min: 1, max: 999 }), fc.boolean()).map(([a, n, anchored]) => `${anchored ? '^' : ''}(?:${a}){${n}}`);
  fc.assert(
    fc.property(pattern, (source) => {
      let re: LinearRegExp;
      try {
        re = new LinearRegExp(source);
      } catch (error) {
        assert.ok(error instanceof LinearRegexSyntaxError, String(error));
        return;
      }
      assert.ok(re.programSize <= MAX_PROGRAM_SIZE, `${source}: ${re.programSize}`);
      assert.ok(re.programSize * re.maxInputLength <= MAX_MATCH_COST, source);
    }),
    { numRuns: 300 },
  );
});

test('the costliest accepted pattern on the longest input it runs on matches within 250 ms; a longer input is skipped and counted', () => {
  // (.*a){n} with the largest n under the program limit: every position keeps n threads alive.
  let n = 1;
  while (n < 999) {
    try {
      new LinearRegExp(`(.*a){${n + 1}}`);
      n++;
    } catch {
      break;
    }
  }
  const re = new LinearRegExp(`(.*a){${n}}`);
  assert.ok(re.programSize > MAX_PROGRAM_SIZE / 2, `worst pattern found: (.*a){${n}} (${re.programSize} instructions)`);
  const t0 = performance.now();
  re.test(`/${'a'.repeat(re.maxInputLength - 2)}b`);
  const ms = performance.now() - t0;
  assert.ok(ms < 250, `(.*a){${n}} on ${re.maxInputLength} characters took ${ms.toFixed(0)} ms`);
  const before = linearRegexSkips();
  assert.equal(re.test('a'.repeat(re.maxInputLength + 1)), false);
  assert.equal(re.exec('a'.repeat(re.maxInputLength + 1)), null);
  assert.equal(re.skipped, 2);
  assert.equal(linearRegexSkips(), before + 2);
});

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { LinearRegExp, LinearRegexSyntaxError } from '@mirrorplane/core';

/**
 * Attack on issue 12's "rules whose cost does not depend on the attacker": re2js runs in time
 * linear in the input, times the size of the compiled program. Short patterns within RE2's
 * limits compile to thousands of states; on an 8 KB request path (within intake's limits)
 * one match costs seconds. Each such pattern must be refused at load, or match promptly.
 */

const patterns = ['(.*a){999}', '(a*)*'.repeat(1000), '(?:[a-z]+x?){999}$'];
const input = `/${'a'.repeat(8000)}b`;

for (const source of patterns) {
  test(`attack-12: ${source.slice(0, 30)}… (${source.length} chars) is refused at load or matches an 8 KB path in under 100 ms`, () => {
    let re: LinearRegExp;
    try {
      re = new LinearRegExp(source);
    } catch (error) {
      assert.ok(error instanceof LinearRegexSyntaxError);
      return;
    }
    const t0 = performance.now();
    re.test(input);
    const ms = performance.now() - t0;
    assert.ok(ms < 100, `accepted at load, then one match took ${ms.toFixed(0)} ms`);
  });
}

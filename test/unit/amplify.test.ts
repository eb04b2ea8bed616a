import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { ConfigError, copiesFor, loadConfig, parseAmplify } from '@mirrorplane/core';
import { parseReplayFlags } from '../../apps/cli/src/replay-window.js';

test('a factor sends its whole part or one more, the same for the same entry id, averaging the factor', () => {
  fc.assert(
    fc.property(fc.double({ min: 1, max: 100, noNaN: true }), fc.string(), (factor, id) => {
      const n = copiesFor(factor, id);
      assert.ok(n === Math.floor(factor) || n === Math.floor(factor) + 1, `${factor} → ${n}`);
      assert.equal(copiesFor(factor, id), n);
      if (Number.isInteger(factor)) assert.equal(n, factor);
    }),
  );
  const ids = Array.from({ length: 10_000 }, (_, i) => `1764151200000-${i}`);
  const mean = ids.reduce((s, id) => s + copiesFor(2.5, id), 0) / ids.length;
  assert.ok(Math.abs(mean - 2.5) < 0.03, `mean ${mean}`);
  for (const f of [1, 0.5, 0, -1, NaN]) assert.equal(copiesFor(f, 'x'), 1);
});

test('--amplify reads 3, 2.5x, 250%; anything else, or without --staging, is a usage error naming the flag', () => {
  assert.equal(parseAmplify('3'), 3);
  assert.equal(parseAmplify('2.5x'), 2.5);
  assert.equal(parseAmplify('250%'), 2.5);
  for (const bad of ['0', '0.5', '101', 'x', '', '-2', '2.5y']) assert.throws(() => parseAmplify(bad), { code: 'MP_ERR_INVALID_VALUE' }, bad);
  assert.throws(() => parseReplayFlags({ from: '-1h', amplify: '0.5', staging: 'http://s.test' }), { code: 'MP_ERR_USAGE', message: /^--amplify: / });
  assert.throws(() => parseReplayFlags({ from: '-1h', amplify: '3' }), { code: 'MP_ERR_USAGE', message: /needs --staging/ });
  assert.equal(parseReplayFlags({ from: '-1h', amplify: '3', staging: 'http://s.test' }).amplify, 3);
});

test("a rule's amplify out of range, or not a number, is refused naming the rule's key", () => {
  for (const bad of ['0.5', '101', '"two"']) {
    try {
      loadConfig({
        role: 'worker',
        env: { STAGING_URL: 'http://s.test' },
        file: { path: 'm.yaml', text: `rules:\n  - { name: a, amplify: ${bad} }` },
      });
      assert.fail('expected a ConfigError');
    } catch (error) {
      assert.ok(error instanceof ConfigError);
      assert.deepEqual(
        error.issues.map((i) => i.key),
        ['m.yaml: rules[0].amplify'],
        bad,
      );
    }
  }
});

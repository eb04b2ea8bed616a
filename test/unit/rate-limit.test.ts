import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { ConfigError, formatRateLimit, loadConfig, parseRateLimit, rateLimitOf } from '@mirrorplane/core';

test('every cap reads back from its text form; off is null', () => {
  fc.assert(
    fc.property(fc.integer({ min: 1, max: 1_000_000 }), fc.option(fc.integer({ min: 1, max: 1_000_000 })), (perSecond, burst) => {
      const limit = rateLimitOf(perSecond, burst ?? undefined);
      assert.deepEqual(parseRateLimit(formatRateLimit(limit)), limit);
    }),
  );
  assert.equal(parseRateLimit('off'), null);
  assert.deepEqual(parseRateLimit('0.5'), { perSecond: 0.5, burst: 1 });
  assert.deepEqual(parseRateLimit('200'), { perSecond: 200, burst: 200 });
});

test('every malformed cap is refused with a coded error', () => {
  for (const bad of ['', '-1', 'fast', '200,', '200,0', '200,1.5', '2000000', '1,2000000', 'NaN', '1e3']) {
    assert.throws(() => parseRateLimit(bad), { code: 'MP_ERR_INVALID_VALUE' }, bad);
  }
});

test('a bad cap in the environment or the file names its key', () => {
  const env = { STAGING_URL: 'http://s.test' };
  const issues = (fn: () => unknown) => {
    try {
      fn();
    } catch (error) {
      assert.ok(error instanceof ConfigError);
      return error.issues.map((i) => i.key);
    }
    assert.fail('expected a ConfigError');
  };
  assert.deepEqual(
    issues(() => loadConfig({ role: 'worker', env: { ...env, STAGING_RATE_LIMIT: 'fast' } })),
    ['STAGING_RATE_LIMIT'],
  );
  const file = (text: string) => () => loadConfig({ role: 'worker', env, file: { path: 'm.yaml', text } });
  assert.deepEqual(issues(file('rateLimit: { nowhere: { perSecond: 5 } }')), ['m.yaml: rateLimit.nowhere']);
  assert.deepEqual(issues(file('rateLimit: { default: { perSecond: 0 } }')), ['m.yaml: rateLimit.default.perSecond']);
  assert.deepEqual(issues(file('rateLimit: { default: { perSecond: 5, burst: 0.5 } }')), ['m.yaml: rateLimit.default.burst']);
  assert.deepEqual(issues(file('rateLimit: { default: { perSecond: 5, bust: 3 } }')), ['m.yaml: rateLimit.default.bust']);
});

test('STAGING_RATE_LIMIT caps the default origin over the file; other origins keep theirs', () => {
  const text = 'origins: { reports: "http://r.test" }\nrateLimit: { default: { perSecond: 5 }, reports: { perSecond: 2, burst: 3 } }';
  const fromFile = loadConfig({ role: 'worker', env: { STAGING_URL: 'http://s.test' }, file: { path: 'm.yaml', text } });
  assert.deepEqual(fromFile.rateLimits, { default: { perSecond: 5, burst: 5 }, reports: { perSecond: 2, burst: 3 } });
  const fromEnv = loadConfig({ role: 'worker', env: { STAGING_URL: 'http://s.test', STAGING_RATE_LIMIT: '200,40' }, file: { path: 'm.yaml', text } });
  assert.deepEqual(fromEnv.rateLimits.default, { perSecond: 200, burst: 40 });
  assert.deepEqual(loadConfig({ role: 'worker', env: { STAGING_URL: 'http://s.test' } }).rateLimits, {});
});

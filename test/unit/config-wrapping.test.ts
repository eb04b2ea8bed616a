import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { ConfigError, INGRESS_INDEX_ENV, loadConfig } from '@mirrorplane/core';

const PARSED = ['REDIS_URL', 'PARTITION_KEY', 'STREAM_RETENTION', 'MIRRORPLANE_DATA_KEY', INGRESS_INDEX_ENV] as const;

test('any text in a parsed setting is either accepted or a ConfigError naming that setting, never another error', () => {
  fc.assert(
    fc.property(fc.constantFrom(...PARSED), fc.string({ unit: 'binary', maxLength: 40 }), (key, value) => {
      try {
        loadConfig({ role: 'cli', env: { [key]: value } });
      } catch (error) {
        assert.ok(error instanceof ConfigError, `${key}=${JSON.stringify(value)} threw ${String(error)}`);
        assert.ok(
          error.issues.some((i) => i.key === key),
          `${key}=${JSON.stringify(value)}: ${error.message}`,
        );
      }
    }),
    { numRuns: 500 },
  );
});

test('a Redis URL with malformed escapes in its user-info is taken as written, not a crash', () => {
  const config = loadConfig({ role: 'cli', env: { REDIS_URL: 'redis://us%zzer:p%E9ss%@127.0.0.1:6379/0' } });
  assert.equal(config.redisUrl, 'redis://us%zzer:p%E9ss%@127.0.0.1:6379/0');
});

test('the ingress process index comes from the environment through loadConfig', () => {
  assert.equal(loadConfig({ role: 'cli', env: {} }).ingressProcessIndex, 0);
  assert.equal(loadConfig({ role: 'cli', env: { [INGRESS_INDEX_ENV]: '3' } }).ingressProcessIndex, 3);
  assert.throws(
    () => loadConfig({ role: 'cli', env: { [INGRESS_INDEX_ENV]: 'x' } }),
    (e: unknown) => e instanceof ConfigError && e.issues[0]?.key === INGRESS_INDEX_ENV,
  );
});

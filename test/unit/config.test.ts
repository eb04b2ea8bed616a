import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ConfigError, compileRetryPolicy, loadConfig } from '@mirrorplane/core';

test('defaults follow the operator contract', () => {
  const c = loadConfig({ role: 'ingress', env: {} });
  assert.equal(c.redisUrl, 'redis://127.0.0.1:6379');
  assert.equal(c.prefix, 'mirrorplane');
  assert.equal(c.ingressPort, 8080);
  assert.equal(c.adminPort, 9090);
  assert.equal(loadConfig({ role: 'worker', env: { STAGING_URL: 'http://s' } }).adminPort, 9091);
  assert.equal(c.workerConcurrency, 64);
  assert.equal(c.replayAttempts, 0);
  assert.equal(c.replayBackoffMs, 1000);
  assert.equal(c.replayTimeoutMs, 10000);
  assert.equal(c.maxBodyBytes, 10485760);
  assert.equal(c.claimIdleMs, 30000);
  assert.equal(c.preserveHost, false);
  assert.ok(Object.isFrozen(c));
});

test('flags win over env, env over the file', () => {
  const c = loadConfig({
    role: 'ingress',
    env: { INGRESS_PORT: '81', ADMIN_PORT: '0', PRESERVE_HOST: 'yes' },
    flags: { ingressPort: '82' },
    file: { path: 'c.yaml', text: 'ingressPort: 83\nworkerConcurrency: 7\n' },
  });
  assert.equal(c.ingressPort, 82);
  assert.equal(c.adminPort, 0);
  assert.equal(c.workerConcurrency, 7);
  assert.equal(c.preserveHost, true);
});

test('every bad value is reported at once, by the name the operator used', () => {
  try {
    loadConfig({
      role: 'worker',
      env: { INGRESS_PORT: 'abc', REDIS_URL: 'not a url', PRESERVE_HOST: 'maybe', REPLAY_ATTEMPTS: '-1' },
      flags: { workerConcurrency: '-1' },
    });
    assert.fail('expected a ConfigError');
  } catch (error) {
    assert.ok(error instanceof ConfigError);
    assert.equal(error.code, 'MP_ERR_CONFIG');
    const keys = error.issues.map((i) => i.key).sort();
    assert.deepEqual(keys, ['--concurrency', 'INGRESS_PORT', 'PRESERVE_HOST', 'REDIS_URL', 'REPLAY_ATTEMPTS', 'STAGING_URL']);
    assert.match(error.message, /INGRESS_PORT: expected an integer from 0 to 65535, got "abc"/);
    assert.match(error.message, /STAGING_URL: required by the worker/);
  }
});

test('MAX_BODY_BYTES is at most 512 MiB, the largest value Redis takes: over it is a config error naming the key', () => {
  assert.equal(loadConfig({ role: 'ingress', env: { MAX_BODY_BYTES: String(512 * 1024 * 1024) } }).maxBodyBytes, 512 * 1024 * 1024);
  assert.throws(
    () => loadConfig({ role: 'ingress', env: { MAX_BODY_BYTES: String(512 * 1024 * 1024 + 1) } }),
    (error: unknown) => error instanceof ConfigError && /MAX_BODY_BYTES: expected an integer from 0 to 536870912/.test(error.message),
  );
});

test('unknown keys in the config file are errors, named by path', () => {
  assert.throws(
    () => loadConfig({ role: 'ingress', env: {}, file: { path: 'c.yaml', text: 'ingresPort: 1\nlogLevel: loud\n' } }),
    (error: unknown) =>
      error instanceof ConfigError &&
      error.issues.some((i) => i.key === 'c.yaml: ingresPort' && i.message === 'unknown key (did you mean "ingressPort"?)') &&
      error.issues.some((i) => i.key === 'c.yaml: logLevel'),
  );
  assert.throws(() => loadConfig({ role: 'ingress', env: {}, file: { path: 'c.json', text: '{' } }), /c\.json: cannot parse/);
});

test('the retry policy matches classes and exact statuses', () => {
  const retry = compileRetryPolicy(['5xx', '429']);
  assert.deepEqual([500, 503, 599, 429, 404, 200, 428].map(retry), [true, true, true, true, false, false, false]);
});

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { Writable } from 'node:stream';
import { loadConfig, parseRateLimit, rateLimitsKey } from '@mirrorplane/core';
import { createLogger, RateLimiter } from '@mirrorplane/runtime';
import { RedisServer, runCli } from '../helpers/index.js';

// Issue #19, rate cap values: `<per second>[,<burst>]` or `off` (CONFIG.md, README). A cap of 0,
// negative, huge or not a number must be refused with a clear error naming it, never taken
// as something else; an accepted cap must work.

let redis: RedisServer;

before(async () => {
  redis = await RedisServer.start();
});

after(async () => {
  await redis?.close();
});

test('mirrorplane rate-limit set default 0: refused (an operator setting 0 wants no traffic, not an uncapped origin)', async () => {
  const prefix = `t${randomBytes(4).toString('hex')}`;
  const client = redis.client();
  try {
    const r = await runCli(['rate-limit', 'set', 'default', '0'], { REDIS_URL: redis.url, MIRRORPLANE_PREFIX: prefix });
    const stored = await client.hget(rateLimitsKey(prefix), 'default');
    assert.notEqual(r.code, 0, `exit ${r.code}; stdout ${JSON.stringify(r.stdout)}; stored override ${JSON.stringify(stored)}`);
    assert.match(r.stderr, /cap/);
  } finally {
    client.disconnect();
  }
});

test('STAGING_RATE_LIMIT=0: a config error naming the key (not silently uncapped)', () => {
  assert.throws(
    () => loadConfig({ role: 'worker', env: { REDIS_URL: redis.url, STAGING_URL: 'http://127.0.0.1:1', STAGING_RATE_LIMIT: '0' } }),
    /STAGING_RATE_LIMIT/,
  );
});

test('bad caps via the CLI: negative, zero rate with a burst, huge, exponent, non-numeric, fractional burst are refused with exit 2 naming the cap', async () => {
  const prefix = `t${randomBytes(4).toString('hex')}`;
  const client = redis.client();
  const env = { REDIS_URL: redis.url, MIRRORPLANE_PREFIX: prefix };
  try {
    const all = ['-5', '0,5', '0.0', '1000001', '1e3', 'Infinity', 'NaN', '0x10', '5,1.5', '5,-1', '5,1000001', '', ' ', '5,', ',5', '５'];
    // The CLI refuses with the one parser's error: every value through the parser, a few through
    // the CLI (each run is a process start, about a second on a loaded machine).
    for (const bad of all) assert.throws(() => parseRateLimit(bad), /expected/, JSON.stringify(bad));
    for (const bad of ['-5', '0,5', '1e3', '5,1.5', ' ', '５']) {
      const r = await runCli(['rate-limit', 'set', 'default', bad], env);
      assert.equal(r.code, 2, `${JSON.stringify(bad)}: exit ${r.code} ${r.stdout} ${r.stderr}`);
      assert.match(r.stderr, /^mirrorplane: cap: expected/m, JSON.stringify(bad));
      assert.equal(await client.hget(rateLimitsKey(prefix), 'default'), null, `${JSON.stringify(bad)} was stored`);
    }
  } finally {
    client.disconnect();
  }
});

test('an accepted slow cap (0.00001/s, burst 1000000) still grants its burst: the bucket script does not fail on it', async () => {
  const prefix = `t${randomBytes(4).toString('hex')}`;
  const client = redis.client();
  const set = await runCli(['rate-limit', 'set', 'default', '0.00001,1000000'], { REDIS_URL: redis.url, MIRRORPLANE_PREFIX: prefix });
  assert.equal(set.code, 0, `the CLI accepts the cap: ${set.stderr}`);
  const config = loadConfig({
    role: 'worker',
    env: { REDIS_URL: redis.url, MIRRORPLANE_PREFIX: prefix, STAGING_URL: 'http://127.0.0.1:1', LOG_LEVEL: 'silent' },
  });
  const limiter = new RateLimiter({
    redis: client as never,
    prefix,
    limits: {},
    logger: createLogger(config, 'worker', new Writable({ write: (_c, _e, done) => done() })),
  });
  try {
    await limiter.refresh();
    assert.deepEqual(limiter.limitOf('default'), { perSecond: 0.00001, burst: 1_000_000 });
    const r = await limiter.tryTake('default', 10);
    assert.equal(r.granted, 10);
  } finally {
    limiter.close();
    client.disconnect();
  }
});

test('a slow cap the CLI accepts (0.0000001/s, burst 5) is the cap the workers apply (stored in a form they read back)', async () => {
  const prefix = `t${randomBytes(4).toString('hex')}`;
  const client = redis.client();
  const set = await runCli(['rate-limit', 'set', 'default', '0.0000001,5'], { REDIS_URL: redis.url, MIRRORPLANE_PREFIX: prefix });
  const config = loadConfig({
    role: 'worker',
    env: { REDIS_URL: redis.url, MIRRORPLANE_PREFIX: prefix, STAGING_URL: 'http://127.0.0.1:1', LOG_LEVEL: 'silent' },
  });
  const limiter = new RateLimiter({
    redis: client as never,
    prefix,
    limits: {},
    logger: createLogger(config, 'worker', new Writable({ write: (_c, _e, done) => done() })),
  });
  try {
    if (set.code !== 0) {
      // Refusing it is fine too, with an error naming the cap.
      assert.match(set.stderr, /cap/);
      return;
    }
    await limiter.refresh();
    const stored = await client.hget(rateLimitsKey(prefix), 'default');
    assert.deepEqual(
      limiter.limitOf('default'),
      { perSecond: 0.0000001, burst: 5 },
      `CLI said ${JSON.stringify(set.stdout)}, stored ${JSON.stringify(stored)}`,
    );
    const r = await limiter.tryTake('default', 6);
    assert.equal(r.granted, 5);
  } finally {
    limiter.close();
    client.disconnect();
  }
});

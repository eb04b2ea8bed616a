import { test } from 'node:test';
import assert from 'node:assert/strict';
import { request } from 'node:http';
import { MirrorplaneProcess, RedisServer, freePort, useStack } from '../helpers/index.js';

/**
 * Wrong dashboard tokens are throttled per remote address, on the login form and the bearer
 * header alike: after 10 failures an address gets 5 tries a minute, then 429 with Retry-After
 * for every credential it presents (the right one included), logged. ADMIN_TOKEN may be as
 * short as 16 characters: the throttle is what stands between an online guesser and it.
 */

const TOKEN = 'dashboard-token-0123456789abcdef';

let redis: RedisServer;
useStack({}, (s) => {
  redis = s.redis;
});

let retryAfter: string | undefined;

function post(port: number, body: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = request(
      {
        host: '127.0.0.1',
        port,
        method: 'POST',
        path: '/login',
        headers: { host: `127.0.0.1:${port}`, origin: `http://127.0.0.1:${port}`, 'content-type': 'application/x-www-form-urlencoded' },
      },
      (res) => {
        res.resume();
        if (res.statusCode === 429) retryAfter = res.headers['retry-after'];
        res.on('end', () => resolve(res.statusCode ?? 0));
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

function bearer(port: number, token: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path: '/api/status', headers: { host: `127.0.0.1:${port}`, authorization: `Bearer ${token}` } }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
    });
    req.on('error', reject);
    req.end();
  });
}

test('repeated wrong dashboard logins from one address are throttled', async () => {
  const port = await freePort();
  const dashboard = new MirrorplaneProcess(['dashboard', '--port', String(port)], {
    REDIS_URL: redis.url,
    MIRRORPLANE_PREFIX: 'a12-throttle',
    ADMIN_TOKEN: TOKEN,
  });
  try {
    await dashboard.waitForLog('dashboard listening');
    const statuses = new Map<number, number>();
    for (let i = 0; i < 300; i++) {
      const s = await post(port, `token=guess-${String(i).padStart(16, '0')}`);
      statuses.set(s, (statuses.get(s) ?? 0) + 1);
    }
    // After 300 failures, the right token right away: a throttle would make it wait or refuse it.
    const next = await post(port, `token=${TOKEN}`);
    assert.ok(
      (statuses.get(429) ?? 0) > 0 && next !== 303,
      `300 wrong guesses answered ${JSON.stringify([...statuses])}, then the right one ${next}: no throttle`,
    );
    assert.ok((statuses.get(401) ?? 0) <= 15, `at most 10 + 5 guesses checked in the first minute: ${JSON.stringify([...statuses])}`);
    assert.match(retryAfter ?? '', /^[1-9][0-9]*$/, 'a 429 says when to try again');
    // The bearer header shares the budget: the right token is not even checked now.
    assert.equal(await bearer(port, TOKEN), 429);
    await dashboard.waitForLog('dashboard credentials throttled');
  } finally {
    await dashboard.stop();
  }
});

test('wrong bearer tokens are throttled the same way, and the right one before the limit resets it', async () => {
  const port = await freePort();
  const dashboard = new MirrorplaneProcess(['dashboard', '--port', String(port)], {
    REDIS_URL: redis.url,
    MIRRORPLANE_PREFIX: 'a12-throttle-b',
    ADMIN_TOKEN: TOKEN,
  });
  try {
    await dashboard.waitForLog('dashboard listening');
    for (let i = 0; i < 9; i++) assert.equal(await bearer(port, `wrong-${i}-0123456789abcdef`), 401);
    assert.equal(await bearer(port, TOKEN), 200, 'the right token before the limit');
    const after: number[] = [];
    for (let i = 0; i < 40; i++) after.push(await bearer(port, `wrong-${i}-0123456789abcdef`));
    assert.deepEqual(after.slice(0, 10), Array(10).fill(401), 'the count started again after the right token');
    assert.ok(after.includes(429), `then throttled: ${after.join(',')}`);
  } finally {
    await dashboard.stop();
  }
});

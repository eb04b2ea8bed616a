import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { request } from 'node:http';
import { MirrorplaneProcess, RedisServer, freePort } from '../helpers/index.js';

/**
 * Attack on issue 12's dashboard login: ADMIN_TOKEN may be as short as 16 visible characters,
 * and neither /login nor the bearer check slows down or refuses a client that keeps guessing.
 * 300 wrong guesses in a row from one address are all answered at full speed, and the next
 * right guess is let in: nothing stands between an online guesser and the token but its length.
 */

const TOKEN = 'dashboard-token-0123456789abcdef';

let redis: RedisServer;
before(async () => { redis = await RedisServer.start(); });
after(async () => { await redis?.close(); });

function post(port: number, body: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, method: 'POST', path: '/login', headers: { host: `127.0.0.1:${port}`, origin: `http://127.0.0.1:${port}`, 'content-type': 'application/x-www-form-urlencoded' } }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
    });
    req.on('error', reject);
    req.end(body);
  });
}

test('attack-12: repeated wrong dashboard logins from one address are throttled', async () => {
  const port = await freePort();
  const dashboard = new MirrorplaneProcess(['dashboard', '--port', String(port)], { REDIS_URL: redis.url, MIRRORPLANE_PREFIX: 'a12-throttle', ADMIN_TOKEN: TOKEN });
  try {
    await dashboard.waitForLog('dashboard listening');
    const statuses = new Map<number, number>();
    for (let i = 0; i < 300; i++) {
      const s = await post(port, `token=guess-${String(i).padStart(16, '0')}`);
      statuses.set(s, (statuses.get(s) ?? 0) + 1);
    }
    // After 300 failures, the right token right away: a throttle would make it wait or refuse it.
    const next = await post(port, `token=${TOKEN}`);
    assert.ok((statuses.get(429) ?? 0) > 0 || next !== 303, `300 wrong guesses answered ${JSON.stringify([...statuses])}, then the right one ${next}: no throttle`);
  } finally {
    await dashboard.stop();
  }
});

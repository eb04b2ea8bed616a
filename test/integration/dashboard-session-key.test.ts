import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium, type BrowserContext } from 'playwright-core';
import { MirrorplaneProcess, RedisServer, freePort, useStack } from '../helpers/index.js';
import { CHROMIUM, CHROMIUM_ARGS } from '../helpers/dashboard.js';

/**
 * Cookies are scoped by host, not by port: once an operator logs in on 127.0.0.1:<dashboard>,
 * the browser sends the session cookie to every other service on 127.0.0.1 (a dev server, the
 * sample backend), and SameSite=Strict does not stop it (same site). Over http nothing can
 * keep the cookie from them, so the cookie alone is not enough: reading data and changing
 * anything also needs the session key, which the browser keeps in the dashboard origin's
 * localStorage (scoped by port). The other service replays what it received, with the Host
 * and Origin of the dashboard, and gets nothing; the operator's pages keep working. Real Chromium.
 */

const TOKEN = 'dashboard-token-0123456789abcdef';

let redis: RedisServer;
useStack({}, (s) => {
  redis = s.redis;
});

function get(port: number, path: string, cookie: string, method = 'GET'): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = request(
      {
        host: '127.0.0.1',
        port,
        path,
        method,
        headers: { host: `127.0.0.1:${port}`, origin: `http://127.0.0.1:${port}`, referer: `http://127.0.0.1:${port}/`, cookie },
      },
      (res) => {
        res.resume();
        resolve(res.statusCode ?? 0);
      },
    );
    req.on('error', reject);
    req.end();
  });
}

test('a dashboard session cookie received by another service on the same host opens nothing there', async () => {
  const port = await freePort();
  const dashboard = new MirrorplaneProcess(['dashboard', '--port', String(port)], {
    REDIS_URL: redis.url,
    MIRRORPLANE_PREFIX: 'a12-cookie',
    ADMIN_TOKEN: TOKEN,
  });
  let seenCookie = '';
  const other = createServer((req, res) => {
    seenCookie ||= req.headers.cookie ?? '';
    res.writeHead(200, { 'content-type': 'text/html' }).end('<h1>some local dev server</h1>');
  });
  await new Promise<void>((resolve) => other.listen(0, '127.0.0.1', resolve));
  const otherPort = (other.address() as { port: number }).port;
  const profile = mkdtempSync(join(tmpdir(), 'mp-dash-key-'));
  let context: BrowserContext | undefined;
  try {
    await dashboard.waitForLog('dashboard listening');
    context = await chromium.launchPersistentContext(profile, { executablePath: CHROMIUM, headless: true, args: [...CHROMIUM_ARGS] });
    const page = context.pages()[0] ?? (await context.newPage());
    await page.goto(`http://127.0.0.1:${port}/`);
    await page.waitForURL(/\/login$/);
    await page.fill('#token', TOKEN);
    await page.click('button[type=submit]');
    await page.waitForURL(`http://127.0.0.1:${port}/`);
    // The operator then opens another local service.
    await page.goto(`http://127.0.0.1:${otherPort}/`);
    const stolen = /mp_dashboard_session=[^;]+/.exec(seenCookie)?.[0] ?? '';
    // Over http the browser does send it (this is why the key exists); what it is worth there:
    assert.ok(stolen, `the other service received the cookie (${seenCookie.length} bytes of cookies)`);
    const replayed: Record<string, number> = {};
    for (const path of ['/api/status', '/queues/api/queues', '/queues/api/queues?activeQueue=retry&status=failed&page=1'])
      replayed[path] = await get(port, path, stolen);
    replayed['PUT retry failed'] = await get(port, '/queues/api/queues/retry/retry/failed', stolen, 'PUT');
    assert.deepEqual(Object.values(replayed), [401, 401, 401, 401], `the stolen cookie opened ${JSON.stringify(replayed)}`);
    // The operator's own pages still read the data: they add the key kept for this origin.
    await page.goto(`http://127.0.0.1:${port}/`);
    const statuses = await page.evaluate(async () => [(await fetch('/api/status')).status, (await fetch('/queues/api/queues')).status]);
    assert.deepEqual(
      statuses.map((s) => s === 200 || s === 503),
      [true, true],
      `the dashboard's page: ${statuses.join(', ')}`,
    );
  } finally {
    await context?.close();
    rmSync(profile, { recursive: true, force: true });
    await new Promise<void>((resolve) => other.close(() => resolve()));
    await dashboard.stop();
  }
});

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium, type BrowserContext } from 'playwright-core';
import { MirrorplaneProcess, RedisServer, freePort } from '../helpers/index.js';

/**
 * Attack on issue 12's dashboard session: cookies are scoped by host, not by port. Once an
 * operator logs in on 127.0.0.1:<dashboard>, the browser sends mp_dashboard_session to every
 * other service on 127.0.0.1 (a dev server, the sample backend, anything a local user runs),
 * and SameSite=Strict does not stop it (same site). That service reads the session id and
 * uses the dashboard with it. Real Chromium.
 */

const CHROMIUM = '/usr/bin/chromium';
const ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'];
const TOKEN = 'dashboard-token-0123456789abcdef';

let redis: RedisServer;
before(async () => { redis = await RedisServer.start(); });
after(async () => { await redis?.close(); });

function get(port: number, path: string, cookie: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path, headers: { host: `127.0.0.1:${port}`, cookie } }, (res) => { res.resume(); resolve(res.statusCode ?? 0); });
    req.on('error', reject);
    req.end();
  });
}

test('attack-12: the dashboard session cookie is not sent to other services on the same host', async () => {
  const port = await freePort();
  const dashboard = new MirrorplaneProcess(['dashboard', '--port', String(port)], { REDIS_URL: redis.url, MIRRORPLANE_PREFIX: 'a12-cookie', ADMIN_TOKEN: TOKEN });
  let seenCookie = '';
  const other = createServer((req, res) => { seenCookie ||= req.headers.cookie ?? ''; res.writeHead(200, { 'content-type': 'text/html' }).end('<h1>some local dev server</h1>'); });
  await new Promise<void>((resolve) => other.listen(0, '127.0.0.1', resolve));
  const otherPort = (other.address() as { port: number }).port;
  const profile = mkdtempSync(join(tmpdir(), 'mp-a12-cookie-'));
  let context: BrowserContext | undefined;
  try {
    await dashboard.waitForLog('dashboard listening');
    context = await chromium.launchPersistentContext(profile, { executablePath: CHROMIUM, headless: true, args: ARGS });
    const page = context.pages()[0] ?? await context.newPage();
    await page.goto(`http://127.0.0.1:${port}/`);
    await page.waitForURL(/\/login$/);
    await page.fill('#token', TOKEN);
    await page.click('button[type=submit]');
    await page.waitForURL(`http://127.0.0.1:${port}/`);
    // The operator then opens another local service.
    await page.goto(`http://127.0.0.1:${otherPort}/`);
    const stolen = /mp_dashboard_session=[^;]+/.exec(seenCookie)?.[0] ?? '';
    // What that service can do with what it received:
    const replayed = stolen ? await get(port, '/queues/api/queues', stolen) : 0;
    assert.equal(stolen, '', `another service on 127.0.0.1 received the dashboard session (${stolen.slice(0, 30)}…) and used it: GET /queues/api/queues -> ${replayed}`);
  } finally {
    await context?.close();
    rmSync(profile, { recursive: true, force: true });
    await new Promise<void>((resolve) => other.close(() => resolve()));
    await dashboard.stop();
  }
});

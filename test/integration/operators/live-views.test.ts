import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';
import { MirrorplaneProcess, RedisServer, freePort, waitFor, useStack } from '../../helpers/index.js';

const CHROMIUM = '/usr/bin/chromium';

// Live views recover by themselves after a Redis restart and say when their data is stale.

let redis: RedisServer;
useStack({}, (s) => {
  redis = s.redis;
});

test('status --watch survives a Redis restart: frames marked stale with the URL and cause meanwhile, live again after, no listener leak', async () => {
  const env = { REDIS_URL: redis.url, MIRRORPLANE_PREFIX: 'watched', REDIS_CONNECT_TIMEOUT_MS: '1000' };
  const client = redis.client();
  await client.xadd('{watched}:stream', '*', 'v', '1');
  client.disconnect();
  const json = new MirrorplaneProcess(['status', '--watch', '--json', '--interval', '0.1'], env);
  const human = new MirrorplaneProcess(['status', '--watch', '--interval', '0.1'], env);
  const frames = () =>
    json.stdout
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as { stale: boolean; error?: string; backlog?: number; lastGoodAt?: string | null });
  try {
    // More frames than the default listener limit (10): a listener per frame would warn.
    await waitFor('15 live frames', () => frames().filter((f) => !f.stale).length >= 15, 60_000);
    assert.equal(frames()[0]?.backlog, 1);
    await redis.stop();
    const stale = await waitFor('a stale frame', () => frames().find((f) => f.stale), 60_000);
    assert.equal(stale.error, `cannot reach Redis at ${redis.url}: connection lost`);
    assert.ok(stale.lastGoodAt && !Number.isNaN(Date.parse(stale.lastGoodAt)));
    await waitFor(
      'the human view to show STALE',
      () =>
        /STALE: cannot reach Redis at redis:\/\/127\.0\.0\.1:\d+: connection lost; showing the reading of \S+ \(\d+ (ms|s) old\); retrying\n\nmirrorplane status/.test(
          human.stdout,
        ),
      60_000,
    );
    await redis.start();
    const staleCount = frames().length;
    await waitFor(
      'a live frame after the restart',
      () =>
        frames()
          .slice(staleCount)
          .find((f) => !f.stale),
      60_000,
    );
    // Redis restarted without persistence: the stream is gone, and the view says so.
    assert.equal(
      frames()
        .slice(staleCount)
        .find((f) => !f.stale)?.backlog,
      0,
    );
    const humanLength = human.stdout.length;
    await waitFor(
      'a live human frame after the restart',
      () =>
        /^mirrorplane status {2}\d{4}-/m.test(human.stdout.slice(humanLength)) &&
        !/STALE/.test(human.stdout.slice(humanLength).split('mirrorplane status')[0] ?? 'STALE'),
      60_000,
    );
    assert.doesNotMatch(human.stdout, /Connection is closed/);
  } finally {
    await json.stop('SIGINT');
    await human.stop('SIGINT');
  }
  assert.equal(await json.exited, 0);
  assert.equal(json.stderr, '', 'no warning (MaxListenersExceededWarning) and no error output');
  assert.equal(human.stderr, '');
  assert.match(human.stdout, /^Redis redis:\/\/127\.0\.0\.1:\d+ {2}prefix watched$/m, 'the context line');
});

test('the dashboard marks its figures stale while Redis is away (503 and a banner in Chromium), and recovers', async () => {
  const port = await freePort();
  const dashboard = new MirrorplaneProcess(['dashboard', '--port', String(port)], {
    REDIS_URL: redis.url,
    MIRRORPLANE_PREFIX: 'dash-stale',
    REDIS_CONNECT_TIMEOUT_MS: '1000',
    LOG_LEVEL: 'error',
  });
  const profile = mkdtempSync(join(tmpdir(), 'mp-test-chromium-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  try {
    await waitFor('the dashboard to answer', async () => (await fetch(`http://127.0.0.1:${port}/api/status`)).status === 200, 60_000, 100);
    const page = await context.newPage();
    await page.goto(`http://127.0.0.1:${port}/`);
    await waitFor('live figures', async () => (await page.locator('[data-k="backlog"]').textContent()) === '0', 30_000, 100);
    assert.equal(await page.locator('#error').textContent(), '');
    await redis.stop();
    const stale = await waitFor(
      'a 503 with stale figures',
      async () => {
        const res = await fetch(`http://127.0.0.1:${port}/api/status`);
        const body = (await res.json()) as { stale?: boolean; error?: string; lastGoodAt?: string };
        return res.status === 503 && body.stale ? body : null;
      },
      60_000,
      100,
    );
    assert.match(
      stale.error ?? '',
      new RegExp(`^cannot (reach|read from) Redis at redis://127\\.0\\.0\\.1:${redis.port}: .*; the figures shown are from \\d{4}-`),
    );
    assert.ok(stale.lastGoodAt);
    await waitFor(
      'the banner in the browser',
      async () =>
        /^cannot read the status: cannot (reach|read from) Redis at .*the figures shown are from/.test((await page.locator('#error').textContent()) ?? ''),
      30_000,
      100,
    );
    await redis.start();
    await waitFor('live again', async () => (await fetch(`http://127.0.0.1:${port}/api/status`)).status === 200, 60_000, 100);
    await waitFor('the banner gone', async () => (await page.locator('#error').textContent()) === '', 30_000, 100);
  } finally {
    await context.close();
    rmSync(profile, { recursive: true, force: true });
    await dashboard.stop('SIGTERM');
  }
});

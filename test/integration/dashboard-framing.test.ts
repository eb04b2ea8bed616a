import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium, type BrowserContext } from 'playwright-core';
import { MirrorplaneProcess, RecordingServer, RedisServer, Stack, freePort, waitFor, useStack } from '../helpers/index.js';
import { CHROMIUM, CHROMIUM_ARGS } from '../helpers/dashboard.js';

/**
 * Every answer the dashboard gives, bull-board's pages and API under /queues included, carries
 * X-Frame-Options: DENY, CSP frame-ancestors 'none', nosniff, same-origin referrer and no-store. With the
 * default settings (loopback, no ADMIN_TOKEN) another site therefore cannot frame the bull-board
 * UI and clickjack its retry / clean buttons. Real Chromium, another site on 127.0.0.2.
 */

let redis: RedisServer;
useStack({}, (s) => {
  redis = s.redis;
});

test("another site cannot frame the dashboard's bull-board pages (clickjacking)", async () => {
  const staging = await RecordingServer.start((_req, res) => void res.writeHead(503).end());
  const stack = await Stack.start({ redis, stagingUrl: staging.url, env: { REPLAY_ATTEMPTS: '1' } });
  const port = await freePort();
  const dashboard = new MirrorplaneProcess(['dashboard', '--port', String(port)], stack.env);
  const target = `http://127.0.0.1:${port}/queues/queue/retry?status=failed`;
  const evil = createServer(
    (_req, res) =>
      void res
        .writeHead(200, { 'content-type': 'text/html' })
        .end(`<!doctype html><h1>win a prize</h1><iframe id="f" src="${target}" width="1200" height="800" style="opacity:0.05"></iframe>`),
  );
  await new Promise<void>((resolve) => evil.listen(0, '127.0.0.2', resolve));
  const evilPort = (evil.address() as { port: number }).port;
  const profile = mkdtempSync(join(tmpdir(), 'mp-dash-frame-'));
  let context: BrowserContext | undefined;
  try {
    assert.equal((await fetch(`http://127.0.0.1:${stack.ingressPort}/fail/framed`, { method: 'POST', body: 'x' })).status, 200);
    await waitFor('1 failed', async () => (await stack.status()).failed === 1);
    await dashboard.waitForLog('dashboard listening');
    const headers = (await fetch(target)).headers;
    const want = {
      'x-frame-options': 'DENY',
      'content-security-policy': "frame-ancestors 'none'",
      'x-content-type-options': 'nosniff',
      'referrer-policy': 'same-origin',
      'cache-control': 'no-store',
    };
    for (const path of [
      '/',
      '/api/status',
      '/login',
      '/nowhere',
      '/queues/queue/retry?status=failed',
      '/queues/api/queues?activeQueue=retry&status=failed&page=1',
      '/queues/api/queues/retry/none/flow',
      '/queues/nowhere',
    ]) {
      const h = (await fetch(`http://127.0.0.1:${port}${path}`, { redirect: 'manual' })).headers;
      const got = Object.fromEntries(Object.keys(want).map((k) => [k, h.get(k)]));
      assert.deepEqual(got, want, `security headers on ${path}`);
    }
    context = await chromium.launchPersistentContext(profile, { executablePath: CHROMIUM, headless: true, args: [...CHROMIUM_ARGS] });
    const page = context.pages()[0] ?? (await context.newPage());
    await page.goto(`http://127.0.0.2:${evilPort}/`);
    const frame = await (await page.waitForSelector('#f')).contentFrame();
    assert.ok(frame);
    // Wait for the frame's load, then decide: a frame the browser refused holds Chromium's
    // error page, so the test need not wait out a deadline to see that nothing shows. Only a
    // frame that loaded the dashboard is given time to show the failed job.
    await frame.waitForLoadState('load', { timeout: 30_000 }).catch(() => undefined);
    const refused = frame.url().startsWith('chrome-error:');
    const framed =
      !refused &&
      (await frame
        .getByText(/\/fail\/framed/)
        .first()
        .waitFor({ timeout: 20_000 })
        .then(
          () => true,
          () => false,
        ));
    // What a clickjacked operator's click does inside the invisible frame: bull-board's Retry.
    let retriedFromFrame = false;
    if (framed) {
      const actions = frame.locator('[data-base-ui-tooltip-trigger] > button');
      const before = staging.received.length;
      for (let i = 0; i < (await actions.count()) && !retriedFromFrame; i++) {
        await actions
          .nth(i)
          .click({ force: true, timeout: 5_000 })
          .catch(() => undefined);
        await frame
          .getByRole('button', { name: /^(confirm|yes|ok|retry)$/i })
          .last()
          .click({ force: true, timeout: 2_000 })
          .catch(() => undefined);
        retriedFromFrame = await waitFor('a retry from the frame', () => staging.received.length > before, 5_000).then(
          () => true,
          () => false,
        );
      }
    }
    assert.deepEqual(
      { framed, retriedFromFrame },
      { framed: false, retriedFromFrame: false },
      `another site framed the bull-board UI with its jobs and action buttons (x-frame-options: ${headers.get('x-frame-options')}, content-security-policy: ${headers.get('content-security-policy')})`,
    );
  } finally {
    await context?.close();
    rmSync(profile, { recursive: true, force: true });
    await new Promise<void>((resolve) => evil.close(() => resolve()));
    await dashboard.stop();
    await stack.close();
    await staging.close();
  }
});

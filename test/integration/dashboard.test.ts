import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium, type BrowserContext, type Locator } from 'playwright-core';
import { MirrorplaneProcess, RecordingServer, RedisServer, Stack, freePort, header, waitFor, useStack } from '../helpers/index.js';
import { CHROMIUM, CHROMIUM_ARGS } from '../helpers/dashboard.js';

const TOKEN = 'browser-dashboard-token-0123456789';
const SECRET = 'SECRET-BROWSER-c0ffee';

let redis: RedisServer;
useStack({}, (s) => {
  redis = s.redis;
});

test('the dashboard binds loopback and refuses other Host names', async () => {
  const port = await freePort();
  const dashboard = new MirrorplaneProcess(['dashboard', '--port', String(port)], { REDIS_URL: redis.url, MIRRORPLANE_PREFIX: 'tdash-host' });
  try {
    const listening = await dashboard.waitForLog('dashboard listening');
    assert.equal(listening.url, `http://127.0.0.1:${port}/`);
    const ok = await fetch(`http://127.0.0.1:${port}/api/status`);
    assert.equal(ok.status, 200);
    const page = await (await fetch(`http://localhost:${port}/`)).text();
    assert.match(page, /<title>Mirrorplane<\/title>/);
    // A page on another site that resolves its own name to 127.0.0.1 (DNS rebinding) gets nothing.
    const { status } = await new Promise<{ status: number }>((resolve, reject) => {
      import('node:http').then(({ request }) => {
        request({ host: '127.0.0.1', port, path: '/queues/api/queues', headers: { host: `evil.example:${port}` } }, (res) => {
          res.resume();
          resolve({ status: res.statusCode ?? 0 });
        })
          .on('error', reject)
          .end();
      }, reject);
    });
    assert.equal(status, 421);
    const bad = new MirrorplaneProcess(['dashboard', '--port', 'x'], { REDIS_URL: redis.url });
    assert.equal(await bad.exited, 2);
    assert.match(bad.stderr, /--port: expected an integer/);
  } finally {
    await dashboard.stop();
  }
});

// Outside CI a machine without Chromium skips this one test (and says why); in CI (.ci/run
// installs chromium) a missing browser fails it rather than letting a skip pass for a pass.
test(
  'in a browser: a login first, then the counts; job data redacted; a failed job is retried from the dashboard; --read-only shows no action',
  { skip: existsSync(CHROMIUM) || process.env.CI ? false : `${CHROMIUM} is not installed (apt-get install chromium)` },
  async () => {
    let failing = true;
    const staging = await RecordingServer.start((req, res) => void res.writeHead(failing && req.url.startsWith('/fail') ? 503 : 200).end());
    const stack = await Stack.start({ redis, stagingUrl: staging.url, env: { REPLAY_ATTEMPTS: '1' } });
    const port = await freePort();
    let dashboard: MirrorplaneProcess | undefined;
    let readOnly: MirrorplaneProcess | undefined;
    const readOnlyPort = await freePort();
    let context: BrowserContext | undefined;
    const profile = mkdtempSync(join(tmpdir(), 'mp-test-chromium-'));
    try {
      for (const path of ['/ok/1', '/ok/2', '/ok/3', '/fail/a', '/fail/b']) {
        assert.equal(
          (
            await fetch(`http://127.0.0.1:${stack.ingressPort}${path}?access_token=${SECRET}`, {
              method: 'POST',
              body: path,
              headers: { 'x-request-id': path, 'x-api-key': SECRET },
            })
          ).status,
          200,
        );
      }
      await waitFor('3 replayed and 2 failed', async () => {
        const s = await stack.status();
        return s.replayed === 3 && s.failed === 2 && s.backlog === 0 && s.pending === 0;
      });

      dashboard = new MirrorplaneProcess(['dashboard', '--port', String(port)], { ...stack.env, ADMIN_TOKEN: TOKEN });
      await dashboard.waitForLog('dashboard listening');
      context = await chromium.launchPersistentContext(profile, { executablePath: CHROMIUM, headless: true, args: [...CHROMIUM_ARGS] });
      const page = context.pages()[0] ?? (await context.newPage());
      page.on('dialog', (dialog) => void dialog.accept());

      // No session: the browser is sent to the login form; a wrong token is refused there.
      await page.goto(`http://127.0.0.1:${port}/`);
      await page.waitForURL(/\/login$/);
      await page.fill('#token', 'not-the-token-0000000000');
      await page.click('button[type=submit]');
      assert.match((await page.locator('#login-error').textContent()) ?? '', /not the token/);
      await page.fill('#token', TOKEN);
      await page.click('button[type=submit]');
      await page.waitForURL(`http://127.0.0.1:${port}/`);
      const cookies = await context.cookies();
      const session = cookies.find((c) => c.name === 'mp_dashboard_session');
      assert.ok(session?.httpOnly && session.sameSite === 'Strict', 'an HttpOnly, SameSite=Strict session cookie');
      const value = (k: string) => page.locator(`.v[data-k="${k}"]`).first();
      await waitFor(
        'the counts on the page',
        async () => (await value('replayed').textContent()) === '3' && (await value('failed').textContent()) === '2',
        30_000,
        200,
      );
      assert.equal(await value('backlog').textContent(), '0');
      assert.equal(await value('pending').textContent(), '0');
      assert.equal(await page.locator('[data-k="consumerCount"]').textContent(), '1');
      assert.equal(await page.locator('#consumers tr').count(), 1);
      assert.match((await page.locator('#consumers td').nth(1).textContent()) ?? '', /^0$/);
      assert.equal(await value('drain').textContent(), 'empty');

      // Staging is fixed; one failed job is retried from bull-board.
      failing = false;
      await page.click('a#queues');
      await page.waitForURL(/\/queues\/queue\/retry/);
      // bull-board's job actions are icon buttons named by a tooltip: find the one that says Retry.
      const actions = page.locator('[data-base-ui-tooltip-trigger] > button');
      await actions.first().waitFor({ timeout: 30_000 });
      // What bull-board shows of a job (its name, its data) is redacted.
      await page
        .getByText(/\/fail\/[ab]/)
        .first()
        .waitFor({ timeout: 30_000 });
      const shown = await page.content();
      assert.ok(!shown.includes(SECRET), 'no secret on the failed jobs page');
      assert.match(shown, /access_token=\[redacted\]/);
      let retry: Locator | null = null;
      for (let i = 0; i < (await actions.count()) && !retry; i++) {
        await actions.nth(i).hover();
        const tip = page.locator('[data-base-ui-portal] [data-open]').filter({ hasText: /^\s*retry\s*$/i });
        if (
          await tip
            .first()
            .waitFor({ timeout: 1_000 })
            .then(
              () => true,
              () => false,
            )
        )
          retry = actions.nth(i);
      }
      assert.ok(retry, `a Retry action on the failed jobs (tooltips: ${await page.locator('[data-base-ui-portal] [data-open]').allTextContents()})`);
      const before = staging.received.length;
      await retry.click();
      const confirm = page.getByRole('button', { name: /^(confirm|yes|ok|retry)$/i }).last();
      await confirm.click({ timeout: 5_000 }).catch(() => undefined);
      await waitFor('staging to receive the retried job', () => staging.received.length > before, 30_000);
      const again = staging.received.slice(before);
      assert.equal(again.length, 1, 'one job retried');
      // Staging receives every secret byte for byte: redaction is for people and files only.
      assert.equal(again[0]!.url, `${again[0]!.url.split('?')[0]}?access_token=${SECRET}`);
      const path = again[0]!.url.split('?')[0] as string;
      assert.match(path, /^\/fail\/[ab]$/);
      assert.equal(again[0]!.body.toString(), path, 'the body as mirrored');
      assert.equal(header(again[0]!.rawHeaders, 'x-request-id'), path);
      assert.equal(header(again[0]!.rawHeaders, 'x-api-key'), SECRET);
      await waitFor('the failed set to shrink to 1', async () => {
        const s = await stack.status();
        return s.failed === 1 && s.replayed === 4 && s.retrying === 0;
      });
      await page.goto(`http://127.0.0.1:${port}/`);
      await waitFor(
        'the page to follow',
        async () => (await value('replayed').textContent()) === '4' && (await value('failed').textContent()) === '1',
        30_000,
        200,
      );

      // --read-only: the same jobs, and not one action button.
      readOnly = new MirrorplaneProcess(['dashboard', '--port', String(readOnlyPort), '--read-only'], stack.env);
      await readOnly.waitForLog('dashboard listening');
      await page.goto(`http://127.0.0.1:${readOnlyPort}/queues/queue/retry?status=failed`);
      await page
        .getByText(/\/fail\/[ab]/)
        .first()
        .waitFor({ timeout: 30_000 });
      assert.equal(await page.locator('[data-base-ui-tooltip-trigger] > button').count(), 0, 'no retry/remove buttons in read-only mode');
      assert.ok(!(await page.content()).includes(SECRET));
    } finally {
      await readOnly?.stop();
      await context?.close();
      rmSync(profile, { recursive: true, force: true });
      await dashboard?.stop();
      await stack.close();
      await staging.close();
    }
  },
);

test(
  "in a browser: a page on another site cannot use an operator's session to change or read anything",
  { skip: existsSync(CHROMIUM) || process.env.CI ? false : `${CHROMIUM} is not installed (apt-get install chromium)` },
  async () => {
    const staging = await RecordingServer.start((_req, res) => void res.writeHead(503).end());
    const stack = await Stack.start({ redis, stagingUrl: staging.url, env: { REPLAY_ATTEMPTS: '1' } });
    const port = await freePort();
    const dashboardUrl = `http://127.0.0.1:${port}`;
    // Another site: 127.0.0.2 is a different site from 127.0.0.1 for the browser.
    const evilPage = `<!doctype html><html><body><form id="f" method="post" action="${dashboardUrl}/queues/api/queues/retry/clean/failed"></form><script>
window.results = {};
(async () => {
  for (const [name, url, method] of [['clean', '/queues/api/queues/retry/clean/failed', 'PUT'], ['retry', '/queues/api/queues/retry/retry/failed', 'PUT'], ['read', '/queues/api/queues?activeQueue=retry&status=failed', 'GET'], ['status', '/api/status', 'GET']]) {
    try {
      const r = await fetch('${dashboardUrl}' + url, { method, credentials: 'include', mode: 'no-cors' });
      window.results[name] = 'sent:' + r.type;
    } catch (e) {
      window.results[name] = 'blocked';
    }
  }
  window.results.done = true;
})();
</script></body></html>`;
    const { createServer } = await import('node:http');
    const evil = createServer((_req, res) => void res.writeHead(200, { 'content-type': 'text/html' }).end(evilPage));
    await new Promise<void>((resolve) => evil.listen(0, '127.0.0.2', resolve));
    const evilPort = (evil.address() as { port: number }).port;
    let dashboard: MirrorplaneProcess | undefined;
    let context: BrowserContext | undefined;
    const profile = mkdtempSync(join(tmpdir(), 'mp-test-chromium-'));
    try {
      for (const path of ['/fail/a', '/fail/b'])
        assert.equal((await fetch(`http://127.0.0.1:${stack.ingressPort}${path}`, { method: 'POST', body: path })).status, 200);
      await waitFor('2 failed', async () => (await stack.status()).failed === 2);
      dashboard = new MirrorplaneProcess(['dashboard', '--port', String(port)], { ...stack.env, ADMIN_TOKEN: TOKEN });
      await dashboard.waitForLog('dashboard listening');
      context = await chromium.launchPersistentContext(profile, { executablePath: CHROMIUM, headless: true, args: [...CHROMIUM_ARGS] });
      const page = context.pages()[0] ?? (await context.newPage());
      // The operator logs in.
      await page.goto(`${dashboardUrl}/`);
      await page.fill('#token', TOKEN);
      await page.click('button[type=submit]');
      await page.waitForURL(`${dashboardUrl}/`);
      // Then opens a page on another site, in the same browser.
      const other = await context.newPage();
      await other.goto(`http://127.0.0.2:${evilPort}/`);
      await waitFor("the other site's script to finish", () => other.evaluate('window.results && window.results.done === true'), 30_000, 100);
      // A form posted across sites: the browser leaves the SameSite=Strict cookie behind.
      await Promise.all([other.waitForURL(/\/clean\/failed$/), other.evaluate("document.getElementById('f').submit()")]);
      await other.waitForLoadState();
      assert.match(await other.content(), /unauthenticated/);
      // A link followed from the other site to the dashboard lands on the login form, not the data.
      await other.goto(`http://127.0.0.2:${evilPort}/`);
      await other.evaluate(
        `(() => { const a = document.createElement('a'); a.href = ${JSON.stringify(`${dashboardUrl}/queues/queue/retry?status=failed`)}; a.id = 'go'; a.textContent = 'see the failed jobs'; document.body.appendChild(a); })()`,
      );
      await Promise.all([other.waitForURL(/\/login$/), other.click('#go')]);

      const s = await stack.status();
      assert.equal(s.failed, 2, 'nothing was cleaned or retried');
      assert.equal(s.retrying, 0);
      const refused = dashboard.logs().filter((l) => l.msg === 'dashboard request refused');
      assert.ok(refused.length >= 3, `the cross-site attempts were refused and logged: ${JSON.stringify(refused)}`);
      assert.ok(!dashboard.logs().some((l) => l.msg === 'dashboard change'), 'no change was made');
      // The operator's own tab still works.
      assert.equal(await page.evaluate(async () => (await fetch('api/status')).status), 200);
    } finally {
      await context?.close();
      rmSync(profile, { recursive: true, force: true });
      await new Promise((resolve) => evil.close(resolve));
      await dashboard?.stop();
      await stack.close();
      await staging.close();
    }
  },
);

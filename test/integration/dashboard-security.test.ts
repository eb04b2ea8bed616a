import { test } from 'node:test';
import assert from 'node:assert/strict';
import { MirrorplaneProcess, RecordingServer, RedisServer, Stack, freePort, waitFor, useStack } from '../helpers/index.js';
import { DashboardSessions } from '../helpers/dashboard.js';

/**
 * The dashboard attacked over raw HTTP, as issue 12 did: no credentials, a wrong Host, a
 * cross-site change, deleting accepted entries still waiting for a retry, read-only mode.
 */

const TOKEN = 'dashboard-token-0123456789abcdef';
// Secrets carried by the stored jobs; none may come back from the dashboard.
const SECRET_AUTH = 'Bearer SECRET-AUTH-7f3a';
const SECRET_KEY = 'SECRET-APIKEY-91bc';
const SECRET_QUERY = 'SECRET-QUERY-2d4e';
const SECRET_BODY = 'SECRET-BODY-55aa';

let redis: RedisServer;
useStack({}, (s) => {
  redis = s.redis;
});

const sessions = new DashboardSessions();
const call = sessions.call.bind(sessions);
const login = (port: number) => sessions.login(port, TOKEN);

/** A stack with 2 jobs in the failed set and 2 accepted entries waiting (delayed) for a retry. */
async function failedAndDelayed(staging: RecordingServer): Promise<Stack> {
  const stack = await Stack.start({ redis, stagingUrl: staging.url, workers: 0, env: { REPLAY_ATTEMPTS: '1' } });
  const first = await stack.addWorker();
  const send = (path: string) =>
    fetch(`http://127.0.0.1:${stack.ingressPort}${path}?token=${SECRET_QUERY}&page=2`, {
      method: 'POST',
      body: `{"card":"${SECRET_BODY}"}`,
      headers: { authorization: SECRET_AUTH, 'x-api-key': SECRET_KEY },
    });
  for (const p of ['/fail/a', '/fail/b']) assert.equal((await send(p)).status, 200);
  await waitFor('2 failed', async () => (await stack.status()).failed === 2);
  await first.stop();
  await stack.addWorker({ REPLAY_ATTEMPTS: '5', REPLAY_BACKOFF_MS: '3600000' });
  for (const p of ['/wait/a', '/wait/b']) assert.equal((await send(p)).status, 200);
  await waitFor('2 retrying', async () => {
    const s = await stack.status();
    return s.retrying === 2 && s.backlog === 0 && s.pending === 0;
  });
  return stack;
}

test('the dashboard beyond loopback: refuses to start without ADMIN_TOKEN; with it, a login and a Host check', async () => {
  const port = await freePort();
  const open = new MirrorplaneProcess(['dashboard', '--host', '0.0.0.0', '--port', String(port)], { REDIS_URL: redis.url, MIRRORPLANE_PREFIX: 'tdsec-bind' });
  assert.equal(await open.exited, 2);
  assert.match(open.stderr, /ADMIN_TOKEN: required when the dashboard binds "0\.0\.0\.0", which is not a loopback address/);

  const guarded = new MirrorplaneProcess(['dashboard', '--host', '0.0.0.0', '--port', String(port), '--allowed-host', 'mp.internal'], {
    REDIS_URL: redis.url,
    MIRRORPLANE_PREFIX: 'tdsec-bind',
    ADMIN_TOKEN: TOKEN,
  });
  try {
    const up = await guarded.waitForLog('dashboard listening');
    assert.equal(up.login, true);
    // A DNS name nobody listed (DNS rebinding) is refused before anything else.
    assert.equal((await call(port, 'GET', '/api/status', { host: `evil.example:${port}`, authorization: `Bearer ${TOKEN}` })).status, 421);
    // An IP literal or a listed name is served, to who holds the token only.
    assert.equal((await call(port, 'GET', '/api/status')).status, 401);
    assert.equal((await call(port, 'GET', '/api/status', { host: 'mp.internal' })).status, 401);
    assert.equal((await call(port, 'GET', '/api/status', { host: 'mp.internal', authorization: `Bearer ${TOKEN}` })).status, 200);
    assert.equal((await call(port, 'GET', '/api/status', { authorization: 'Bearer not-the-token-at-all-0000' })).status, 401);
    assert.ok(!guarded.stdout.includes(TOKEN), 'the token is never logged');
  } finally {
    await guarded.stop();
  }
});

test('attacks on the dashboard: no credentials 401, wrong Host 421, cross-site changes 403, unfinished entries cannot be deleted, job data redacted', async () => {
  const staging = await RecordingServer.start((_req, res) => void res.writeHead(503).end());
  const stack = await failedAndDelayed(staging);
  const port = await freePort();
  const dashboard = new MirrorplaneProcess(['dashboard', '--port', String(port)], { ...stack.env, ADMIN_TOKEN: TOKEN });
  try {
    await dashboard.waitForLog('dashboard listening');
    const origin = `http://127.0.0.1:${port}`;
    const every = [
      '/',
      '/api/status',
      '/queues',
      '/queues/api/queues',
      '/queues/api/queues?activeQueue=retry&status=failed&page=1',
      '/queues/api/queues/retry/1',
    ];
    // No credentials: nothing is served (a browser is sent to the login form).
    for (const path of every) {
      assert.equal((await call(port, 'GET', path)).status, 401, path);
      const nav = await call(port, 'GET', path, { accept: 'text/html' });
      assert.equal(nav.status, 303, path);
      assert.equal(nav.headers.location, '/login');
    }
    for (const path of [
      '/queues/api/queues/retry/clean/delayed',
      '/queues/api/queues/retry/clean/failed',
      '/queues/api/queues/retry/retry/failed',
      '/queues/api/queues/retry/empty',
    ]) {
      assert.equal((await call(port, 'PUT', path, { origin })).status, 401, path);
    }
    // The login: a wrong token, or a form posted from another site, gets no session.
    assert.equal((await call(port, 'POST', '/login', { origin, 'content-type': 'application/x-www-form-urlencoded' }, 'token=wrong')).status, 401);
    assert.equal(
      (await call(port, 'POST', '/login', { origin: 'http://evil.example', 'content-type': 'application/x-www-form-urlencoded' }, `token=${TOKEN}`)).status,
      403,
    );
    const cookie = await login(port);
    const authed = { cookie };
    for (const path of every.slice(0, -1)) assert.equal((await call(port, 'GET', path, authed)).status, 200, path);
    // The cookie alone (what any other service on this host name receives) reads no data and changes nothing.
    for (const path of ['/api/status', '/queues/api/queues', '/queues/API/queues', '/queues/api/queues/retry/1']) {
      assert.equal((await call(port, 'GET', path, { cookie, 'x-mirrorplane-session-key': '' })).status, 401, path);
    }
    assert.equal(
      (await call(port, 'PUT', '/queues/api/queues/retry/retry/failed', { cookie, origin, 'x-mirrorplane-session-key': 'x'.repeat(43) })).status,
      401,
    );
    // A wrong Host with a valid session: DNS rebinding gets nothing.
    assert.equal((await call(port, 'GET', '/queues/api/queues', { ...authed, host: `evil.example:${port}` })).status, 421);

    // Job data is shown redacted: no secret header, query value or body.
    for (const status of ['failed', 'delayed']) {
      const page = await call(port, 'GET', `/queues/api/queues?activeQueue=retry&status=${status}&page=1`, authed);
      assert.equal(page.status, 200);
      assert.match(page.body, /\[redacted\]/, status);
      assert.match(page.body, /page=2/, 'what is not secret is shown');
      for (const secret of [SECRET_AUTH, 'SECRET-AUTH', SECRET_KEY, SECRET_QUERY, SECRET_BODY, Buffer.from(`{"card":"${SECRET_BODY}"}`).toString('base64')]) {
        assert.ok(!page.body.includes(secret), `${status} jobs show ${secret}`);
      }
    }

    // Cross-site changes: another Origin, or none, with the cookie are refused.
    for (const headers of [
      { ...authed, origin: 'http://evil.example' },
      { ...authed, origin: 'null' },
      authed,
      { ...authed, referer: 'http://evil.example/page' },
    ]) {
      const res = await call(port, 'PUT', '/queues/api/queues/retry/retry/failed', headers);
      assert.equal(res.status, 403);
      assert.equal(res.headers['x-mirrorplane-refused'], 'cross_site');
    }
    // Entries accepted and still waiting for a retry cannot be deleted from the dashboard.
    const delayed = JSON.parse((await call(port, 'GET', '/queues/api/queues?activeQueue=retry&status=delayed&page=1', authed)).body) as {
      queues: { name: string; jobs: { id: string }[] }[];
    };
    const delayedIds = delayed.queues.find((q) => q.name === 'retry')?.jobs.map((j) => j.id) ?? [];
    assert.equal(delayedIds.length, 2);
    const one = await call(port, 'GET', `/queues/api/queues/retry/${encodeURIComponent(delayedIds[0] as string)}`, authed);
    assert.equal(one.status, 200, one.body);
    for (const secret of [SECRET_AUTH, SECRET_KEY, SECRET_QUERY, SECRET_BODY]) assert.ok(!one.body.includes(secret), `one job shows ${secret}`);
    const same = { ...authed, origin };
    for (const path of [
      '/queues/api/queues/retry/clean/delayed',
      '/queues/api/queues/retry/clean/wait',
      '/queues/api/queues/retry/clean/paused',
      '/queues/api/queues/retry/empty',
      '/queues/api/queues/retry/obliterate',
      `/queues/api/queues/retry/${encodeURIComponent(delayedIds[0] as string)}/clean`,
      '/queues/api/queues/retry/add',
      '/queues/api/queues/pause',
    ]) {
      const res = await call(port, 'PUT', path, same, '{}');
      assert.equal(res.status, 403, `${path}: ${res.body}`);
    }
    for (const path of [
      `/queues/api/queues/retry/${encodeURIComponent(delayedIds[0] as string)}/update-data`,
      `/queues/api/queues/retry/${encodeURIComponent(delayedIds[0] as string)}/delay`,
    ]) {
      assert.equal((await call(port, 'PATCH', path, same, '{}')).status, 403, path);
    }
    const s = await stack.status();
    assert.equal(s.retrying, 2, 'the waiting entries are all still there');
    assert.equal(s.failed, 2);

    // The same origin, logged in: retrying the failed set is allowed, and logged.
    const sentBefore = staging.received.length;
    const retry = await call(port, 'PUT', '/queues/api/queues/retry/retry/failed', same);
    assert.equal(retry.status, 200, retry.body);
    const change = await dashboard.waitForLog('dashboard change');
    assert.equal(change.action, 'retry-all-failed');
    await waitFor('the 2 failed jobs replayed again', () => staging.received.slice(sentBefore).filter((r) => r.url.startsWith('/fail/')).length >= 2);
    // A bearer token (a script) needs no Origin.
    assert.equal((await call(port, 'GET', '/api/status', { authorization: `Bearer ${TOKEN}` })).status, 200);

    // Logging out ends the session.
    assert.equal((await call(port, 'POST', '/logout', same)).status, 303);
    assert.equal((await call(port, 'GET', '/api/status', authed)).status, 401);
    assert.ok(!dashboard.stdout.includes(TOKEN) && !dashboard.stdout.includes(cookie.split('=')[1] as string), 'neither token nor session is logged');
  } finally {
    await dashboard.stop();
    await stack.close();
    await staging.close();
  }
});

test('--read-only: every change is refused, whoever asks', async () => {
  const staging = await RecordingServer.start((_req, res) => void res.writeHead(503).end());
  const stack = await Stack.start({ redis, stagingUrl: staging.url, env: { REPLAY_ATTEMPTS: '1' } });
  const port = await freePort();
  const dashboard = new MirrorplaneProcess(['dashboard', '--port', String(port), '--read-only'], { ...stack.env, ADMIN_TOKEN: TOKEN });
  try {
    assert.equal((await fetch(`http://127.0.0.1:${stack.ingressPort}/x`, { method: 'POST', body: 'x' })).status, 200);
    await waitFor('1 failed', async () => (await stack.status()).failed === 1);
    const up = await dashboard.waitForLog('dashboard listening');
    assert.equal(up.readOnly, true);
    const cookie = await login(port);
    const origin = `http://127.0.0.1:${port}`;
    const queues = JSON.parse((await call(port, 'GET', '/queues/api/queues?activeQueue=retry&status=failed&page=1', { cookie })).body) as {
      queues: { name: string; readOnlyMode: boolean; allowRetries: boolean; jobs: { id: string }[] }[];
    };
    const q = queues.queues.find((x) => x.name === 'retry');
    assert.equal(q?.readOnlyMode, true, 'bull-board hides its buttons');
    assert.equal(q?.allowRetries, false);
    const id = q?.jobs[0]?.id;
    assert.ok(id);
    for (const headers of [{ cookie, origin }, { authorization: `Bearer ${TOKEN}` }] as Record<string, string>[]) {
      for (const path of [
        '/queues/api/queues/retry/retry/failed',
        `/queues/api/queues/retry/${id}/retry`,
        `/queues/api/queues/retry/${id}/clean`,
        '/queues/api/queues/retry/clean/failed',
      ]) {
        const res = await call(port, 'PUT', path, headers);
        assert.equal(res.status, 403, path);
        assert.equal(res.headers['x-mirrorplane-refused'], 'read_only');
      }
    }
    assert.equal((await stack.status()).failed, 1);
  } finally {
    await dashboard.stop();
    await stack.close();
    await staging.close();
  }
});

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { MirrorplaneProcess, RecordingServer, RedisServer, Stack, freePort, waitFor, useStack } from '../helpers/index.js';
import { DashboardSessions } from '../helpers/dashboard.js';

/**
 * Job data is redacted on every bull-board route, not only the job list: the dashboard
 * redacts every JSON answer bull-board writes (job view, flow view, logs, schedulers, and any
 * route a later version adds), so a secret query value in a failed job's name or target is
 * shown on none of them.
 */

const TOKEN = 'dashboard-token-0123456789abcdef';
const SECRET_QUERY = 'SECRETQUERYMARKER77';

let redis: RedisServer;
useStack({}, (s) => {
  redis = s.redis;
});

const sessions = new DashboardSessions();
const call = sessions.call.bind(sessions);

test("no bull-board GET route shows a failed job's secret query value (flow view included)", async () => {
  const staging = await RecordingServer.start((_req, res) => void res.writeHead(503).end());
  const stack = await Stack.start({ redis, stagingUrl: staging.url, env: { REPLAY_ATTEMPTS: '1' } });
  const port = await freePort();
  const dashboard = new MirrorplaneProcess(['dashboard', '--port', String(port)], { ...stack.env, ADMIN_TOKEN: TOKEN });
  try {
    assert.equal((await fetch(`http://127.0.0.1:${stack.ingressPort}/orders?token=${SECRET_QUERY}&page=2`, { method: 'POST', body: 'x' })).status, 200);
    await waitFor('1 failed', async () => (await stack.status()).failed === 1);
    await dashboard.waitForLog('dashboard listening');
    const auth = { authorization: `Bearer ${TOKEN}` };
    const list = await call(port, 'GET', '/queues/api/queues?activeQueue=retry&status=failed&page=1', auth);
    assert.equal(list.status, 200, list.body);
    assert.ok(!list.body.includes(SECRET_QUERY), 'the job list is redacted (the fix holds here)');
    const id = (JSON.parse(list.body) as { queues: { name: string; jobs: { id: string }[] }[] }).queues.find((q) => q.name === 'retry')?.jobs[0]?.id;
    assert.ok(id, 'one failed job listed');
    const leaks: string[] = [];
    for (const path of [
      `/queues/api/queues/retry/${id}`,
      `/queues/api/queues/retry/${id}/flow?root=node&depth=1&maxChildren=10`,
      `/queues/api/queues/retry/${id}/flow`,
      `/queues/api/queues/retry/${id}/logs`,
      '/queues/api/job-schedulers',
      '/queues/api/queues/retry/default-job-options',
      '/queues/api/queues/retry/workers',
    ]) {
      const res = await call(port, 'GET', path, auth);
      if (res.body.includes(SECRET_QUERY)) leaks.push(`${path} (${res.status}): ${res.body.slice(0, 300)}`);
    }
    assert.deepEqual(leaks, [], 'a bull-board route shows the secret in clear');
  } finally {
    await dashboard.stop();
    await stack.close();
    await staging.close();
  }
});

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { MirrorplaneProcess, RecordingServer, RedisServer, Stack, freePort, waitFor } from '../../helpers/index.js';

// Issue 15, item 6: "nobody can tell from [status or the dashboard] whether any
// worker is running". The heartbeats exist (status --json has `workers`); the human views
// an operator reads at 3 a.m. do not show them.

let redis: RedisServer;
let staging: RecordingServer;
let stack: Stack;

before(async () => {
  redis = await RedisServer.start();
  staging = await RecordingServer.start();
  stack = await Stack.start({ redis, stagingUrl: staging.url, env: { HEARTBEAT_MS: '500' } });
  const res = await fetch(`http://127.0.0.1:${stack.ingressPort}/w`, { method: 'POST', body: 'x' });
  assert.equal(res.status, 200);
  await waitFor('the entry replayed', () => staging.received.length === 1, 60_000);
});

after(async () => {
  await stack?.close();
  await staging?.close();
  await redis?.close();
});

test('human `status` shows the running worker by its heartbeat (a workers section with last seen), not only a consumer idle for minutes', async () => {
  const worker = stack.workers[0]!;
  const alive = await stack.cli(['status']);
  assert.equal(alive.code, 0, alive.stderr);
  // The consumer name holds the pid already; what is missing is the heartbeat: live workers, last seen.
  assert.match(
    alive.stdout,
    /^workers? \(1\)|LAST SEEN|last seen/im,
    `human status shows no heartbeat of the running worker (pid ${worker.child.pid}):\n${alive.stdout}`,
  );
});

test('the dashboard /api/status lists live workers by heartbeat', async () => {
  const pid = String(stack.workers[0]!.child.pid);
  const port = await freePort();
  const dashboard = new MirrorplaneProcess(['dashboard', '--port', String(port), '--read-only'], { ...stack.env });
  try {
    await dashboard.waitForLog('dashboard listening', 60_000);
    const body = (await (await fetch(`http://127.0.0.1:${port}/api/status`)).json()) as { workers?: { pid: number }[] };
    assert.ok(
      Array.isArray(body.workers) && body.workers.some((w) => String(w.pid) === pid),
      `the dashboard's /api/status has no live workers: ${JSON.stringify(body)}`,
    );
  } finally {
    await dashboard.stop('SIGTERM');
  }
});

test('once every worker is dead, human `status` says no worker is running', async () => {
  await stack.workers[0]!.stop('SIGKILL');
  // The heartbeat expires after 3 periods; then no worker is alive.
  await waitFor(
    'the heartbeat to expire',
    async () => {
      const r = await stack.cli(['status', '--json']);
      return (JSON.parse(r.stdout) as { workers: unknown[] }).workers.length === 0;
    },
    30_000,
    250,
  );
  const dead = await stack.cli(['status']);
  assert.equal(dead.code, 0, dead.stderr);
  assert.match(
    dead.stdout,
    /no (live )?workers?|workers? \(0\)|not running|no heartbeat/i,
    `human status with every worker dead reads like one with a worker running:\n${dead.stdout}`,
  );
});

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { RecordingServer, RedisServer, Stack, freePort, waitFor, useStack } from '../helpers/index.js';

// Hostile pass on issue 11, fault 4's kind (a hung Redis looks healthy), on the worker. The admin
// server documents /readyz as "it can do its job"; the fix made the ingress's /readyz follow a
// PING deadline, but the worker's readiness is only "both connections have status ready": a
// paused Redis keeps its TCP connections open, so the worker stays ready while it can neither
// read, acknowledge nor claim. An orchestrator routing on it (docs/TOPOLOGY.md probes each
// worker's /readyz) never learns anything is wrong.

let redis: RedisServer;

useStack({}, (s) => {
  redis = s.redis;
  s.defer(() => s.redis.signal('SIGCONT'));
});

async function readyz(port: number): Promise<number> {
  const ac = new AbortController();
  const timer = setTimeout(() => ac.abort(), 1000);
  try {
    return (await fetch(`http://127.0.0.1:${port}/readyz`, { signal: ac.signal })).status;
  } catch {
    return -1;
  } finally {
    clearTimeout(timer);
  }
}

test('a hung Redis (SIGSTOP) makes the worker not ready within APPEND_TIMEOUT_MS + 1 s, and ready again after SIGCONT', async (t) => {
  const staging = await RecordingServer.start();
  const ingressAdmin = await freePort();
  const stack = await Stack.start({
    redis,
    stagingUrl: staging.url,
    workers: 0,
    env: { APPEND_TIMEOUT_MS: '1500' },
    ingressEnv: { ADMIN_PORT: String(ingressAdmin) },
  });
  try {
    const port = await freePort();
    await stack.addWorker({ ADMIN_PORT: String(port) });
    await waitFor('the worker ready before the fault', async () => (await readyz(port)) === 200, 20_000, 100);
    redis.signal('SIGSTOP');
    const stoppedAt = Date.now();
    let seen: number[] = [];
    try {
      // Bounded: 6 s of probes at most.
      while (Date.now() - stoppedAt < 6000) {
        const s = await readyz(port);
        seen.push(s);
        if (s === 503) break;
        await new Promise((r) => setTimeout(r, 200));
      }
      const ingressStatus = await readyz(ingressAdmin);
      t.diagnostic(`worker /readyz during the hang: ${[...new Set(seen)].join(',')} over ${Date.now() - stoppedAt} ms (ingress /readyz: ${ingressStatus})`);
    } finally {
      redis.signal('SIGCONT');
    }
    assert.ok(seen.includes(503), `the worker's /readyz turned 503 while Redis was hung (saw ${[...new Set(seen)].join(',')})`);
    const notReadyAfter = seen.indexOf(503) * 200;
    assert.ok(notReadyAfter <= 2500, `within APPEND_TIMEOUT_MS + 1 s (${notReadyAfter} ms)`);
    await waitFor('ready again after SIGCONT', async () => (await readyz(port)) === 200, 10_000, 100);
    seen = [];
  } finally {
    redis.signal('SIGCONT');
    await stack.close();
    await staging.close();
  }
});

test('a worker waiting for its consumer group on a full Redis (it cannot read) is not ready', async (t) => {
  const staging = await RecordingServer.start();
  const client = redis.client();
  const filler = `filler${Date.now().toString(36)}`;
  const port = await freePort();
  // In process, so the test reads the worker's readiness without the CLI's preflight.
  const { InProcessWorker } = await import('../helpers/in-process-worker.js');
  let starting: Promise<{ close(): Promise<void> }> | null = null;
  try {
    await client.config('SET', 'maxmemory-policy', 'noeviction');
    const used = Number(/used_memory:(\d+)/.exec(await client.info('memory'))?.[1]);
    await client.config('SET', 'maxmemory', String(used + 512 * 1024));
    for (let i = 0; i < 10_000; i++) {
      try {
        await client.xadd(filler, '*', 'b', Buffer.alloc(8192, 1));
      } catch {
        break;
      }
    }

    // Hold it full: a maxmemory below what Redis holds (noeviction evicts nothing), checked.
    await client.config('SET', 'maxmemory', String(Number(/used_memory:(\d+)/.exec(await client.info('memory'))?.[1]) - 256 * 1024));
    await assert.rejects(client.set('probe-full', 'x'), /OOM/);
    // A fresh prefix: the group does not exist, and XGROUP CREATE answers OOM.
    starting = InProcessWorker.start(redis, staging.url, { ADMIN_PORT: String(port) }, `ng${Date.now().toString(36)}`);
    starting.catch(() => undefined);
    const status = await waitFor(
      'the admin port to answer',
      async () => {
        const s = await readyz(port);
        return s === -1 ? null : s;
      },
      10_000,
      100,
    );
    t.diagnostic(`worker /readyz while it cannot create its group: ${status}`);
    assert.equal(status, 503, 'a worker that cannot read is not ready');
  } finally {
    await client.del(filler).catch(() => undefined);
    await client.config('SET', 'maxmemory', '0');
    client.disconnect();
    if (starting) await (await starting.catch(() => null))?.close();
    await staging.close();
  }
});

test('an ingress whose every append is refused (Redis full: 503 redis_error) is not ready, and ready again once Redis has room', async (t) => {
  const staging = await RecordingServer.start();
  const client = redis.client();
  const filler = `filler${Date.now().toString(36)}`;
  const admin = await freePort();
  const stack = await Stack.start({ redis, stagingUrl: staging.url, workers: 0, ingressEnv: { ADMIN_PORT: String(admin) } });
  try {
    await waitFor('the ingress ready', async () => (await readyz(admin)) === 200, 20_000, 100);
    await client.config('SET', 'maxmemory-policy', 'noeviction');
    const used = Number(/used_memory:(\d+)/.exec(await client.info('memory'))?.[1]);
    await client.config('SET', 'maxmemory', String(used + 512 * 1024));
    for (let i = 0; i < 10_000; i++) {
      try {
        await client.xadd(filler, '*', 'b', Buffer.alloc(8192, 1));
      } catch {
        break;
      }
    }

    // Hold it full: a maxmemory below what Redis holds (noeviction evicts nothing), checked.
    await client.config('SET', 'maxmemory', String(Number(/used_memory:(\d+)/.exec(await client.info('memory'))?.[1]) - 256 * 1024));
    await assert.rejects(client.set('probe-full', 'x'), /OOM/);
    const { requestHead, sendRaw } = await import('../helpers/index.js');
    const answers: number[] = [];
    for (let i = 0; i < 5; i++) answers.push((await sendRaw(stack.ingressPort, requestHead('GET', `/full/${i}`, ['Host', 'x.test']))).status);
    const status = await readyz(admin);
    t.diagnostic(`requests on a full Redis: ${answers.join(',')}; ingress /readyz: ${status}`);
    assert.deepEqual(answers, [503, 503, 503, 503, 503]);
    assert.equal(status, 503, 'an ingress that refuses every request is not ready');
    // Memory back: ready again without any request (nothing is routed to a not-ready ingress).
    await client.del(filler);
    await client.config('SET', 'maxmemory', '0');
    await waitFor('the ingress ready again once Redis has room', async () => (await readyz(admin)) === 200, 10_000, 100);
    assert.equal((await sendRaw(stack.ingressPort, requestHead('GET', '/full/after', ['Host', 'x.test']))).status, 200);
  } finally {
    await client.del(filler).catch(() => undefined);
    await client.config('SET', 'maxmemory', '0');
    client.disconnect();
    await stack.close();
    await staging.close();
  }
});

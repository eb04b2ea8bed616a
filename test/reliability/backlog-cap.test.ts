import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { RecordingServer, RedisServer, Stack, delayed, freePort, requestHead, sendRaw, waitFor, useStack } from '../helpers/index.js';
import { SteadyLoad, assertAtLeastOnce, metric, missing } from './steady-load.js';

let redis: RedisServer;
useStack({}, (s) => {
  redis = s.redis;
});

/** Until the ingress has reached Redis it answers 503 redis_unavailable. */
const ready = (adminPort: number) => waitFor('the ingress to be ready', async () => (await fetch(`http://127.0.0.1:${adminPort}/readyz`)).status === 200);

async function usedMemory(): Promise<number> {
  const client = redis.client();
  try {
    return Number(/used_memory:(\d+)/.exec(await client.info('memory'))?.[1]);
  } finally {
    client.disconnect();
  }
}

async function streamLength(prefix: string): Promise<number> {
  const client = redis.client();
  try {
    return await client.xlen(`{${prefix}}:stream`);
  } finally {
    client.disconnect();
  }
}

test('a burst far above worker capacity: the backlog stops at MAX_BACKLOG, the rest is shed with 503 backlog_full, memory stays bounded, then it drains', async (t) => {
  const cap = 300;
  const staging = await RecordingServer.start(delayed(50));
  const adminPort = await freePort();
  const workerAdmin = await freePort();
  // About 40 replays a second against a burst of several hundred a second.
  const stack = await Stack.start({ redis, stagingUrl: staging.url, workers: 0, env: { MAX_BACKLOG: String(cap), WORKER_CONCURRENCY: '2' } });
  await stack.ingress.stop('SIGKILL');
  await stack.startIngress({ ADMIN_PORT: String(adminPort) });
  await ready(adminPort);
  await stack.addWorker({ ADMIN_PORT: String(workerAdmin) });
  const load = SteadyLoad.start({
    port: stack.ingressPort,
    rate: 600,
    maxInFlight: 48,
    bodyBytes: 1024,
    tag: `burst${randomBytes(2).toString('hex')}`,
    maxRequests: 5000,
  });
  let maxLength = 0;
  let maxIngressRss = 0;
  let maxWorkerRss = 0;
  try {
    await waitFor(
      'the burst to be shed',
      async () => {
        maxLength = Math.max(maxLength, await streamLength(stack.env.MIRRORPLANE_PREFIX!));
        maxIngressRss = Math.max(maxIngressRss, await metric(adminPort, 'mirrorplane_ingress_process_resident_memory_bytes'));
        maxWorkerRss = Math.max(maxWorkerRss, await metric(workerAdmin, 'mirrorplane_worker_process_resident_memory_bytes'));
        return load.sent >= 3000;
      },
      120_000,
      50,
    );
    await load.stop();
    const shed = load.refused.get('status 503') ?? 0;
    t.diagnostic(
      `sent ${load.sent}, accepted ${load.accepted.size}, shed ${shed}, longest stream ${maxLength} (cap ${cap}), RSS ingress ${(maxIngressRss / 2 ** 20).toFixed(0)} MiB, worker ${(maxWorkerRss / 2 ** 20).toFixed(0)} MiB`,
    );
    assert.ok(shed > 0, `some requests were shed: ${JSON.stringify([...load.refused])}`);
    assert.equal(load.refusedCount, shed, 'refused only with 503');
    assert.equal(
      await metric(adminPort, 'mirrorplane_ingress_requests_dropped_total{reason="backlog_full"}'),
      shed,
      'every shed request is counted as backlog_full',
    );
    // The ingress counts its own appends between two looks at Redis, so it overshoots by at
    // most the appends in flight when it turned; they are bounded by the load's concurrency.
    assert.ok(maxLength <= cap + 48, `stream length stayed near the cap: ${maxLength}`);
    assert.ok(maxIngressRss > 0 && maxIngressRss < 300 * 1024 * 1024, `ingress RSS ${maxIngressRss}`);
    assert.ok(maxWorkerRss > 0 && maxWorkerRss < 300 * 1024 * 1024, `worker RSS ${maxWorkerRss}`);
    // When the burst ends the backlog drains, and every accepted request is delivered: nothing
    // was trimmed from the stream to make room.
    await waitFor('every accepted request at staging', () => missing(staging, load.accepted).length === 0, 120_000);
    assertAtLeastOnce(staging, load.accepted);
    await waitFor('the stream to drain', async () => (await streamLength(stack.env.MIRRORPLANE_PREFIX!)) === 0, 60_000);
    await waitFor(
      'the ingress to accept again',
      async () => (await sendRaw(stack.ingressPort, requestHead('GET', '/after', ['Host', 'x']))).status === 200,
      10_000,
      100,
    );
  } finally {
    await load.stop();
    await stack.close();
    await staging.close();
  }
});

test('MAX_BACKLOG_BYTES: the ingress sheds while Redis memory is over the cap, and accepts again once workers drain it', async () => {
  const staging = await RecordingServer.start();
  const cap = (await usedMemory()) + 4 * 1024 * 1024;
  const adminPort = await freePort();
  // No worker yet: the stream only grows.
  const stack = await Stack.start({ redis, stagingUrl: staging.url, workers: 0, env: { MAX_BACKLOG_BYTES: String(cap) } });
  await stack.ingress.stop('SIGKILL');
  await stack.startIngress({ ADMIN_PORT: String(adminPort) });
  await ready(adminPort);
  const body = randomBytes(16 * 1024);
  const accepted: string[] = [];
  try {
    let shedAt = -1;
    for (let i = 0; i < 2000 && shedAt === -1; i++) {
      const id = `bytes-${i}`;
      const r = await sendRaw(stack.ingressPort, requestHead('PUT', `/blob/${i}`, ['Host', 'x', 'X-Request-ID', id], body.length), body);
      if (r.status === 200) accepted.push(id);
      else {
        assert.equal(r.status, 503);
        assert.match(r.head, /x-mirrorplane-drop: backlog_full/);
        shedAt = i;
      }
    }
    assert.ok(shedAt > 0, 'the ingress began to shed');
    const used = await usedMemory();
    // Sequential requests: at most a check interval's worth of appends past the cap.
    assert.ok(used < cap + 2 * 1024 * 1024, `Redis used ${used} against a cap of ${cap}`);
    assert.ok((await metric(adminPort, 'mirrorplane_ingress_requests_dropped_total{reason="backlog_full"}')) >= 1);
    await stack.addWorker();
    await waitFor('every accepted request at staging', () => missing(staging, new Set(accepted)).length === 0, 60_000);
    await waitFor(
      'the ingress to accept again',
      async () => (await sendRaw(stack.ingressPort, requestHead('GET', '/after', ['Host', 'x']))).status === 200,
      30_000,
      100,
    );
  } finally {
    await stack.close();
    await staging.close();
  }
});

test('MAX_BACKLOG bounds everything unfinished: with staging down the retry queue counts, the rest is shed, Redis memory stays bounded', async (t) => {
  const cap = 100;
  // Staging refuses every connection: each entry moves from the stream to the retry queue,
  // where it waits for its next try. A cap on the stream alone would accept without end.
  const staging = await RecordingServer.start();
  await staging.close();
  const adminPort = await freePort();
  const before = await usedMemory();
  // Tries spread far beyond the test, so that nothing reaches the failed set (which is
  // finished work, outside the cap) while the load runs.
  const stack = await Stack.start({
    redis,
    stagingUrl: staging.url,
    workers: 0,
    env: { MAX_BACKLOG: String(cap), REPLAY_ATTEMPTS: '50', REPLAY_BACKOFF_MS: '5000', WORKER_CONCURRENCY: '16' },
  });
  await stack.ingress.stop('SIGKILL');
  await stack.startIngress({ ADMIN_PORT: String(adminPort) });
  await ready(adminPort);
  await stack.addWorker();
  await stack.addWorker();
  const maxInFlight = 32;
  const load = SteadyLoad.start({
    port: stack.ingressPort,
    rate: 800,
    maxInFlight,
    bodyBytes: 1024,
    tag: `down${randomBytes(2).toString('hex')}`,
    maxRequests: 3000,
  });
  let peak = before;
  try {
    await waitFor(
      '3,000 requests answered',
      async () => {
        peak = Math.max(peak, await usedMemory());
        return load.sent >= 3000 && load.accepted.size + load.refusedCount >= 3000;
      },
      180_000,
      50,
    );
    await load.stop();
    const status = await stack.status();
    const shed = load.refused.get('status 503') ?? 0;
    t.diagnostic(`accepted ${load.accepted.size}, shed ${shed}, status ${JSON.stringify(status)}, Redis used_memory ${before} → peak ${peak}`);
    assert.equal(load.refusedCount, shed, `refused only with 503: ${JSON.stringify([...load.refused])}`);
    assert.equal(
      await metric(adminPort, 'mirrorplane_ingress_requests_dropped_total{reason="backlog_full"}'),
      shed,
      'every shed request is counted as backlog_full',
    );
    // Whatever is not in the failed set is unfinished, and the cap bounds it: the ingress
    // overshoots by at most the appends in flight when it turned (the load's concurrency).
    assert.ok(load.accepted.size - status.failed <= cap + maxInFlight, `accepted ${load.accepted.size}, failed ${status.failed}, cap ${cap}`);
    assert.ok(status.retrying + status.backlog <= cap + maxInFlight, `unfinished: ${status.retrying} retrying + ${status.backlog} in the stream`);
    assert.ok(status.retrying > cap / 2, `the retry queue holds the backlog: ${status.retrying}`);
    // 3,000 accepted 1 KiB requests took 26 MB here before the retry queue counted.
    assert.ok(peak - before < 6 * 1024 * 1024, `Redis grew by ${peak - before} bytes`);
  } finally {
    await load.stop();
    await stack.close();
  }
});

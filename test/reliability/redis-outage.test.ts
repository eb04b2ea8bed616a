import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { RecordingServer, RedisServer, Stack, freePort, requestHead, sendRaw, waitFor, type Received, useStack } from '../helpers/index.js';
import { SteadyLoad, assertAtLeastOnce, metric, missing, untilAccepting, drainedWithoutFailures } from './steady-load.js';

// Redis with AOF and `appendfsync always`: what Redis acknowledged is on disk, so what the
// ingress acknowledged (it answers 200 only after Redis did) survives a stop or a crash.
let redis: RedisServer;
useStack({ redis: { appendOnly: true } }, (s) => {
  redis = s.redis;
});

const OUTAGE_MS = 10_000;

const slow = (_req: Received, res: import('node:http').ServerResponse) => void setTimeout(() => res.writeHead(200).end(), 25);

async function outage(signal: NodeJS.Signals): Promise<void> {
  const staging = await RecordingServer.start(slow);
  const adminPort = await freePort();
  // A slow worker, so that a backlog is waiting in Redis when it goes away.
  const stack = await Stack.start({
    redis,
    stagingUrl: staging.url,
    workers: 0,
    env: { WORKER_CONCURRENCY: '2', CLAIM_IDLE_MS: '2000', APPEND_TIMEOUT_MS: '500' },
  });
  await stack.ingress.stop('SIGKILL');
  await stack.startIngress({ ADMIN_PORT: String(adminPort) });
  await stack.addWorker();
  const tag = `${signal}${randomBytes(2).toString('hex')}`;
  await untilAccepting(stack.ingressPort);
  const load = SteadyLoad.start({ port: stack.ingressPort, rate: 150, tag, maxRequests: 6000 });
  try {
    await waitFor('a backlog in Redis', async () => (await stack.status()).backlog >= 100, 60_000);
    const acceptedBefore = new Set(load.accepted);
    await redis.stop(signal);
    // During the outage the ingress answers 503 at once, by reason, and says it is not ready.
    await waitFor('readiness to turn false', async () => (await fetch(`http://127.0.0.1:${adminPort}/readyz`)).status === 503);
    const during = await sendRaw(stack.ingressPort, requestHead('POST', '/during', ['Host', 'x'], 2), Buffer.from('hi'));
    assert.equal(during.status, 503);
    assert.match(during.head, /x-mirrorplane-drop: redis_(unavailable|timeout|error)/);
    // The outage itself is the fault: a fixed length of time, not a wait for a condition.
    await new Promise((r) => setTimeout(r, OUTAGE_MS));
    const refusedDuring = load.refusedCount;
    await redis.start();
    // It recovers by itself: no process was restarted.
    await waitFor('the ingress to accept again', async () => (await fetch(`http://127.0.0.1:${adminPort}/readyz`)).status === 200, 60_000, 100);
    const acceptedAfterwards = load.accepted.size;
    await waitFor('new requests to be accepted', () => load.accepted.size >= acceptedAfterwards + 100, 60_000);
    await load.stop();
    assert.ok(refusedDuring > 0, 'requests during the outage were refused');
    const dropped =
      (await metric(adminPort, 'mirrorplane_ingress_requests_dropped_total{reason="redis_unavailable"}')) +
      (await metric(adminPort, 'mirrorplane_ingress_requests_dropped_total{reason="redis_timeout"}')) +
      (await metric(adminPort, 'mirrorplane_ingress_requests_dropped_total{reason="redis_error"}'));
    assert.ok(dropped >= refusedDuring, `503s are counted by reason (${dropped} counted, ${refusedDuring} refused)`);
    // The worker resumes by itself, and nothing acknowledged before the outage is lost.
    await waitFor('every accepted request at staging', () => missing(staging, load.accepted).length === 0, 120_000);
    assert.deepEqual(missing(staging, acceptedBefore), []);
    assertAtLeastOnce(staging, load.accepted);
    await drainedWithoutFailures(stack);
  } finally {
    await load.stop();
    await stack.close();
    await staging.close();
  }
}

test('Redis stopped for 10 s and restarted: 503 during the outage, recovery by itself, nothing acknowledged lost', async () => {
  await outage('SIGTERM');
});

test('Redis (AOF, appendfsync always) killed with SIGKILL and restarted: nothing acknowledged lost', async () => {
  await outage('SIGKILL');
});

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { RecordingServer, RedisServer, Stack, freePort, header, waitFor, useStack } from '../helpers/index.js';
import { SteadyLoad, assertAtLeastOnce, copiesByRequestId, metric, missing, untilAccepting, drainedWithoutFailures } from './steady-load.js';

let redis: RedisServer;
useStack({}, (s) => {
  redis = s.redis;
});

test('staging down under load, then up: every entry waits in the retry queue with backoff and arrives', async (t) => {
  const staging = await RecordingServer.start();
  const port = staging.port;
  const adminPort = await freePort();
  // Backoff 250 ms doubling: 12 attempts span ~8.5 minutes, far more than the outage lasts.
  const stack = await Stack.start({
    redis,
    stagingUrl: staging.url,
    workers: 0,
    env: { REPLAY_ATTEMPTS: '12', REPLAY_BACKOFF_MS: '250', WORKER_CONCURRENCY: '8' },
  });
  await stack.addWorker({ ADMIN_PORT: String(adminPort) });
  await untilAccepting(stack.ingressPort);
  const load = SteadyLoad.start({ port: stack.ingressPort, rate: 20, tag: `down${randomBytes(2).toString('hex')}`, maxRequests: 200 });
  try {
    await waitFor('some replays to arrive', () => staging.received.length >= 10);
    await staging.close();
    const downAt = Date.now();
    await waitFor('entries to wait in the retry queue', async () => (await stack.status()).retrying >= 20, 30_000);
    // Staging stays down until the load is over and the failed tries number three per accepted
    // entry (older entries have more: the backoff doubles), so most entries arrive only after
    // several tries. A condition, not a fixed outage: on a quiet machine it holds after ~12 s.
    await waitFor('the load to end', () => load.sent === 200, 60_000);
    await load.stop();
    await waitFor(
      'three failed tries per accepted entry',
      async () => (await metric(adminPort, 'mirrorplane_worker_replays_total{outcome="retryable_error"}')) >= 3 * load.accepted.size,
      120_000,
      200,
    );
    t.diagnostic(`staging was down for ${Date.now() - downAt} ms`);
    await staging.listen(port);
    await waitFor('every accepted request at staging', () => missing(staging, load.accepted).length === 0, 120_000);
    assertAtLeastOnce(staging, load.accepted);
    const retried = [...copiesByRequestId(staging.received).values()].filter((c) => Number(header(c[c.length - 1]!.rawHeaders, 'x-mirrorplane-attempt')) >= 3);
    assert.ok(retried.length >= 20, `entries that arrived after several attempts: ${retried.length}`);
    assert.ok((await metric(adminPort, 'mirrorplane_worker_replays_total{outcome="retryable_error"}')) >= 20, 'failed attempts are counted');
    await drainedWithoutFailures(stack);
    assert.equal(load.refusedCount, 0, 'the ingress never depended on staging');
  } finally {
    await load.stop();
    await stack.close();
    await staging.close();
  }
});

test('staging answering slower than REPLAY_TIMEOUT_MS: each try is cut, counted and retried; no slot is held', async () => {
  // First tries never get an answer at all; later tries are answered at once.
  const staging = await RecordingServer.start((req, res) => {
    if (header(req.rawHeaders, 'x-mirrorplane-attempt') !== '1') res.writeHead(200).end();
  });
  const adminPort = await freePort();
  const concurrency = 4;
  const stack = await Stack.start({
    redis,
    stagingUrl: staging.url,
    workers: 0,
    env: { REPLAY_TIMEOUT_MS: '500', REPLAY_ATTEMPTS: '4', REPLAY_BACKOFF_MS: '100', WORKER_CONCURRENCY: String(concurrency) },
  });
  await stack.addWorker({ ADMIN_PORT: String(adminPort) });
  const count = 30;
  await untilAccepting(stack.ingressPort);
  const load = SteadyLoad.start({ port: stack.ingressPort, rate: 100, tag: `slow${randomBytes(2).toString('hex')}`, maxRequests: count });
  try {
    await waitFor('all sent', () => load.sent === count);
    await load.stop();
    assert.equal(load.accepted.size, count);
    // With slots held by unanswered tries, at most `concurrency` entries would ever finish.
    await waitFor(
      'every request answered at staging',
      () => {
        const copies = copiesByRequestId(staging.received);
        return [...load.accepted].every((id) => copies.get(id)?.some((c) => header(c.rawHeaders, 'x-mirrorplane-attempt') !== '1'));
      },
      90_000,
    );
    assert.ok(count > concurrency);
    assertAtLeastOnce(staging, load.accepted);
    assert.ok((await metric(adminPort, 'mirrorplane_worker_replays_total{outcome="retryable_error"}')) >= count, 'each cut try is counted');
    await waitFor('nothing in flight', async () => (await metric(adminPort, 'mirrorplane_worker_in_flight')) === 0, 30_000);
    const status = await drainedWithoutFailures(stack);
    assert.equal(status.replayed, count + 1, 'every request and the readiness probe');
  } finally {
    await load.stop();
    await stack.close();
    await staging.close();
  }
});

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { RecordingServer, RedisServer, Stack, freePort, requestHead, sendRaw, waitFor, useStack } from '../helpers/index.js';
import { metric } from './steady-load.js';

let redis: RedisServer;

useStack({}, (s) => {
  redis = s.redis;
  s.defer(() => s.redis.signal('SIGCONT'));
});

const readyz = async (adminPort: number) => (await fetch(`http://127.0.0.1:${adminPort}/readyz`)).status;
const PROBE_INTERVAL_MS = 250;

test('a hung Redis (SIGSTOP): /readyz turns 503 within APPEND_TIMEOUT_MS + the probe interval, requests get 503 at once, and all recovers on SIGCONT', async (t) => {
  const appendTimeout = 1500;
  const staging = await RecordingServer.start();
  const adminPort = await freePort();
  const stack = await Stack.start({
    redis,
    stagingUrl: staging.url,
    workers: 1,
    env: { APPEND_TIMEOUT_MS: String(appendTimeout) },
    ingressEnv: { ADMIN_PORT: String(adminPort) },
  });
  let paused = false;
  try {
    await waitFor('ready', async () => (await readyz(adminPort)) === 200);
    assert.equal((await sendRaw(stack.ingressPort, requestHead('GET', '/before', ['Host', 'x', 'X-Request-ID', 'before']))).status, 200);

    redis.signal('SIGSTOP');
    paused = true;
    const stoppedAt = Date.now();
    // Polled every 50 ms: the measured time is the probe's, not the poll's.
    await waitFor('/readyz to turn 503', async () => (await readyz(adminPort)) === 503, 30_000, 50);
    const notReadyAfter = Date.now() - stoppedAt;
    t.diagnostic(`/readyz 503 after ${notReadyAfter} ms (bound ${appendTimeout + PROBE_INTERVAL_MS} ms + scheduling)`);
    // The bound plus a second for a loaded machine's timers and this poll.
    assert.ok(notReadyAfter <= appendTimeout + PROBE_INTERVAL_MS + 1000, `not ready after ${notReadyAfter} ms`);

    // Known unresponsive: each request is answered 503 at once, not after the append deadline.
    const times: number[] = [];
    for (let i = 0; i < 20; i++) {
      const started = Date.now();
      const r = await sendRaw(stack.ingressPort, requestHead('POST', `/during/${i}`, ['Host', 'x', 'X-Request-ID', `during-${i}`], 2), Buffer.from('hi'));
      times.push(Date.now() - started);
      assert.equal(r.status, 503);
      assert.match(r.head, /x-mirrorplane-drop: redis_timeout/);
    }
    const slowest = Math.max(...times);
    t.diagnostic(`20 requests during the hang: slowest answer ${slowest} ms`);
    assert.ok(slowest < appendTimeout / 2, `every 503 came at once, slowest ${slowest} ms`);
    assert.ok((await metric(adminPort, 'mirrorplane_ingress_requests_dropped_total{reason="redis_timeout"}')) >= 20);
    assert.equal(await readyz(adminPort), 503, 'still not ready while Redis is paused');

    redis.signal('SIGCONT');
    paused = false;
    const resumedAt = Date.now();
    await waitFor('/readyz to turn 200 again', async () => (await readyz(adminPort)) === 200, 30_000, 50);
    t.diagnostic(`/readyz 200 again ${Date.now() - resumedAt} ms after SIGCONT`);
    await waitFor(
      'a request accepted again',
      async () => (await sendRaw(stack.ingressPort, requestHead('GET', '/after', ['Host', 'x', 'X-Request-ID', 'after']))).status === 200,
      10_000,
      50,
    );
    await waitFor(
      'staging gets the requests accepted before and after',
      () => staging.received.some((r) => r.url === '/before') && staging.received.some((r) => r.url === '/after'),
      30_000,
    );
    assert.ok(!staging.received.some((r) => r.url.startsWith('/during/')), 'nothing refused was replayed');
  } finally {
    if (paused) redis.signal('SIGCONT');
    await stack.close();
    await staging.close();
  }
});

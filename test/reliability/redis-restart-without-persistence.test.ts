import { test } from 'node:test';
import assert from 'node:assert/strict';
import { RecordingServer, RedisServer, Stack, header, waitFor, useStack } from '../helpers/index.js';
import { SteadyLoad, untilAccepting } from './steady-load.js';

// Hostile pass on issue 11: Redis restarted WITHOUT persistence (appendonly no, no RDB): the
// stream, the consumer group, BullMQ's keys and the heartbeats are all gone while the ingress and
// two workers keep running. What was accepted before is lost (documented: only what Redis
// persists survives). What is accepted AFTER the restart must reach staging, including through
// the retry queue, without restarting any process; and the live workers must be listed again.

let redis: RedisServer;
useStack({}, (s) => {
  redis = s.redis;
});

test('Redis restarted without persistence (group, stream and retry queue gone): every request accepted afterwards reaches staging, through the retry queue, with no process restarted', async (t) => {
  // Every first try fails with 500: each entry goes through the retry queue.
  const staging = await RecordingServer.start((req, res) => {
    res.writeHead(header(req.rawHeaders, 'x-mirrorplane-attempt') === '1' ? 500 : 200).end();
  });
  const stack = await Stack.start({
    redis,
    stagingUrl: staging.url,
    workers: 2,
    env: { CLAIM_IDLE_MS: '2000', REPLAY_BACKOFF_MS: '200', RETRY_MAX_DELAY_MS: '1000', HEARTBEAT_MS: '500', WORKER_CONCURRENCY: '8' },
  });
  const ok = (tag: string) =>
    new Set(
      staging.received
        .filter((r) => header(r.rawHeaders, 'x-mirrorplane-attempt') !== '1')
        .map((r) => header(r.rawHeaders, 'x-request-id') as string)
        .filter((id) => id?.startsWith(`${tag}-`)),
    );
  try {
    const before1 = SteadyLoad.start({ port: stack.ingressPort, rate: 50, tag: 'pre', maxRequests: 50 });
    await waitFor('the first load sent', () => before1.sent === 50, 60_000);
    await before1.stop();
    await waitFor('every pre-restart request at staging', () => ok('pre').size === before1.accepted.size, 60_000, 100);

    await redis.stop('SIGTERM');
    await redis.start();
    const client = redis.client();
    assert.equal(await client.dbsize(), 0, 'Redis came back empty');
    client.disconnect();

    await untilAccepting(stack.ingressPort);
    const after1 = SteadyLoad.start({ port: stack.ingressPort, rate: 50, tag: 'post', maxRequests: 100 });
    await waitFor('the second load sent', () => after1.sent === 100, 60_000);
    await after1.stop();
    assert.ok(after1.accepted.size > 50, `most accepted after the restart (${after1.accepted.size}/100)`);
    let got = 0;
    try {
      await waitFor(
        'every request accepted after the restart answered 200 by staging',
        () => (got = [...after1.accepted].filter((id) => ok('post').has(id)).length) === after1.accepted.size,
        60_000,
        200,
      );
    } finally {
      t.diagnostic(
        `after the restart: ${after1.accepted.size} accepted, ${got} answered 200 by staging; ${staging.received.length} requests at staging in all`,
      );
    }
    const status = await waitFor(
      'both live workers listed again',
      async () => {
        const s = (await stack.status()) as unknown as { workers?: unknown[] };
        return (s.workers?.length ?? 0) === 2 ? s : null;
      },
      20_000,
      250,
    );
    assert.equal(status.workers?.length, 2);
  } finally {
    await stack.close();
    await staging.close();
  }
});

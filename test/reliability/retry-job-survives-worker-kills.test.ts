import { test } from 'node:test';
import assert from 'node:assert/strict';
import { keysFor } from '@mirrorplane/core';
import { createRetryQueue } from '@mirrorplane/runtime';
import { RecordingServer, RedisServer, Stack, header, requestHead, sendRaw, waitFor, useStack } from '../helpers/index.js';

// Hostile pass on issue 11 (accounting when workers die): a worker SIGKILLed while it runs a
// *retry job* (not a stream entry). BullMQ notices the lost lock as a stall; after
// maxStalledCount (1) stalls the job is failed with "job stalled more than allowable limit" —
// the entry lands in the failed set although staging never failed it and is healthy again.
// docs/RELIABILITY.md §1: whatever process dies, every accepted request reaches staging; no
// failed entry. The 30-minute chaos run in the docs shows 3 such entries.

let redis: RedisServer;
useStack({}, (s) => {
  redis = s.redis;
});

test('workers SIGKILLed twice while running the same retry job: the entry still reaches staging once it is healthy, nothing in the failed set', async (t) => {
  let phase: 'first-fails-then-hang' | 'healthy' = 'first-fails-then-hang';
  const staging = await RecordingServer.start((req, res) => {
    if (phase === 'healthy') return void res.writeHead(200).end();
    // The first try fails (→ retry queue); every retry hangs, so a retry job is running when the worker dies.
    if (header(req.rawHeaders, 'x-mirrorplane-attempt') === '1') return void res.writeHead(500).end();
  });
  const stack = await Stack.start({
    redis,
    stagingUrl: staging.url,
    workers: 1,
    // A short stall check and try deadline: each kill is noticed within seconds, not the default minute.
    env: { REPLAY_TIMEOUT_MS: '5000', RETRY_STALL_CHECK_MS: '2000', CLAIM_IDLE_MS: '1000', REPLAY_BACKOFF_MS: '100', RETRY_MAX_DELAY_MS: '200' },
  });
  const connection = redis.client();
  const queue = createRetryQueue(keysFor(stack.env.MIRRORPLANE_PREFIX as string), connection);
  try {
    const r = await sendRaw(stack.ingressPort, requestHead('POST', '/kill/1', ['Host', 'x.test', 'X-Request-ID', 'kill-1'], 0));
    assert.equal(r.status, 200);
    for (let kill = 1; kill <= 2; kill++) {
      const tries = staging.received.length;
      await waitFor(`retry try ${kill} running at staging`, () => staging.received.length > tries && (kill > 1 || staging.received.length >= 2), 150_000, 50);
      await stack.workers.at(-1)!.stop('SIGKILL');
      await stack.addWorker();
    }
    // Staging recovers; the job must still be delivered.
    phase = 'healthy';
    const healthyAt = Date.now();
    let failed: { failedReason?: string }[] = [];
    let delivered = false;
    await waitFor(
      'the entry answered 200 at staging, or in the failed set',
      async () => {
        failed = await queue.getFailed(0, 10);
        delivered = staging.received.some((x) => header(x.rawHeaders, 'x-request-id') === 'kill-1' && x.receivedAt >= healthyAt);
        return failed.length > 0 || delivered;
      },
      200_000,
      250,
    );
    t.diagnostic(
      `tries at staging ${staging.received.length}; delivered after recovery: ${delivered}; failed: ${failed.map((f) => f.failedReason).join(' | ') || 'none'}`,
    );
    assert.deepEqual(
      failed.map((f) => f.failedReason),
      [],
      'no entry in the failed set because a worker died',
    );
    assert.ok(delivered, 'delivered once staging is healthy');
  } finally {
    await queue.close();
    connection.disconnect();
    await stack.close();
    await staging.close();
  }
});

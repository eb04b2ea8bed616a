import { test } from 'node:test';
import assert from 'node:assert/strict';
import { keysFor } from '@mirrorplane/core';
import { createRetryQueue } from '@mirrorplane/runtime';
import { RecordingServer, RedisServer, Stack, header, waitFor, useStack, withDeadline } from '../helpers/index.js';
import { SteadyLoad, copiesByRequestId } from './steady-load.js';

// Hostile pass on issue 11: SIGTERM (and SIGINT) to every process of the deployment at once —
// what a process-group signal or `docker compose stop` does — while load runs, staging is slow
// (beyond CLAIM_IDLE_MS / 2) and some tries fail with 503. Every process must exit 0; then a
// fresh worker must bring every accepted request to staging (or the failed set with a reason),
// with repeats bounded by what the stopped workers held.

let redis: RedisServer;
useStack({ redis: { appendOnly: true } }, (s) => {
  redis = s.redis;
});

for (const signal of ['SIGTERM', 'SIGINT'] as const) {
  test(`${signal} to ingress and both workers at once under load: all exit 0, every accepted request reaches staging or the failed set`, async (t) => {
    let n = 0;
    const staging = await RecordingServer.start((_req, res) => {
      const i = n++;
      // Mixed: fast, slow (beyond CLAIM_IDLE_MS / 2), and one in seven 503.
      const delay = i % 3 === 0 ? 10 : 700;
      setTimeout(() => void res.writeHead(i % 7 === 0 ? 503 : 200).end(), delay);
    });
    const env = { CLAIM_IDLE_MS: '1000', SHUTDOWN_TIMEOUT_MS: '400', WORKER_CONCURRENCY: '16', REPLAY_BACKOFF_MS: '200', RETRY_MAX_DELAY_MS: '1000' };
    const stack = await Stack.start({ redis, stagingUrl: staging.url, workers: 2, env });
    const load = SteadyLoad.start({ port: stack.ingressPort, rate: 150, tag: signal.toLowerCase(), maxRequests: 1500, maxInFlight: 32 });
    let fresh: Awaited<ReturnType<Stack['addWorker']>> | null = null;
    try {
      await waitFor('load running and replays in flight', () => load.accepted.size >= 300 && staging.received.length >= 100, 60_000);
      const codes = await Promise.all([stack.ingress, ...stack.workers].map((p) => withDeadline(p.stop(signal), 20_000, () => 'no exit within 20 s')));
      await load.stop();
      t.diagnostic(`exit codes: ${codes.join(', ')}; accepted ${load.accepted.size}, refused ${[...load.refused].map(([k, v]) => `${k}:${v}`).join(' ')}`);
      assert.deepEqual(codes, [0, 0, 0], 'every process exits 0');
      stack.workers.length = 0;
      fresh = await stack.addWorker();
      const connection = redis.client();
      const queue = createRetryQueue(keysFor(stack.env.MIRRORPLANE_PREFIX as string), connection);
      let missing: string[] = [];
      try {
        await waitFor(
          'every accepted request answered 200 by staging or in the failed set',
          async () => {
            const failed = new Set(
              (await queue.getFailed(0, 10_000)).map((j) => (j.data as { entry?: { request?: { requestId?: string } } }).entry?.request?.requestId),
            );
            const ok = new Set(staging.received.map((r) => header(r.rawHeaders, 'x-request-id')));
            missing = [...load.accepted].filter((id) => !ok.has(id) && !failed.has(id));
            return missing.length === 0;
          },
          90_000,
          250,
        );
      } finally {
        t.diagnostic(`missing: ${missing.length} ${missing.slice(0, 10).join(', ')}`);
        await queue.close();
        connection.disconnect();
      }
      const copies = copiesByRequestId(staging.received);
      const extra = [...load.accepted].reduce((a, id) => a + Math.max(0, (copies.get(id)?.length ?? 0) - 1), 0);
      t.diagnostic(`extra copies (incl. retries of 503s): ${extra}`);
    } finally {
      await load.stop();
      await fresh?.stop('SIGKILL');
      await stack.close();
      await staging.close();
    }
  });
}

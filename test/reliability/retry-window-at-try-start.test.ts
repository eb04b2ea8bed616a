import { test } from 'node:test';
import assert from 'node:assert/strict';
import { keysFor } from '@mirrorplane/core';
import { createRetryQueue } from '@mirrorplane/runtime';
import { RecordingServer, RedisServer, waitFor, useStack } from '../helpers/index.js';
import { tryTimes } from './steady-load.js';
import { InProcessWorker, appendEntries } from '../helpers/in-process-worker.js';

// Hostile pass on issue 11 (retry policy). docs/RELIABILITY.md, "Retry policy": "there is a next
// try only if it would start no later than RETRY_WINDOW_MS after the first try of the entry".
// The window is checked when a try fails (now + drawn delay), never when the next try actually
// starts. The retry queue runs ceil(WORKER_CONCURRENCY / 4) jobs at once, so when more entries
// retry than it can run, tries start long after the delay the policy chose — and after the
// window. Staging here hangs (each try cut by REPLAY_TIMEOUT_MS), a staging outage in miniature.

let redis: RedisServer;
useStack({}, (s) => {
  redis = s.redis;
});

test('no try starts later than RETRY_WINDOW_MS after the first, even when more entries retry than the retry queue runs at once', async (t) => {
  const WINDOW = 2000;
  const SLACK = 1000;
  // Staging never answers: every try is cut after REPLAY_TIMEOUT_MS.
  const staging = await RecordingServer.start(() => undefined);
  const w = await InProcessWorker.start(redis, staging.url, {
    WORKER_CONCURRENCY: '1',
    REPLAY_TIMEOUT_MS: '400',
    REPLAY_BACKOFF_MS: '100',
    RETRY_MAX_DELAY_MS: '200',
    RETRY_WINDOW_MS: String(WINDOW),
    CLAIM_IDLE_MS: '60000',
  });
  const client = redis.client();
  const connection = redis.client();
  const queue = createRetryQueue(keysFor(w.config.prefix), connection);
  const N = 30;
  try {
    await appendEntries(client, w.config.prefix, 'win', N);
    await waitFor('every entry in the failed set (exhausted)', async () => ((await queue.getJobCounts('failed')).failed ?? 0) === N, 180_000, 100);
    const spans = [...tryTimes(staging.received).entries()].map(([id, at]) => ({ id, tries: at.length, span: Math.max(...at) - Math.min(...at) }));
    const over = spans.filter((s) => s.span > WINDOW + SLACK);
    t.diagnostic(`first→last try per entry (ms): ${spans.map((s) => `${s.id}:${s.span}/${s.tries} tries`).join(', ')}`);
    assert.deepEqual(
      over.map((s) => s.id),
      [],
      `tries started past RETRY_WINDOW_MS=${WINDOW} (+${SLACK} slack): ${over.map((s) => `${s.id} ${s.span} ms`).join(', ')}`,
    );
  } finally {
    await queue.close();
    connection.disconnect();
    client.disconnect();
    await w.close();
    await staging.close();
  }
});

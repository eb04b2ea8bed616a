import { test } from 'node:test';
import assert from 'node:assert/strict';
import { keysFor } from '@mirrorplane/core';
import { createRetryQueue } from '@mirrorplane/runtime';
import { RecordingServer, RedisServer, header, waitFor, useStack } from '../helpers/index.js';
import { tryTimes } from './steady-load.js';
import { InProcessWorker, appendEntries } from '../helpers/in-process-worker.js';

// Issue 11, fault 5: retries follow the documented policy (REPLAY_BACKOFF_MS, RETRY_MAX_DELAY_MS,
// RETRY_WINDOW_MS): they outlast a staging restart instead of giving up after a few seconds.

let redis: RedisServer;
useStack({}, (s) => {
  redis = s.redis;
});

async function failedCount(prefix: string): Promise<number> {
  const connection = redis.client();
  const queue = createRetryQueue(keysFor(prefix), connection);
  try {
    return (await queue.getJobCounts('failed')).failed ?? 0;
  } finally {
    await queue.close();
    connection.disconnect();
  }
}

test('staging answers 500 for 4 s, then recovers: every entry succeeds, none fails early', async () => {
  let recoverAt = Infinity;
  const staging = await RecordingServer.start((_req, res) => {
    if (recoverAt === Infinity) recoverAt = Date.now() + 4000;
    res.writeHead(Date.now() < recoverAt ? 500 : 200).end();
  });
  // Under the old defaults (5 tries, 100 ms base) every entry was in the failed set within ~2 s.
  const w = await InProcessWorker.start(redis, staging.url, {
    REPLAY_BACKOFF_MS: '100',
    RETRY_MAX_DELAY_MS: '800',
    RETRY_WINDOW_MS: '30000',
    WORKER_CONCURRENCY: '16',
  });
  const client = redis.client();
  try {
    await appendEntries(client, w.config.prefix, 'outage', 200);
    await waitFor(
      'every entry answered 200 by staging',
      () => {
        const ok = new Set(staging.received.filter((r) => r.receivedAt >= recoverAt).map((r) => header(r.rawHeaders, 'x-request-id')));
        return ok.size === 200;
      },
      90_000,
      50,
    );
    assert.equal(await failedCount(w.config.prefix), 0, 'nothing in the failed set');
    const tries = [...tryTimes(staging.received).values()].map((t) => t.length);
    assert.ok(Math.max(...tries) >= 5, `entries were tried through the outage (max ${Math.max(...tries)} tries)`);
  } finally {
    client.disconnect();
    await w.close();
    await staging.close();
  }
});

test('staging never recovers: tries go on for the window and stop there; then the failed set (exhausted)', async () => {
  const staging = await RecordingServer.start((_req, res) => void res.writeHead(503).end());
  const windowMs = 3000;
  const maxDelayMs = 400;
  const w = await InProcessWorker.start(redis, staging.url, {
    REPLAY_BACKOFF_MS: '50',
    RETRY_MAX_DELAY_MS: String(maxDelayMs),
    RETRY_WINDOW_MS: String(windowMs),
  });
  const client = redis.client();
  try {
    await appendEntries(client, w.config.prefix, 'down', 10);
    await waitFor('all 10 in the failed set', async () => (await failedCount(w.config.prefix)) === 10, 60_000, 100);
    for (const [id, times] of tryTimes(staging.received)) {
      const span = times[times.length - 1]! - times[0]!;
      // The last try starts within the window; a try later than it would have left the window.
      // (Slack for the machine's load: a try starts when a worker gets to it, after its delay.)
      assert.ok(span <= windowMs + 1500, `${id}: tries spread over ${span} ms, window ${windowMs}`);
      assert.ok(span >= windowMs - maxDelayMs - 200, `${id}: tries stopped early, after ${span} ms`);
      for (let i = 1; i < times.length; i++) {
        assert.ok(times[i]! - times[i - 1]! >= 20, `${id}: gap ${i} is at least half the first cap`);
      }
    }
  } finally {
    client.disconnect();
    await w.close();
    await staging.close();
  }
});

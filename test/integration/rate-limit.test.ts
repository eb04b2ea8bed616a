import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { keysFor, parseRateLimit, rateLimitOf } from '@mirrorplane/core';
import { setRateLimitOverride } from '@mirrorplane/runtime';
import { RecordingServer, RedisServer, waitFor } from '../helpers/index.js';
import { InProcessWorker, appendEntries } from '../helpers/in-process-worker.js';

// The rate cap per staging origin: one token bucket in Redis shared by every worker. Staging
// delays its answers at random (0-20 ms) and records when each request arrived.

let redis: RedisServer;

before(async () => {
  redis = await RedisServer.start();
});

after(async () => {
  await redis?.close();
});

/** The most arrivals in any window of `ms` milliseconds (sliding over the arrival times). */
function mostInWindow(times: readonly number[], ms: number): number {
  const sorted = [...times].sort((a, b) => a - b);
  let most = 0;
  let lo = 0;
  for (let hi = 0; hi < sorted.length; hi++) {
    while ((sorted[hi] as number) - (sorted[lo] as number) > ms) lo++;
    most = Math.max(most, hi - lo + 1);
  }
  return most;
}

const randomDelay = () => new Promise((r) => setTimeout(r, Math.random() * 20));

test('a cap of 200/s with a burst of 40, shared by 3 workers, holds over 10 s; capped entries wait in the backlog', async () => {
  const staging = await RecordingServer.start(async (_req, res) => {
    await randomDelay();
    res.writeHead(200).end('ok');
  });
  const client = redis.client();
  const prefix = `t${randomBytes(4).toString('hex')}`;
  const keys = keysFor(prefix);
  // More than 10 s of work at the cap, all there from the start: the cap alone paces it.
  await appendEntries(client, prefix, 'cap', 2600);
  const env = { STAGING_RATE_LIMIT: '200,40', WORKER_CONCURRENCY: '64' };
  const workers = await Promise.all([0, 1, 2].map(() => InProcessWorker.start(redis, staging.url, env, prefix)));
  try {
    const started = Date.now();
    let mostPending = 0;
    while (Date.now() - started < 10_000) {
      const pending = (await client.xpending(keys.stream, keys.group)) as [number, ...unknown[]];
      mostPending = Math.max(mostPending, Number(pending[0]));
      await new Promise((r) => setTimeout(r, 100));
    }
    const times = staging.received.map((r) => r.receivedAt);
    const first = Math.min(...times);
    const span = (Math.max(...times) - first) / 1000;
    // Every window: at most 200 a second plus the burst (+2% for the arrival timestamps' jitter).
    for (const ms of [100, 500, 1000, 5000]) {
      const most = mostInWindow(times, ms);
      const bound = Math.ceil((200 * ms) / 1000 + 40) * 1.02 + 2;
      assert.ok(most <= bound, `${most} arrivals within ${ms} ms; the cap allows ${bound}`);
    }
    // Capped, not starved: the deployment ran near the cap.
    assert.ok(times.length >= 200 * span * 0.8, `${times.length} arrivals in ${span.toFixed(1)} s is far below the cap`);
    // Entries waited in the stream, not in the workers' slots (3 × 64 = 192 slots).
    assert.ok(mostPending <= 100, `${mostPending} entries were taken by workers at once while capped`);
  } finally {
    await Promise.all(workers.map((w) => w.close()));
    client.disconnect();
    await staging.close();
  }
});

test('a cap changed live (mirrorplane rate-limit set) takes effect within about a second, without a restart', async () => {
  const staging = await RecordingServer.start(async (_req, res) => {
    await randomDelay();
    res.writeHead(200).end('ok');
  });
  const client = redis.client();
  const prefix = `t${randomBytes(4).toString('hex')}`;
  await appendEntries(client, prefix, 'live', 1500);
  const workers = await Promise.all([0, 1].map(() => InProcessWorker.start(redis, staging.url, { STAGING_RATE_LIMIT: '400,20' }, prefix)));
  try {
    await waitFor('the first replays at 400/s', () => staging.received.length >= 400, 20_000);
    await setRateLimitOverride(client, prefix, 'default', rateLimitOf(50, 5));
    const changed = Date.now();
    // Seen within a refresh (1 s) and a read round; measured over the 3 s after that.
    await new Promise((r) => setTimeout(r, 1500));
    const from = Date.now();
    await new Promise((r) => setTimeout(r, 3000));
    const later = staging.received.filter((r) => r.receivedAt >= from && r.receivedAt < from + 3000);
    assert.ok(later.length <= 50 * 3 + 5 + 10, `${later.length} arrivals in 3 s at a cap of 50/s set ${from - changed} ms before`);
    assert.ok(later.length >= 50 * 3 * 0.6, `${later.length} arrivals in 3 s: the new cap starved the workers`);
    // Turned off live: the rest drains at full speed.
    await setRateLimitOverride(client, prefix, 'default', parseRateLimit('off'));
    await waitFor('the rest drained uncapped', () => staging.received.length >= 1500, 20_000);
  } finally {
    await Promise.all(workers.map((w) => w.close()));
    client.disconnect();
    await staging.close();
  }
});

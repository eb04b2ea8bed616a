import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { Redis } from 'ioredis';
import { keysFor } from '@mirrorplane/core';
import { createRetryQueue } from '@mirrorplane/runtime';
import { RecordingServer, RedisServer, header, waitFor, type Received, useStack } from '../helpers/index.js';
import { InProcessWorker, appendEntries } from '../helpers/in-process-worker.js';

// Hostile pass on issue 11, fault 2's kind (Redis at maxmemory, noeviction) in the phase the
// fixes did not cover: *during retries*. Entries wait in the retry queue; Redis fills up; staging
// is healthy again. A retry job that staging answered 200 must not land in the failed set because
// Redis refused BullMQ's bookkeeping, and staging must not get a storm of copies. Once memory is
// freed, the retry queue drains and the failed set holds only what staging failed (nothing here).

let redis: RedisServer;
useStack({ redis: { args: ['--maxmemory-policy', 'noeviction'] } }, (s) => {
  redis = s.redis;
});

async function usedMemory(client: Redis): Promise<number> {
  return Number(/used_memory:(\d+)/.exec(await client.info('memory'))?.[1]);
}

function copies(received: Received[], status: Map<Received, number>): Map<string, number> {
  const out = new Map<string, number>();
  for (const r of received) {
    if (status.get(r) !== 200) continue;
    const id = header(r.rawHeaders, 'x-request-id') as string;
    out.set(id, (out.get(id) ?? 0) + 1);
  }
  return out;
}

test('Redis full while entries wait in the retry queue: answered retries do not land in the failed set, no storm of copies, the queue drains once memory is freed', async (t) => {
  let healthy = false;
  const status = new Map<Received, number>();
  const staging = await RecordingServer.start((req, res) => {
    const code = healthy ? 200 : 500;
    status.set(req, code);
    res.writeHead(code).end();
  });
  const w = await InProcessWorker.start(redis, staging.url, {
    WORKER_CONCURRENCY: '8',
    REPLAY_BACKOFF_MS: '3000',
    RETRY_MAX_DELAY_MS: '3000',
    RETRY_WINDOW_MS: '600000',
    CLAIM_IDLE_MS: '2000',
  });
  const client = redis.client();
  const connection = redis.client();
  const queue = createRetryQueue(keysFor(w.config.prefix), connection);
  const N = 40;
  const filler = `filler${Date.now().toString(36)}`;
  try {
    await appendEntries(client, w.config.prefix, 'rq', N);
    await waitFor('every entry waiting in the retry queue', async () => ((await queue.getJobCounts('delayed')).delayed ?? 0) === N, 60_000, 50);
    healthy = true;
    // Fill Redis with something else until it refuses writes.
    await client.config('SET', 'maxmemory', String((await usedMemory(client)) + 512 * 1024));
    for (let i = 0; i < 10_000; i++) {
      try {
        await client.xadd(filler, '*', 'b', Buffer.alloc(8192, 1));
      } catch (error) {
        assert.match((error as Error).message, /^OOM/);
        break;
      }
    }

    // Hold it full: a maxmemory below what Redis holds (noeviction evicts nothing), checked.
    await client.config('SET', 'maxmemory', String(Number(/used_memory:(\d+)/.exec(await client.info('memory'))?.[1]) - 256 * 1024));
    await assert.rejects(client.set('probe-full', 'x'), /OOM/);
    const full = Date.now();
    // Every entry's retry comes due within 3 s; give them 20 s on the full Redis.
    await waitFor('every entry answered 200 by staging', () => copies(staging.received, status).size === N, 60_000, 100);
    await new Promise((r) => setTimeout(r, Math.max(0, full + 20_000 - Date.now())));
    const failedWhileFull = await queue.getFailed(0, 1000).catch(() => []);
    const dupWhileFull = [...copies(staging.received, status).values()].reduce((a, n) => a + n - 1, 0);
    // Memory back.
    await client.del(filler);
    await client.config('SET', 'maxmemory', '0');
    await waitFor(
      'the retry queue to drain',
      async () => {
        const c = await queue.getJobCounts('wait', 'delayed', 'active', 'paused', 'prioritized');
        return Object.values(c).every((n) => n === 0);
      },
      120_000,
      200,
    );
    const failed = await queue.getFailed(0, 1000);
    const reasons = [...new Set(failed.map((j) => j.failedReason))];
    const duplicates = [...copies(staging.received, status).values()].reduce((a, n) => a + n - 1, 0);
    t.diagnostic(
      `while full: ${failedWhileFull.length} failed, ${dupWhileFull} extra 200 copies; after: ${failed.length} failed (${reasons.join(' | ')}), ${duplicates} extra 200 copies, max copies ${Math.max(...copies(staging.received, status).values())}`,
    );
    assert.equal(failed.length, 0, `entries staging answered 200 are in the failed set: ${reasons.join(' | ')}`);
    assert.ok(duplicates <= N, `extra completed copies ${duplicates} ≤ ${N}`);
  } finally {
    await client.del(filler).catch(() => undefined);
    await client.config('SET', 'maxmemory', '0').catch(() => undefined);
    await queue.close();
    connection.disconnect();
    client.disconnect();
    await w.close();
    await staging.close();
  }
});

test('Redis full while retry jobs keep failing (staging still 500): nothing lands in the failed set for want of memory; all arrive once memory is freed and staging is back', async (t) => {
  let healthy = false;
  const staging = await RecordingServer.start((_req, res) => void res.writeHead(healthy ? 200 : 500).end());
  const w = await InProcessWorker.start(redis, staging.url, {
    WORKER_CONCURRENCY: '8',
    REPLAY_BACKOFF_MS: '3000',
    RETRY_MAX_DELAY_MS: '3000',
    RETRY_WINDOW_MS: '600000',
    CLAIM_IDLE_MS: '2000',
  });
  const client = redis.client();
  const connection = redis.client();
  const queue = createRetryQueue(keysFor(w.config.prefix), connection);
  const N = 40;
  const filler = `filler${Date.now().toString(36)}`;
  try {
    await appendEntries(client, w.config.prefix, 'rf', N);
    await waitFor(
      'every entry in the retry queue',
      async () => {
        const c = await queue.getJobCounts('delayed', 'active', 'wait');
        return (c.delayed ?? 0) + (c.active ?? 0) + (c.wait ?? 0) === N;
      },
      60_000,
      50,
    );
    await client.config('SET', 'maxmemory', String((await usedMemory(client)) + 512 * 1024));
    for (let i = 0; i < 10_000; i++) {
      try {
        await client.xadd(filler, '*', 'b', Buffer.alloc(8192, 1));
      } catch (error) {
        assert.match((error as Error).message, /^OOM/);
        break;
      }
    }

    // Hold it full: a maxmemory below what Redis holds (noeviction evicts nothing), checked.
    await client.config('SET', 'maxmemory', String(Number(/used_memory:(\d+)/.exec(await client.info('memory'))?.[1]) - 256 * 1024));
    await assert.rejects(client.set('probe-full', 'x'), /OOM/);
    const triesBefore = staging.received.length;
    // 15 s on a full Redis with staging failing: every retry job fails again and BullMQ cannot
    // write its delay.
    await new Promise((r) => setTimeout(r, 15_000));
    const triesWhileFull = staging.received.length - triesBefore;
    const failedWhileFull = await queue.getFailed(0, 1000).catch(() => []);
    await client.del(filler);
    await client.config('SET', 'maxmemory', '0');
    healthy = true;
    await waitFor(
      'the retry queue to drain',
      async () => {
        const c = await queue.getJobCounts('wait', 'delayed', 'active', 'paused', 'prioritized');
        return Object.values(c).every((n) => n === 0);
      },
      120_000,
      200,
    );
    const failed = await queue.getFailed(0, 1000);
    const reasons = [...new Set(failed.map((j) => j.failedReason))];
    const ok = new Set(staging.received.filter((r) => r.receivedAt > 0).map((r) => header(r.rawHeaders, 'x-request-id')));
    t.diagnostic(
      `while full: ${triesWhileFull} tries at staging, ${failedWhileFull.length} failed; after: ${failed.length} failed (${reasons.join(' | ')}), ${ok.size} ids seen`,
    );
    assert.equal(failed.length, 0, `entries in the failed set because Redis was full: ${reasons.join(' | ')}`);
    // Delays are at least 1.5 s: 15 s allow about 10 tries per entry (+1, +slack), not a storm.
    assert.ok(triesWhileFull <= N * 12, `tries while full ${triesWhileFull} ≤ ${N * 12} (the policy's delays held)`);
  } finally {
    await client.del(filler).catch(() => undefined);
    await client.config('SET', 'maxmemory', '0').catch(() => undefined);
    await queue.close();
    connection.disconnect();
    client.disconnect();
    await w.close();
    await staging.close();
  }
});

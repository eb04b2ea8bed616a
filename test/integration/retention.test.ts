import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import { Queue } from 'bullmq';
import { keysFor, parseStreamRetention } from '@mirrorplane/core';
import { readStatus, trimStream, unfinishedBound } from '@mirrorplane/runtime';
import { RecordingServer, RedisServer, Stack, runCli, waitFor, useStack } from '../helpers/index.js';

let redis: RedisServer;
let client: Redis;

useStack({}, (s) => {
  redis = s.redis;
  client = s.client();
});

test('STREAM_RETENTION takes an age, an entry count, or both; anything else is named', async () => {
  assert.equal(parseStreamRetention('off'), null);
  assert.deepEqual(parseStreamRetention('1h'), { maxAgeMs: 3_600_000, maxEntries: null });
  assert.deepEqual(parseStreamRetention('500000'), { maxAgeMs: null, maxEntries: 500_000 });
  assert.deepEqual(parseStreamRetention('90m, 1000'), { maxAgeMs: 5_400_000, maxEntries: 1000 });
  assert.throws(() => parseStreamRetention('1GB'), /expected an age like 1h or 30m, an entry count like 500000, or both.*"1gb"/);
  assert.throws(() => parseStreamRetention('1h,2h'), /two ages/);
  const bad = await runCli(['status'], { REDIS_URL: redis.url, STREAM_RETENTION: 'forever' });
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /STREAM_RETENTION: expected an age/);
});

/** A stream of `n` entries at the given times, a group that took `delivered` and finished `acked` of them. */
async function setUp(times: number[], delivered: number, acked: number) {
  const keys = keysFor(`t${randomBytes(4).toString('hex')}`);
  const ids: string[] = [];
  for (const t of times) ids.push((await client.xadd(keys.stream, `${t}-0`, 'v', '1')) as string);
  await client.xgroup('CREATE', keys.stream, keys.group, '0');
  if (delivered > 0) await client.xreadgroup('GROUP', keys.group, 'c1', 'COUNT', delivered, 'STREAMS', keys.stream, '>');
  if (acked > 0) await client.xack(keys.stream, keys.group, ...ids.slice(0, acked));
  return { keys, ids };
}

async function remaining(stream: string): Promise<string[]> {
  return (await client.xrange(stream, '-', '+')).map(([id]) => id);
}

test('trimming by age removes finished entries only: never pending ones, never the backlog', async () => {
  const now = Date.now();
  const old = Array.from({ length: 10 }, (_, i) => now - 7_200_000 + i);
  const { keys, ids } = await setUp(old, 6, 4);
  assert.equal(await unfinishedBound(client, keys), ids[4], 'the oldest pending entry');
  const retention = { maxAgeMs: 3_600_000, maxEntries: null };
  assert.equal(await trimStream(client, keys, retention, now), 4);
  assert.deepEqual(await remaining(keys.stream), ids.slice(4), 'pending 5 and 6 and the backlog 7-10 stay');
  await client.xack(keys.stream, keys.group, ids[4]!, ids[5]!);
  assert.equal(await trimStream(client, keys, retention, now), 2);
  assert.deepEqual(await remaining(keys.stream), ids.slice(6), 'the backlog was never delivered: it stays, however old');
  // Young finished entries stay for the retention.
  const young = await setUp([now - 1000, now - 500], 2, 2);
  assert.equal(await trimStream(client, young.keys, retention, now), 0);
  assert.equal(await client.xlen(young.keys.stream), 2);
});

test('trimming by count keeps the newest N finished entries and every unfinished one', async () => {
  const now = Date.now();
  const times = Array.from({ length: 2500 }, (_, i) => now - 10_000 + i);
  const all = await setUp(times, 2500, 2500);
  assert.equal(await trimStream(client, all.keys, { maxAgeMs: null, maxEntries: 3 }, now), 2497);
  assert.deepEqual(await remaining(all.keys.stream), all.ids.slice(-3));

  const some = await setUp(times.slice(0, 10), 10, 7);
  assert.equal(await trimStream(client, some.keys, { maxAgeMs: null, maxEntries: 1 }, now), 7);
  assert.deepEqual(await remaining(some.keys.stream), some.ids.slice(7), 'the three pending entries stay beyond the count');
  // No group yet: nothing is known to be finished.
  const keys = keysFor(`t${randomBytes(4).toString('hex')}`);
  await client.xadd(keys.stream, '*', 'v', '1');
  assert.equal(await trimStream(client, keys, { maxAgeMs: 1, maxEntries: 1 }, now + 10_000), 0);
});

test('with a retention, workers keep finished entries and status still counts the backlog right', async () => {
  const staging = await RecordingServer.start();
  const stack = await Stack.start({ redis, stagingUrl: staging.url, env: { STREAM_RETENTION: '1h,15' } });
  try {
    for (let i = 0; i < 20; i++) {
      assert.equal((await fetch(`http://127.0.0.1:${stack.ingressPort}/kept/${i}`, { method: 'POST', body: `b${i}` })).status, 200);
    }
    const status = await waitFor('every entry replayed', async () => {
      const s = await stack.status();
      return s.replayed === 20 ? s : null;
    });
    assert.equal(status.backlog, 0, 'finished entries kept in the stream are not backlog');
    assert.equal(status.pending, 0);
    const keys = keysFor(stack.env.MIRRORPLANE_PREFIX!);
    // The worker's trimmer brings the stream down to the newest 15, which it keeps.
    await waitFor('the count limit to apply', async () => (await client.xlen(keys.stream)) === 15);
    const kept = await client.xrange(keys.stream, '-', '+');
    assert.equal(kept.length, 15);
    const queue = new Queue(keys.retryQueue, { connection: { host: '127.0.0.1', port: redis.port }, prefix: keys.bullPrefix });
    try {
      const direct = await readStatus(client, queue, keys);
      assert.equal(direct.backlog, 0);
      assert.equal(direct.accepted, 20);
    } finally {
      await queue.close();
    }
    assert.equal(staging.received.length, 20);
  } finally {
    await stack.close();
    await staging.close();
  }
});

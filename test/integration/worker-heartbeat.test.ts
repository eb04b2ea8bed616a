import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import type { Redis } from 'ioredis';
import { keysFor } from '@mirrorplane/core';
import { ensureGroup, listWorkers } from '@mirrorplane/runtime';
import { RecordingServer, RedisServer, header, runCli, waitFor, type Received, useStack } from '../helpers/index.js';
import { InProcessWorker, appendEntries } from '../helpers/in-process-worker.js';

// Issue 11, fault 7: workers write heartbeats, a new idle worker is listed at once, and dead
// consumers are pruned from the group once they hold nothing.

let redis: RedisServer;
useStack({}, (s) => {
  redis = s.redis;
});

async function consumers(client: Redis, prefix: string): Promise<Map<string, number>> {
  const keys = keysFor(prefix);
  const rows = (await client.xinfo('CONSUMERS', keys.stream, keys.group)) as unknown[][];
  return new Map(rows.map((r) => [String(r[1]), Number(r[3])]));
}

test('a new idle worker is listed at once with what it holds; a stopped one leaves the list', async () => {
  const staging = await RecordingServer.start();
  const client = redis.client();
  const w = await InProcessWorker.start(redis, staging.url, { HEARTBEAT_MS: '200', WORKER_CONCURRENCY: '7' });
  try {
    // No replay yet, no wait: listed as soon as start() resolved.
    const [listed] = await listWorkers(client, w.config.prefix);
    assert.ok(listed);
    assert.equal(listed.consumer, w.worker.consumer);
    assert.equal(listed.pid, process.pid);
    assert.equal(listed.concurrency, 7);
    assert.equal(listed.inFlight, 0);
    assert.match(listed.version, /^\d+\.\d+\.\d+/);
    assert.ok(Date.now() - listed.lastSeen < 5000);
    // `status --json` carries them too.
    const status = await runCli(['status', '--json'], { REDIS_URL: redis.url, MIRRORPLANE_PREFIX: w.config.prefix });
    assert.equal(status.code, 0, status.stderr);
    assert.deepEqual(
      (JSON.parse(status.stdout) as { workers: { consumer: string }[] }).workers.map((x) => x.consumer),
      [w.worker.consumer],
    );
  } finally {
    await w.close();
  }
  try {
    assert.deepEqual(await listWorkers(client, w.config.prefix), [], 'a worker that stopped is not listed');
  } finally {
    client.disconnect();
    await staging.close();
  }
});

test('the heartbeat says how many entries a worker holds, as XPENDING does', async () => {
  const held: (() => void)[] = [];
  const staging = await RecordingServer.start((_req: Received, res) => void held.push(() => res.writeHead(200).end()));
  const client = redis.client();
  const w = await InProcessWorker.start(redis, staging.url, { HEARTBEAT_MS: '200', WORKER_CONCURRENCY: '16' });
  try {
    const keys = keysFor(w.config.prefix);
    await appendEntries(client, w.config.prefix, 'held', 5);
    await waitFor('five replays held at staging', () => held.length === 5);
    const beat = await waitFor('a heartbeat with 5 in flight', async () => {
      const [b] = await listWorkers(client, w.config.prefix);
      return b && b.inFlightEntries === 5 ? b : null;
    });
    const pending = (await client.xpending(keys.stream, keys.group)) as [number, string, string, [string, string][]];
    assert.deepEqual(pending[3], [[w.worker.consumer, '5']]);
    assert.equal(beat.inFlightEntries + beat.unacked, Number(pending[0]));
    for (const answer of held.splice(0)) answer();
    await waitFor('a heartbeat with nothing in flight', async () => {
      const [b] = await listWorkers(client, w.config.prefix);
      return b?.inFlight === 0 && b.unacked === 0;
    });
  } finally {
    for (const answer of held.splice(0)) answer();
    await w.close();
    client.disconnect();
    await staging.close();
  }
});

test('dead consumers are pruned once they hold nothing; one holding entries stays until they are taken over', async () => {
  const staging = await RecordingServer.start();
  const client = redis.client();
  const prefix = `t${randomBytes(4).toString('hex')}`;
  const keys = keysFor(prefix);
  await ensureGroup(client, keys.stream, keys.group);
  // Two workers that died: one idle, one holding two entries it read and never finished.
  await client.xgroup('CREATECONSUMER', keys.stream, keys.group, 'dead-idle');
  await appendEntries(client, prefix, 'orphan', 2);
  await client.xreadgroup('GROUP', keys.group, 'dead-holding', 'COUNT', 2, 'STREAMS', keys.stream, '>');
  const w = await InProcessWorker.start(redis, staging.url, { HEARTBEAT_MS: '200', CLAIM_IDLE_MS: '600' }, prefix);
  try {
    await waitFor('the idle dead consumer pruned', async () => !(await consumers(client, prefix)).has('dead-idle'), 30_000, 50);
    // The holding one is never removed while it holds entries (that would drop them).
    const seen = await consumers(client, prefix);
    if (seen.has('dead-holding')) assert.equal(seen.get('dead-holding'), 0, 'never pruned while holding');
    await waitFor('its entries taken over and replayed', () => new Set(staging.received.map((r) => header(r.rawHeaders, 'x-request-id'))).size === 2, 30_000);
    await waitFor('the holding dead consumer pruned once empty', async () => !(await consumers(client, prefix)).has('dead-holding'), 30_000, 50);
    assert.ok((await consumers(client, prefix)).has(w.worker.consumer), 'the live worker stays');
    assert.ok(w.logged('removed a dead consumer from the group'));
  } finally {
    await w.close();
    client.disconnect();
    await staging.close();
  }
});

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Redis } from 'ioredis';
import { partitionKeys, partitionOf, parsePartitionKey, createPartitioner, qualifyId, splitId } from '@mirrorplane/core';
import { RecordingServer, RedisServer, Stack, freePort, header, runCli, waitFor, useStack } from '../helpers/index.js';

let redis: RedisServer;
let client: Redis;

useStack({}, (s) => {
  redis = s.redis;
  client = s.client();
});

test('partition keys, the partitioner and qualified ids', () => {
  const keys = partitionKeys('shop', 3);
  assert.deepEqual(
    keys.map((k) => k.stream),
    ['{shop}:stream', '{shop~1}:stream', '{shop~2}:stream'],
  );
  assert.deepEqual(
    keys.map((k) => k.replayed),
    ['{shop}:replayed', '{shop~1}:replayed', '{shop~2}:replayed'],
  );
  assert.ok(
    keys.every((k) => k.bullPrefix === '{shop}' && k.group === 'workers'),
    'one retry queue, with partition 0',
  );
  assert.equal(partitionOf('abc', 8), partitionOf('abc', 8), 'stable');
  const spread = new Set(Array.from({ length: 200 }, (_, i) => partitionOf(`req-${i}`, 4)));
  assert.equal(spread.size, 4);
  assert.deepEqual(parsePartitionKey('header:X-Session-Id'), { kind: 'header', name: 'x-session-id' });
  assert.throws(() => parsePartitionKey('cookie'), /expected request-id or header:<name>/);
  const bySession = createPartitioner(4, { kind: 'header', name: 'x-session' });
  assert.equal(bySession({ 'x-session': 's1' }), partitionOf('s1', 4));
  const turns = new Set(Array.from({ length: 4 }, () => bySession({})));
  assert.equal(turns.size, 4, 'requests without a key take turns');
  assert.equal(qualifyId('1-0', 0), '1-0');
  assert.deepEqual(splitId(qualifyId('1700000000000-3', 2)), { id: '1700000000000-3', partition: 2 });
});

test('PARTITIONS=4: the ingress spreads by request id, workers drain every partition, status and metrics add up', async () => {
  const staging = await RecordingServer.start();
  const env = { PARTITIONS: '4', STREAM_RETENTION: '1h', WORKER_CONCURRENCY: '8' };
  const stack = await Stack.start({ redis, stagingUrl: staging.url, workers: 0, env });
  const admins = [await freePort(), await freePort()];
  try {
    for (const admin of admins) await stack.addWorker({ ADMIN_PORT: String(admin) });
    for (let i = 0; i < 200; i++) {
      const res = await fetch(`http://127.0.0.1:${stack.ingressPort}/p/${i}`, { method: 'POST', body: `part ${i}`, headers: { 'x-request-id': `req-${i}` } });
      assert.equal(res.status, 200);
    }
    await waitFor('every request at staging', () => new Set(staging.received.map((r) => header(r.rawHeaders, 'x-request-id'))).size === 200, 60_000);
    for (const r of staging.received) assert.equal(r.body.toString(), `part ${r.url.slice(3)}`, 'byte for byte');

    // Each request sits in the stream of its request id's partition (kept by the retention).
    const keys = partitionKeys(stack.env.MIRRORPLANE_PREFIX!, 4);
    let total = 0;
    for (const [p, k] of keys.entries()) {
      const entries = await client.xrange(k.stream, '-', '+');
      assert.ok(entries.length > 20, `partition ${p} holds ${entries.length}`);
      for (const [, fields] of entries) {
        const reqId = fields[fields.indexOf('r') + 1] as string;
        assert.equal(partitionOf(reqId, 4), p, `${reqId} in partition ${p}`);
      }
      total += entries.length;
    }
    assert.equal(total, 200);
    // The entry ids staging saw name their partition: the same stream id in two partitions stays two entries.
    const ids = staging.received.map((r) => header(r.rawHeaders, 'x-mirrorplane-id')!);
    assert.equal(new Set(ids).size, staging.received.length);
    assert.ok(ids.some((id) => /~[123]$/.test(id)) && ids.some((id) => !id.includes('~')));

    const status = await waitFor('status to add up', async () => {
      const s = await stack.status();
      return s.replayed === 200 && s.backlog === 0 && s.pending === 0 ? s : null;
    });
    assert.equal((status as unknown as { accepted: number }).accepted, 200);
    assert.equal((status as unknown as { consumers: unknown[] }).consumers.length, 2, 'a consumer appears once, whatever its partitions');

    const scrape = async (port: number) => await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
    const labels = `prefix="${stack.env.MIRRORPLANE_PREFIX}"`;
    const text = await waitFor('the deployment gauges', async () => {
      const texts = await Promise.all(admins.map(scrape));
      return texts.find((t) => t.includes(`mirrorplane_deployment_replayed_total{${labels}} 200`));
    });
    for (const p of [0, 1, 2, 3]) assert.match(text, new RegExp(`mirrorplane_stream_backlog_entries\\{${labels},partition="${p}"\\} 0`));
    assert.match(text, new RegExp(`mirrorplane_deployment_accepted_total\\{${labels}\\} 200`));
  } finally {
    await stack.close();
    await staging.close();
  }
});

test('PARTITION_KEY=header:x-session keeps a session in one partition, in order; replay appends to the right partition', async () => {
  const staging = await RecordingServer.start();
  const stack = await Stack.start({
    redis,
    stagingUrl: staging.url,
    env: { PARTITIONS: '3', PARTITION_KEY: 'header:x-session', STREAM_RETENTION: '1h', WORKER_CONCURRENCY: '1' },
  });
  try {
    for (let i = 0; i < 30; i++) {
      const res = await fetch(`http://127.0.0.1:${stack.ingressPort}/s/${i}`, {
        method: 'PUT',
        body: String(i),
        headers: { 'x-session': `session-${i % 5}`, 'x-request-id': `s-${i}` },
      });
      assert.equal(res.status, 200);
    }
    await waitFor('30 at staging', () => staging.received.length === 30, 60_000);
    for (let s = 0; s < 5; s++) {
      const seen = staging.received.filter((r) => header(r.rawHeaders, 'x-session') === `session-${s}`).map((r) => Number(r.body.toString()));
      assert.deepEqual(
        seen,
        [...seen].sort((a, b) => a - b),
        `session-${s} in order`,
      );
      const partitions = new Set(
        staging.received
          .filter((r) => header(r.rawHeaders, 'x-session') === `session-${s}`)
          .map((r) => splitId(header(r.rawHeaders, 'x-mirrorplane-id')!).partition),
      );
      assert.deepEqual([...partitions], [partitionOf(`session-${s}`, 3)]);
    }
    const replay = await runCli(['replay', '--from', '-5m', '--speed', 'max', '--filter', 'header.x-session=^session-2$'], stack.env);
    assert.equal(replay.code, 0, replay.stderr);
    assert.match(replay.stdout, /read 30, filtered out 24/);
    await waitFor('the session replayed again', () => staging.received.length === 36, 60_000);
    const again = staging.received.slice(30);
    assert.ok(again.every((r) => header(r.rawHeaders, 'x-session') === 'session-2'));
    assert.deepEqual(
      again.map((r) => Number(r.body.toString())),
      [2, 7, 12, 17, 22, 27],
      'in the original order',
    );
    assert.ok(again.every((r) => splitId(header(r.rawHeaders, 'x-mirrorplane-id')!).partition === partitionOf('session-2', 3)));
  } finally {
    await stack.close();
    await staging.close();
  }
});

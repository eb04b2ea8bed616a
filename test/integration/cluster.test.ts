import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { Cluster, Redis } from 'ioredis';
import { keysFor, parseRedisUrl, partitionKeys } from '@mirrorplane/core';
import { RecordingServer, RedisCluster, Stack, header, waitFor } from '../helpers/index.js';

let cluster: RedisCluster;

before(async () => {
  cluster = await RedisCluster.start();
});

after(async () => {
  await cluster?.close();
});

test('Redis URLs: one Redis, a cluster, Sentinel; bad ones say why', () => {
  assert.deepEqual(parseRedisUrl('redis+cluster://u:p%40ss@10.0.0.1:7000,10.0.0.2:7001'), {
    mode: 'cluster',
    nodes: [
      { host: '10.0.0.1', port: 7000 },
      { host: '10.0.0.2', port: 7001 },
    ],
    username: 'u',
    password: 'p@ss',
    tls: false,
    db: 0,
    masterName: null,
    sentinelPassword: null,
  });
  const sentinel = parseRedisUrl('rediss+sentinel://:secret@s1,s2:26380/mymaster/2?sentinelPassword=sp');
  assert.equal(sentinel.mode, 'sentinel');
  assert.deepEqual(sentinel.nodes, [
    { host: 's1', port: 26379 },
    { host: 's2', port: 26380 },
  ]);
  assert.equal(sentinel.masterName, 'mymaster');
  assert.equal(sentinel.db, 2);
  assert.equal(sentinel.tls, true);
  assert.equal(sentinel.password, 'secret');
  assert.equal(sentinel.sentinelPassword, 'sp');
  assert.equal(parseRedisUrl('redis://[::1]:6380/3').nodes[0]?.host, '::1');
  assert.throws(() => parseRedisUrl('redis://a:1,b:2'), /several hosts need redis\+cluster/);
  assert.throws(() => parseRedisUrl('redis+sentinel://s1:26379'), /names the master/);
  assert.throws(() => parseRedisUrl('redis+cluster://a:7000/1'), /one database/);
  assert.throws(() => parseRedisUrl('http://x'), /expected a URL like redis:\/\//);
});

test('on a 3-node Redis Cluster: ingress, workers, retries, the failed set and status work as on one Redis', async () => {
  let failing = true;
  const staging = await RecordingServer.start((req, res) => void res.writeHead(failing && req.url.startsWith('/fail') ? 503 : 200).end());
  // Two deployments whose hash tags land on different nodes: each keeps its keys together.
  const prefixes: string[] = [];
  for (let i = 0; prefixes.length < 2 && i < 200; i++) {
    const p = `tc${i}`;
    if (prefixes.length === 0 || cluster.nodeOf(keysFor(p).stream) !== cluster.nodeOf(keysFor(prefixes[0]!).stream)) prefixes.push(p);
  }
  const stacks = await Promise.all(
    prefixes.map((prefix) =>
      Stack.start({
        redis: { url: cluster.url } as never,
        stagingUrl: staging.url,
        env: { MIRRORPLANE_PREFIX: prefix, REPLAY_ATTEMPTS: '2', REPLAY_BACKOFF_MS: '50', STREAM_RETENTION: '1h' },
      }),
    ),
  );
  try {
    for (const [s, stack] of stacks.entries()) {
      for (let i = 0; i < 20; i++) {
        const path = i < 2 ? `/fail/${s}-${i}` : `/ok/${s}-${i}`;
        const res = await fetch(`http://127.0.0.1:${stack.ingressPort}${path}`, {
          method: 'POST',
          body: `body ${s} ${i}`,
          headers: { 'x-request-id': `${s}-${i}` },
        });
        assert.equal(res.status, 200);
      }
    }
    for (const stack of stacks) {
      await waitFor(
        '18 replayed and 2 failed',
        async () => {
          const st = await stack.status();
          return st.replayed === 18 && st.failed === 2 && st.backlog === 0 && st.pending === 0 && st.retrying === 0;
        },
        60_000,
      );
    }
    const ok = staging.received.filter((r) => r.url.startsWith('/ok/'));
    assert.equal(ok.length, 36);
    for (const r of ok) assert.equal(r.body.toString(), `body ${r.url.slice(4).replace('-', ' ')}`, 'byte for byte');

    // The keys of each deployment live on its own node, all of them.
    const nodes = prefixes.map((p) => cluster.nodeOf(keysFor(p).stream));
    assert.notEqual(nodes[0], nodes[1]);
    for (const [i, p] of prefixes.entries()) {
      const node = new Redis(nodes[i]!, '127.0.0.1');
      try {
        const keys = await node.keys(`{${p}}:*`);
        assert.ok(
          keys.includes(`{${p}}:stream`) && keys.some((k) => k.startsWith(`{${p}}:retry:`)),
          `stream and queue together on ${nodes[i]}: ${keys.join(' ')}`,
        );
      } finally {
        node.disconnect();
      }
    }

    // failed replay through BullMQ on the cluster.
    failing = false;
    const replay = await stacks[0]!.cli(['failed', 'replay', '--all']);
    assert.equal(replay.code, 0, replay.stderr);
    assert.match(replay.stdout, /replayed 2 failed entries/);
    await waitFor(
      'the failed entries replayed',
      async () => {
        const st = await stacks[0]!.status();
        return st.replayed === 20 && st.failed === 0;
      },
      60_000,
    );
    const tries = staging.received.filter((r) => r.url.startsWith('/fail/0-'));
    assert.ok(tries.length >= 6, `each failed entry was tried twice, then replayed once more (${tries.length})`);
    assert.equal(new Set(tries.map((r) => header(r.rawHeaders, 'x-mirrorplane-id'))).size, 2, 'the same two entries throughout');

    // The cluster client sees one consistent deployment.
    const client = new Cluster([{ host: '127.0.0.1', port: cluster.ports[0]! }]);
    try {
      assert.equal(await client.xlen(keysFor(prefixes[1]!).stream), 20, 'kept for the retention');
    } finally {
      client.disconnect();
    }
  } finally {
    await Promise.all(stacks.map((s) => s.close()));
    await staging.close();
  }
});

test('PARTITIONS on a cluster: the partitions of one deployment land on different shards and all drain', async () => {
  const staging = await RecordingServer.start();
  const prefix = 'tcpart';
  const parts = partitionKeys(prefix, 6);
  const nodes = new Set(parts.map((k) => cluster.nodeOf(k.stream)));
  assert.ok(nodes.size >= 2, `six partitions spread over ${nodes.size} nodes`);
  const stack = await Stack.start({
    redis: { url: cluster.url } as never,
    stagingUrl: staging.url,
    workers: 2,
    env: { MIRRORPLANE_PREFIX: prefix, PARTITIONS: '6', STREAM_RETENTION: '1h' },
  });
  try {
    for (let i = 0; i < 60; i++) {
      const res = await fetch(`http://127.0.0.1:${stack.ingressPort}/cp/${i}`, { method: 'POST', body: `cp ${i}`, headers: { 'x-request-id': `cp-${i}` } });
      assert.equal(res.status, 200);
    }
    const status = await waitFor(
      'all 60 replayed',
      async () => {
        const st = await stack.status();
        return st.replayed === 60 && st.backlog === 0 && st.pending === 0 ? st : null;
      },
      60_000,
    );
    assert.equal(status.failed, 0);
    assert.equal(new Set(staging.received.map((r) => header(r.rawHeaders, 'x-request-id'))).size, 60);
    const client = new Cluster([{ host: '127.0.0.1', port: cluster.ports[0]! }]);
    try {
      const lengths = await Promise.all(parts.map((k) => client.xlen(k.stream)));
      assert.equal(
        lengths.reduce((a, b) => a + b, 0),
        60,
      );
      assert.ok(lengths.filter((n) => n > 0).length >= 4, `spread: ${lengths.join(' ')}`);
    } finally {
      client.disconnect();
    }
  } finally {
    await stack.close();
    await staging.close();
  }
});

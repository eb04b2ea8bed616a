import { test } from 'node:test';
import assert from 'node:assert/strict';
import { keysFor } from '@mirrorplane/core';
import { RecordingServer, RedisServer, waitFor, useStack } from '../helpers/index.js';
import { countCopies } from './steady-load.js';
import { InProcessWorker, appendEntries } from '../helpers/in-process-worker.js';

// Hostile pass on issue 11, fault 1's kind. docs/RELIABILITY.md §1: "A request is repeated only
// when a worker died (or was stopped past its deadline) while the request was in flight". Here no
// worker dies: two (or three) live workers, staging healthy but slower than CLAIM_IDLE_MS / 2,
// some replays much slower. A live worker's running entry must never be taken over by another
// live worker (its refresh must keep it), so staging gets each request exactly once; and every
// slot comes back.

let redis: RedisServer;
useStack({}, (s) => {
  redis = s.redis;
});

const cases = [
  {
    name: "the issue's numbers: 700 ms staging, CLAIM_IDLE_MS=1000, concurrency 64, two workers",
    workers: 2,
    concurrency: 64,
    claimIdle: 1000,
    count: 600,
    delay: (_i: number) => 700,
  },
  {
    name: 'mixed fast/slow (10 ms / 1.5 × CLAIM_IDLE_MS), CLAIM_IDLE_MS=400, concurrency 8, three workers',
    workers: 3,
    concurrency: 8,
    claimIdle: 400,
    count: 200,
    delay: (i: number) => (i % 4 === 0 ? 600 : 10),
  },
  {
    name: 'concurrency 1, staging 3 × CLAIM_IDLE_MS, CLAIM_IDLE_MS=200, two workers',
    workers: 2,
    concurrency: 1,
    claimIdle: 200,
    count: 20,
    delay: (_i: number) => 600,
  },
];

for (const c of cases) {
  test(`live workers never replay each other's running entries — ${c.name}`, async (t) => {
    let i = 0;
    const staging = await RecordingServer.start((_req, res) => void setTimeout(() => res.writeHead(200).end('ok'), c.delay(i++)));
    const env = { CLAIM_IDLE_MS: String(c.claimIdle), WORKER_CONCURRENCY: String(c.concurrency) };
    const first = await InProcessWorker.start(redis, staging.url, env);
    const workers = [first];
    for (let k = 1; k < c.workers; k++) workers.push(await InProcessWorker.start(redis, staging.url, env, first.config.prefix));
    const client = redis.client();
    const keys = keysFor(first.config.prefix);
    try {
      await appendEntries(client, first.config.prefix, 'live', c.count);
      await waitFor(`all ${c.count} at staging`, () => countCopies(staging.received).size === c.count, 180_000, 100);
      await waitFor(
        'drained: stream empty, nothing pending, no slot held',
        async () => {
          const pending = (await client.xpending(keys.stream, keys.group)) as [number];
          return (await client.xlen(keys.stream)) === 0 && Number(pending[0]) === 0 && workers.every((w) => w.worker.load.inFlight === 0);
        },
        60_000,
        100,
      );
      const copies = [...countCopies(staging.received).values()];
      const extra = copies.reduce((a, n) => a + n - 1, 0);
      const takeovers = workers.reduce((a, w) => a + w.logs.filter((l) => l.msg === 'took over an abandoned entry').length, 0);
      t.diagnostic(
        `${c.count} requests, ${staging.received.length} copies at staging, ${extra} extra (max ${Math.max(...copies)} of one), ${takeovers} takeovers logged by live workers`,
      );
      assert.equal(extra, 0, `no request repeated while every worker is alive (${extra} extra copies, ${takeovers} takeovers)`);
    } finally {
      client.disconnect();
      for (const w of workers) await w.close();
      await staging.close();
    }
  });
}

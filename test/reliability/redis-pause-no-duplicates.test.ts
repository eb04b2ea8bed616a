import { test } from 'node:test';
import assert from 'node:assert/strict';
import { keysFor } from '@mirrorplane/core';
import { RecordingServer, RedisServer, waitFor, useStack } from '../helpers/index.js';
import { countCopies } from './steady-load.js';
import { InProcessWorker, appendEntries } from '../helpers/in-process-worker.js';

// Hostile pass on issue 11: Redis paused (SIGSTOP) for longer than CLAIM_IDLE_MS while two live
// workers replay to a slow but healthy staging. Redis's clock runs on while it is stopped, so on
// SIGCONT every pending entry looks idle: whichever worker's XAUTOCLAIM reaches Redis before the
// owner's refresh takes over entries that are still running at their owner. docs/RELIABILITY.md
// §1: "A request is repeated only when a worker died (or was stopped past its deadline) while the
// request was in flight" — no worker dies here.

let redis: RedisServer;

useStack({}, (s) => {
  redis = s.redis;
  s.defer(() => s.redis.signal('SIGCONT'));
});

test('Redis paused longer than CLAIM_IDLE_MS under two live workers: no request is repeated', async (t) => {
  const staging = await RecordingServer.start((_req, res) => void setTimeout(() => res.writeHead(200).end('ok'), 1500));
  const env = { CLAIM_IDLE_MS: '1000', WORKER_CONCURRENCY: '16' };
  const a = await InProcessWorker.start(redis, staging.url, env);
  const b = await InProcessWorker.start(redis, staging.url, env, a.config.prefix);
  const client = redis.client();
  const keys = keysFor(a.config.prefix);
  const N = 200;
  try {
    await appendEntries(client, a.config.prefix, 'pause', N);
    // Bounded: three pauses of 2.5 s, each while replays run at both workers.
    for (let round = 0; round < 3; round++) {
      await waitFor('both workers busy', () => a.worker.load.inFlight > 0 && b.worker.load.inFlight > 0, 30_000, 20);
      redis.signal('SIGSTOP');
      try {
        await new Promise((r) => setTimeout(r, 2500));
      } finally {
        redis.signal('SIGCONT');
      }
      await new Promise((r) => setTimeout(r, 300));
    }
    await waitFor(`all ${N} at staging`, () => countCopies(staging.received).size === N, 120_000, 100);
    await waitFor(
      'drained',
      async () => {
        const pending = (await client.xpending(keys.stream, keys.group)) as [number];
        return (await client.xlen(keys.stream)) === 0 && Number(pending[0]) === 0 && a.worker.load.inFlight === 0 && b.worker.load.inFlight === 0;
      },
      60_000,
      100,
    );
    const copies = [...countCopies(staging.received).values()];
    const extra = copies.reduce((s, n) => s + n - 1, 0);
    const takeovers = [a, b].reduce((s, w) => s + w.logs.filter((l) => l.msg === 'took over an abandoned entry').length, 0);
    t.diagnostic(`${N} requests, ${extra} extra copies (max ${Math.max(...copies)}), ${takeovers} takeovers by live workers`);
    assert.equal(extra, 0, `requests repeated although no worker died (${extra} extra copies, ${takeovers} takeovers)`);
  } finally {
    redis.signal('SIGCONT');
    client.disconnect();
    await a.close();
    await b.close();
    await staging.close();
  }
});

test("Redis paused longer than CLAIM_IDLE_MS while an idle live worker has free slots: it does not take over the busy worker's running entries", async (t) => {
  // Staging slower than the pauses: A's entries run through every pause; B has nothing to do,
  // so its claimer sends XAUTOCLAIM (nothing of its own to refresh) that Redis answers on SIGCONT.
  const staging = await RecordingServer.start((_req, res) => void setTimeout(() => res.writeHead(200).end('ok'), 9000));
  const env = { CLAIM_IDLE_MS: '1000', WORKER_CONCURRENCY: '4' };
  const a = await InProcessWorker.start(redis, staging.url, env);
  const client = redis.client();
  const keys = keysFor(a.config.prefix);
  const N = 4;
  let b: Awaited<ReturnType<typeof InProcessWorker.start>> | null = null;
  try {
    await appendEntries(client, a.config.prefix, 'idle', N);
    await waitFor('A runs every entry', () => a.worker.load.inFlight === N, 30_000, 20);
    b = await InProcessWorker.start(redis, staging.url, env, a.config.prefix);
    for (let round = 0; round < 3; round++) {
      redis.signal('SIGSTOP');
      try {
        await new Promise((r) => setTimeout(r, 2000));
      } finally {
        redis.signal('SIGCONT');
      }
      await new Promise((r) => setTimeout(r, 300));
    }
    await waitFor(`all ${N} at staging`, () => countCopies(staging.received).size === N, 60_000, 100);
    await waitFor(
      'drained',
      async () => {
        const pending = (await client.xpending(keys.stream, keys.group)) as [number];
        return Number(pending[0]) === 0 && a.worker.load.inFlight === 0 && b!.worker.load.inFlight === 0;
      },
      60_000,
      100,
    );
    const copies = [...countCopies(staging.received).values()];
    const extra = copies.reduce((s, n) => s + n - 1, 0);
    const takeovers = b.logs.filter((l) => l.msg === 'took over an abandoned entry').length;
    t.diagnostic(`${N} requests, ${extra} extra copies, ${takeovers} takeovers by the idle worker`);
    assert.equal(extra, 0, `requests repeated although no worker died (${extra} extra copies, ${takeovers} takeovers)`);
  } finally {
    redis.signal('SIGCONT');
    client.disconnect();
    await a.close();
    await b?.close();
    await staging.close();
  }
});

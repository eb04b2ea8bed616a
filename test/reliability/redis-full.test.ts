import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { Redis } from 'ioredis';
import { encodeEntryFields, keysFor } from '@mirrorplane/core';
import { ensureGroup } from '@mirrorplane/runtime';
import { RecordingServer, RedisServer, header, waitFor, type Received, useStack, withDeadline } from '../helpers/index.js';
import { InProcessWorker } from '../helpers/in-process-worker.js';

// Issue 11, fault 2: Redis at maxmemory with noeviction. Acknowledging and deleting finished
// entries must work on a full Redis (that is what frees it), a worker must start on one, and a
// finished entry must never be replayed again because its acknowledgement was refused.

let redis: RedisServer;
useStack({ redis: { args: ['--maxmemory-policy', 'noeviction'] } }, (s) => {
  redis = s.redis;
});

async function usedMemory(client: Redis): Promise<number> {
  const info = await client.info('memory');
  return Number(/used_memory:(\d+)/.exec(info)?.[1]);
}

/** Appends entries with 8 KiB bodies until Redis answers OOM; returns the request ids stored. */
async function fillUntilFull(client: Redis, prefix: string, tag: string): Promise<string[]> {
  const keys = keysFor(prefix);
  const stored: string[] = [];
  for (let i = 0; i < 100_000; i++) {
    const body = Buffer.alloc(8192, i % 256);
    try {
      await client.xadd(
        keys.stream,
        '*',
        ...encodeEntryFields({
          method: 'PUT',
          target: `/${tag}/${i}`,
          rawHeaders: ['Host', 'app.test', 'X-Request-ID', `${tag}-${i}`],
          body,
          receivedAt: Date.now(),
          requestId: `${tag}-${i}`,
          clientAddress: null,
        }),
      );
      stored.push(`${tag}-${i}`);
    } catch (error) {
      assert.match((error as Error).message, /^OOM/);
      return stored;
    }
  }
  throw new Error('Redis never filled up');
}

// bullmq's stalled-job checker, if a worker closes while it runs a check, arms its next wait
// (RETRY_STALL_CHECK_MS, 30 s by default) after the close and keeps this file's process alive that
// long after its last test. No test here involves retry jobs; 1 s bounds that wait.
const STALL = { RETRY_STALL_CHECK_MS: '1000' };

function copies(received: Received[]): Map<string, number> {
  const out = new Map<string, number>();
  for (const r of received) {
    const id = header(r.rawHeaders, 'x-request-id') as string;
    out.set(id, (out.get(id) ?? 0) + 1);
  }
  return out;
}

/** A staging that holds every answer until `open()`. */
function gatedStaging() {
  let open = false;
  const held: (() => void)[] = [];
  return {
    responder: (_req: Received, res: import('node:http').ServerResponse) => {
      const answer = () => void res.writeHead(200).end();
      if (open) answer();
      else held.push(answer);
    },
    open() {
      open = true;
      for (const a of held.splice(0)) a();
    },
  };
}

test('a running worker drains a full Redis: acknowledgements free memory, nothing is replayed twice', async (t) => {
  const gate = gatedStaging();
  const staging = await RecordingServer.start(gate.responder);
  const client = redis.client();
  await client.config('SET', 'maxmemory', '0');
  const w = await InProcessWorker.start(redis, staging.url, { ...STALL, WORKER_CONCURRENCY: '16', CLAIM_IDLE_MS: '1000' });
  try {
    const keys = keysFor(w.config.prefix);
    // Full: a little above what Redis holds now, so entries fill it within a few hundred.
    await client.config('SET', 'maxmemory', String((await usedMemory(client)) + 3 * 1024 * 1024));
    const stored = await fillUntilFull(client, w.config.prefix, 'full');
    const full = await usedMemory(client);
    assert.ok(stored.length > 50, `${stored.length} entries stored before OOM`);
    // Staging answers now; the worker replays while Redis is full.
    gate.open();
    await waitFor('every stored entry at staging', () => copies(staging.received).size === stored.length, 120_000);
    await waitFor(
      'the stream to be empty and nothing pending',
      async () => {
        const pending = (await client.xpending(keys.stream, keys.group)) as [number];
        return (await client.xlen(keys.stream)) === 0 && Number(pending[0]) === 0;
      },
      60_000,
      50,
    );
    const freed = await usedMemory(client);
    assert.ok(freed < full - 1024 * 1024, `memory freed: ${full} → ${freed} bytes`);
    // A CLAIM_IDLE_MS later, nothing comes back.
    await new Promise((r) => setTimeout(r, 1500));
    const duplicates = [...copies(staging.received).values()].filter((n) => n > 1).length;
    t.diagnostic(`${stored.length} entries stored until OOM; used_memory ${full} → ${freed} bytes; ${duplicates} duplicates at staging`);
    assert.equal(duplicates, 0, `no entry replayed twice (${duplicates})`);
    assert.equal(w.worker.load.unacked, 0);
    assert.equal(w.worker.load.inFlight, 0);
  } finally {
    await w.close();
    await client.config('SET', 'maxmemory', '0');
    client.disconnect();
    await staging.close();
  }
});

test('a worker started on a full Redis comes up and drains it', async () => {
  const staging = await RecordingServer.start();
  const client = redis.client();
  await client.config('SET', 'maxmemory', '0');
  const prefix = `full${Date.now().toString(36)}`;
  const keys = keysFor(prefix);
  await ensureGroup(client, keys.stream, keys.group);
  await client.config('SET', 'maxmemory', String((await usedMemory(client)) + 2 * 1024 * 1024));
  const stored = await fillUntilFull(client, prefix, 'cold');
  let w: InProcessWorker | null = null;
  try {
    // Before: XGROUP CREATE answered OOM (not BUSYGROUP) and the worker retried it for ever.
    w = await withDeadline(InProcessWorker.start(redis, staging.url, { ...STALL, WORKER_CONCURRENCY: '16' }, prefix), 30_000, () => {
      throw new Error('the worker did not start on a full Redis within 30 s');
    });
    await waitFor('every stored entry at staging', () => copies(staging.received).size === stored.length, 120_000);
    await waitFor('the stream to be empty', async () => (await client.xlen(keys.stream)) === 0, 60_000, 50);
    const duplicates = [...copies(staging.received).values()].filter((n) => n > 1).length;
    assert.equal(duplicates, 0, `no entry replayed twice (${duplicates})`);
  } finally {
    await w?.close();
    await client.config('SET', 'maxmemory', '0');
    client.disconnect();
    await staging.close();
  }
});

test('a worker started on a full Redis without its group waits, saying why, and starts once there is room', async () => {
  const staging = await RecordingServer.start();
  const client = redis.client();
  await client.config('SET', 'maxmemory', '0');
  const filler = `filler${Date.now().toString(36)}`;
  await client.config('SET', 'maxmemory', String((await usedMemory(client)) + 1024 * 1024));
  await fillUntilFull(client, filler, 'filler');
  const prefix = `nogroup${Date.now().toString(36)}`;
  const starting = InProcessWorker.start(redis, staging.url, STALL, prefix);
  try {
    // The worker logs the condition; the group cannot exist yet.
    await new Promise((r) => setTimeout(r, 1000));
    const groups = await client.exists(keysFor(prefix).stream);
    assert.equal(groups, 0, 'no group on a full Redis');
    await client.del(keysFor(filler).stream);
    const w = await starting;
    try {
      assert.ok(w.logged('Redis is full'), 'the wait was logged with its reason');
      assert.equal(await client.exists(keysFor(prefix).stream), 1);
    } finally {
      await w.close();
    }
  } finally {
    await client.config('SET', 'maxmemory', '0');
    client.disconnect();
    await staging.close();
  }
});

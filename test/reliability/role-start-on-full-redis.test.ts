import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { Redis } from 'ioredis';
import { deploymentKey, keysFor } from '@mirrorplane/core';
import { MirrorplaneProcess, RecordingServer, RedisServer, Stack, header, waitFor, useStack, withDeadline } from '../helpers/index.js';
import { appendEntries } from '../helpers/in-process-worker.js';

// Hostile pass on issue 11, fault 2 ("a worker started after Redis filled up never reads"),
// tried with the real CLI instead of the in-process worker the fix's tests use. The CLI's
// preflight claims the deployment settings with MULTI + HSETNX before the worker starts: on a
// full Redis (maxmemory, noeviction) every command queued in MULTI is refused (HSETNX is
// denyoom even when the field exists), EXEC answers EXECABORT, and the process exits 1. A worker
// restarted while Redis is full — the moment it is needed to free memory — crash-loops; if every
// worker restarts (a deploy), nothing ever drains Redis. docs/RELIABILITY.md §10 says a worker
// started on a full Redis "starts and drains the stream".

let redis: RedisServer;
useStack({ redis: { args: ['--maxmemory-policy', 'noeviction'] } }, (s) => {
  redis = s.redis;
});

async function fill(client: Redis, key: string): Promise<void> {
  const used = Number(/used_memory:(\d+)/.exec(await client.info('memory'))?.[1]);
  await client.config('SET', 'maxmemory', String(used + 512 * 1024));
  for (let i = 0; i < 10_000; i++) {
    try {
      await client.xadd(key, '*', 'b', Buffer.alloc(8192, 1));
    } catch (error) {
      assert.match((error as Error).message, /^OOM/);
      // Hold it full: a maxmemory below what Redis holds (noeviction evicts nothing), checked.
      await client.config('SET', 'maxmemory', String(Number(/used_memory:(\d+)/.exec(await client.info('memory'))?.[1]) - 256 * 1024));
      await assert.rejects(client.set('probe-full', 'x'), /OOM/);
      return;
    }
  }
  throw new Error('never full');
}

for (const role of ['worker', 'ingress'] as const) {
  test(`the CLI ${role} started on a full Redis of a running deployment comes up (it does not exit)${role === 'worker' ? ' and drains the stream' : ''}`, async (t) => {
    const staging = await RecordingServer.start();
    const client = redis.client();
    // A deployment that has run: its settings and group exist, entries wait in the stream.
    const stack = await Stack.start({ redis, stagingUrl: staging.url, workers: 0 });
    const prefix = stack.env.MIRRORPLANE_PREFIX as string;
    await stack.ingress.stop('SIGKILL');
    await appendEntries(client, prefix, 'full', 30);
    const filler = `filler-${role}`;
    let p: MirrorplaneProcess | null = null;
    try {
      await fill(client, filler);
      p = new MirrorplaneProcess([role], { ...stack.env, ...(role === 'ingress' ? { INGRESS_PORT: '0', INGRESS_HOST: '127.0.0.1' } : {}) });
      const exited = await withDeadline(
        p.exited.then((code) => ({ code })),
        8000,
        () => null,
      );
      t.diagnostic(`${role} on a full Redis: ${exited ? `exited ${exited.code}: ${p.stderr.split('\n')[0]}` : 'still running after 8 s'}`);
      assert.equal(exited, null, `the ${role} exited on a full Redis: ${p.stderr.split('\n')[0]}`);
      if (role === 'worker') {
        await waitFor(
          'the 30 waiting entries at staging',
          () => new Set(staging.received.map((r) => header(r.rawHeaders, 'x-request-id'))).size >= 30,
          60_000,
          100,
        );
        await waitFor('the stream empty', async () => (await client.xlen(keysFor(prefix).stream)) === 0, 30_000, 100);
      }
    } finally {
      await client.del(filler).catch(() => undefined);
      await client.config('SET', 'maxmemory', '0');
      client.disconnect();
      await p?.stop('SIGKILL');
      await stack.close();
      await staging.close();
    }
  });
}

for (const role of ['worker', 'ingress'] as const) {
  test(`the CLI ${role} started on a full Redis for a new deployment (nothing recorded) comes up, logs that Redis is full, and records the deployment once memory is freed`, async () => {
    const staging = await RecordingServer.start();
    const client = redis.client();
    // Any process's env, with a prefix nothing has run under.
    const stack = await Stack.start({ redis, stagingUrl: staging.url, workers: 0 });
    await stack.ingress.stop('SIGKILL');
    const prefix = `fresh${Date.now().toString(36)}${role}`;
    const filler = `filler-fresh-${role}`;
    let p: MirrorplaneProcess | null = null;
    try {
      await fill(client, filler);
      p = new MirrorplaneProcess([role], {
        ...stack.env,
        MIRRORPLANE_PREFIX: prefix,
        ...(role === 'ingress' ? { INGRESS_PORT: '0', INGRESS_HOST: '127.0.0.1' } : {}),
      });
      const line = await p.waitForLog('Redis is full: deployment not recorded yet, will retry', 20_000);
      assert.match(String(line.err), /OOM/);
      assert.equal(await client.exists(deploymentKey(prefix)), 0, 'nothing recorded while Redis is full');
      assert.equal(p.child.exitCode, null, `the ${role} is still running`);
      await client.del(filler);
      await client.config('SET', 'maxmemory', '0');
      await waitFor('the deployment recorded once memory is freed', async () => (await client.hget(deploymentKey(prefix), 'partitions')) !== null, 20_000, 100);
      assert.equal(p.child.exitCode, null, `the ${role} is still running`);
    } finally {
      await client.del(filler).catch(() => undefined);
      await client.config('SET', 'maxmemory', '0');
      client.disconnect();
      await p?.stop('SIGKILL');
      await stack.close();
      await staging.close();
    }
  });
}

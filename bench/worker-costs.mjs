#!/usr/bin/env node
// Where a worker drain's CPU goes, per entry: the worker's, Redis's and staging's CPU (from
// /proc) while one worker drains N pre-filled 1 KiB entries at concurrency 64, and the Redis
// commands it took (INFO commandstats: calls and Redis's own µs per entry). One run, no
// baseline: for comparing two builds back to back, or reading what a change costs Redis.
//
//   node bench/worker-costs.mjs [--entries=40000] [--cpu-prof=DIR]
import { randomBytes } from 'node:crypto';
import { encodeEntryFields, keysFor } from '@mirrorplane/core';
import { cpuSeconds, sleep, startCli, startRedis, startServer, stopAll } from './support/processes.mjs';
import { parseArgs } from './support/report.mjs';
import { benchBody, benchRawHeaders } from './support/request.mjs';

if (process.argv.includes('--help')) {
  console.log('usage: node bench/worker-costs.mjs [--entries=40000] [--cpu-prof=DIR]');
  process.exit(0);
}
const args = parseArgs();
const entries = Number(args.extra.entries ?? 40_000);
const profileDir = args.extra['cpu-prof'];
const redis = await startRedis();
const staging = await startServer('staging');
const client = redis.client();
try {
  const prefix = `bench-${randomBytes(3).toString('hex')}`;
  const keys = keysFor(prefix);
  await client.xgroup('CREATE', keys.stream, 'workers', '0', 'MKSTREAM');
  const fields = encodeEntryFields({
    method: 'POST',
    target: '/orders',
    rawHeaders: benchRawHeaders(),
    body: benchBody(),
    receivedAt: Date.now(),
    requestId: null,
    clientAddress: '127.0.0.1',
  });
  for (let done = 0; done < entries; done += 500) {
    const pipeline = client.pipeline();
    for (let i = 0; i < Math.min(500, entries - done); i++) pipeline.xadd(keys.stream, '*', ...fields);
    await pipeline.exec();
  }
  await client.config('RESETSTAT');
  const worker = await startCli(
    'worker',
    { REDIS_URL: redis.url, MIRRORPLANE_PREFIX: prefix, STAGING_URL: staging.url, WORKER_CONCURRENCY: '64', ADMIN_PORT: '0' },
    'worker started',
    profileDir ? ['--cpu-prof', `--cpu-prof-dir=${profileDir}`] : [],
  );
  const before = [worker.pid, redis.pid, staging.pid].map(cpuSeconds);
  const started = performance.now();
  for (;;) {
    const [length, pending] = await Promise.all([client.xlen(keys.stream), client.xpending(keys.stream, keys.group)]);
    if (length === 0 && Number(pending[0]) === 0) break;
    if (worker.child.exitCode !== null) throw new Error(`worker exited:\n${worker.output()}`);
    await sleep(5);
  }
  const ms = performance.now() - started;
  const [w, r, s] = [worker.pid, redis.pid, staging.pid].map((pid, i) => ((cpuSeconds(pid) - before[i]) / entries) * 1e6);
  await worker.stop();
  console.log(`${entries} entries in ${ms.toFixed(0)} ms: ${Math.round((entries / ms) * 1000)} entries/s`);
  console.log(`CPU µs per entry: worker ${w.toFixed(1)}, redis ${r.toFixed(1)}, staging ${s.toFixed(1)}`);
  console.log('\nRedis commands per entry (calls, Redis µs):');
  for (const line of (await client.info('commandstats')).split('\n')) {
    const m = /^cmdstat_([^:]+):calls=(\d+),usec=(\d+)/.exec(line);
    if (m && Number(m[2]) >= entries / 1000)
      console.log(`  ${m[1].padEnd(20)} ${(Number(m[2]) / entries).toFixed(3).padStart(7)}  ${(Number(m[3]) / entries).toFixed(2).padStart(6)}`);
  }
} finally {
  await client.quit().catch(() => undefined);
  await stopAll();
}

#!/usr/bin/env node
// Worker drain throughput against a raw undici Pool replaying the same 1 KiB POSTs to the
// same fast staging server at the same concurrency. The stream is pre-filled with N entries
// through the real codec; the worker (the real CLI) is timed from staging's first request to
// the moment every entry is acknowledged (stream empty, nothing pending). Interleaved,
// medians over repetitions.
//
//   node bench/worker.mjs [--full] [--json] [--entries=N] [--reps=N] [--concurrency=64] [--cpu-prof=DIR]
//
// --cpu-prof=DIR runs the worker under `node --cpu-prof` and leaves one profile per worker run in DIR.
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { encodeEntryFields, keysFor } from '@mirrorplane/core';
import { cpuSeconds, sleep, startCli, startRedis, startServer, stopAll } from './support/processes.mjs';
import { median, parseArgs, table, writeResults } from './support/report.mjs';
import { benchBody, benchRawHeaders } from './support/request.mjs';

const args = parseArgs();
const entries = Number(args.extra.entries ?? (args.full ? 100_000 : 20_000));
const reps = Number(args.extra.reps ?? (args.full ? 5 : 3));
const concurrency = Number(args.extra.concurrency ?? 64);
const profileDir = args.extra['cpu-prof'];
const UNDICI = fileURLToPath(new URL('./clients/undici-replay.mjs', import.meta.url));
const now = () => performance.timeOrigin + performance.now();

const redis = await startRedis();
const staging = await startServer('staging');
const client = redis.client();

/** Appends `count` entries through the real codec, 500 to a pipeline. */
async function prefill(stream, count) {
  const body = benchBody();
  const rawHeaders = benchRawHeaders();
  await client.xgroup('CREATE', stream, 'workers', '0', 'MKSTREAM');
  for (let done = 0; done < count;) {
    const pipeline = client.pipeline();
    const n = Math.min(500, count - done);
    for (let i = 0; i < n; i += 1) {
      const fields = encodeEntryFields({
        method: 'POST',
        target: '/orders',
        rawHeaders,
        body,
        receivedAt: Date.now(),
        requestId: null,
        clientAddress: '127.0.0.1',
      });
      pipeline.xadd(stream, '*', ...fields);
    }
    await pipeline.exec();
    done += n;
  }
}

async function runUndici() {
  await staging.ask('reset');
  const { stdout } = await promisify(execFile)(process.execPath, [UNDICI, staging.url, String(entries), String(concurrency)]);
  const r = JSON.parse(stdout);
  if (r.failed > 0) throw new Error(`undici baseline: ${r.failed} requests failed`);
  return { rps: (entries / r.ms) * 1000, ms: r.ms, cpuUsPerEntry: (r.cpuSeconds / entries) * 1e6 };
}

async function runWorker() {
  const prefix = `bench-${randomBytes(3).toString('hex')}`;
  const keys = keysFor(prefix);
  await prefill(keys.stream, entries);
  await staging.ask('reset');
  const worker = await startCli(
    'worker',
    {
      REDIS_URL: redis.url,
      MIRRORPLANE_PREFIX: prefix,
      STAGING_URL: staging.url,
      WORKER_CONCURRENCY: String(concurrency),
      ADMIN_PORT: '0',
    },
    'worker started',
    profileDir ? ['--cpu-prof', `--cpu-prof-dir=${profileDir}`] : [],
  );
  const cpu0 = cpuSeconds(worker.pid);
  let end = 0;
  for (;;) {
    const [length, pending] = await Promise.all([client.xlen(keys.stream), client.xpending(keys.stream, keys.group)]);
    if (length === 0 && Number(pending[0]) === 0) {
      end = now();
      break;
    }
    if (worker.child.exitCode !== null) throw new Error(`worker exited:\n${worker.output()}`);
    await sleep(5);
  }
  const cpu = cpuSeconds(worker.pid) - cpu0;
  const stats = await staging.ask('stats');
  await worker.stop();
  const replayed = Number(await client.get(keys.replayed));
  await client.flushall();
  if (stats.count < entries) throw new Error(`staging received ${stats.count} of ${entries}`);
  const ms = end - stats.first;
  return { rps: (entries / ms) * 1000, ms, received: stats.count, replayed, cpuUsPerEntry: (cpu / entries) * 1e6 };
}

try {
  console.log(`worker vs raw undici — ${entries} entries of 1 KiB, concurrency ${concurrency}, ${reps} runs interleaved\n`);
  const runs = { undici: [], worker: [] };
  for (let r = 0; r < reps; r += 1) {
    const order = r % 2 === 0 ? ['undici', 'worker'] : ['worker', 'undici'];
    for (const which of order) {
      const result = which === 'undici' ? await runUndici() : await runWorker();
      runs[which].push(result);
      process.stdout.write(`  run ${r + 1}/${reps} ${which.padEnd(7)} ${Math.round(result.rps)} entries/s  (${Math.round(result.ms)} ms)\n`);
    }
  }
  const summary = {};
  for (const k of ['undici', 'worker']) {
    summary[k] = { rps: median(runs[k].map((x) => x.rps)), cpuUsPerEntry: median(runs[k].map((x) => x.cpuUsPerEntry)) };
  }
  summary.ratio = summary.worker.rps / summary.undici.rps;
  console.log(
    `\n${table([
      ['replayer', 'entries/s', '× undici', 'CPU µs/entry'],
      ['raw undici Pool', summary.undici.rps, 1, summary.undici.cpuUsPerEntry],
      ['worker (XREADGROUP → replay → XACK+XDEL)', summary.worker.rps, summary.ratio, summary.worker.cpuUsPerEntry],
    ])}`,
  );
  console.log(`\ngoal: worker ≥ 0.85 × raw undici (${summary.ratio.toFixed(2)}); every entry acknowledged and deleted`);
  writeResults('worker', { entries, reps, concurrency, bodyBytes: 1024, runs, summary }, args);
} finally {
  await client.quit().catch(() => undefined);
  await stopAll();
}

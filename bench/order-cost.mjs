#!/usr/bin/env node
// Per-key ordering's cost (ORDER_BY, issue 19): worker drain throughput at the same concurrency
// with ordering off, and on with 10, 1,000 and 100,000 distinct keys (an X-Session header,
// entries spread round-robin over the keys). The stream is pre-filled through the real codec;
// the worker (the real CLI) is timed from staging's first request to the moment every entry is
// acknowledged. Runs interleaved, medians over repetitions; each ordered figure is a ratio
// against the unordered run of the same invocation.
//
// With 10 keys at concurrency 64, at most 10 requests can be in flight at once (one per key):
// that figure measures the ordering itself, not its overhead.
//
//   node bench/order-cost.mjs [--full] [--json] [--entries=N] [--reps=N] [--concurrency=64] [--keys=10,1000,100000] [--workers=1]
import { randomBytes } from 'node:crypto';
import { encodeEntryFields, keysFor } from '@mirrorplane/core';
import { cpuSeconds, sleep, startCli, startRedis, startServer, stopAll } from './support/processes.mjs';
import { median, parseArgs, table, writeResults } from './support/report.mjs';
import { benchBody, benchRawHeaders } from './support/request.mjs';

const args = parseArgs();
const entries = Number(args.extra.entries ?? (args.full ? 200_000 : 20_000));
const reps = Number(args.extra.reps ?? (args.full ? 5 : 3));
const concurrency = Number(args.extra.concurrency ?? 64);
const workers = Number(args.extra.workers ?? 1);
const keyCounts = String(args.extra.keys ?? '10,1000,100000')
  .split(',')
  .map(Number)
  .filter((n) => n > 0);
const now = () => performance.timeOrigin + performance.now();

const redis = await startRedis();
const staging = await startServer('staging');
const client = redis.client();

/** Appends `count` entries, entry i with X-Session k<i mod keys> (keys 0: no header). */
async function prefill(stream, count, keys) {
  const body = benchBody();
  const base = benchRawHeaders();
  await client.xgroup('CREATE', stream, 'workers', '0', 'MKSTREAM');
  for (let done = 0; done < count;) {
    const pipeline = client.pipeline();
    const n = Math.min(500, count - done);
    for (let i = done; i < done + n; i += 1) {
      const rawHeaders = keys > 0 ? [...base, 'X-Session', `k${i % keys}`] : base;
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

/** One drain: `keys` 0 is ordering off. */
async function run(keys) {
  const prefix = `bench-${randomBytes(3).toString('hex')}`;
  const k = keysFor(prefix);
  await prefill(k.stream, entries, keys);
  await staging.ask('reset');
  const env = { REDIS_URL: redis.url, MIRRORPLANE_PREFIX: prefix, STAGING_URL: staging.url, WORKER_CONCURRENCY: String(concurrency), ADMIN_PORT: '0' };
  if (keys > 0) env.ORDER_BY = 'header:x-session';
  const started = [];
  for (let w = 0; w < workers; w += 1) started.push(await startCli('worker', env));
  const cpu0 = started.map((w) => cpuSeconds(w.pid));
  let end = 0;
  for (;;) {
    const [length, pending] = await Promise.all([client.xlen(k.stream), client.xpending(k.stream, k.group)]);
    if (length === 0 && Number(pending[0]) === 0) {
      end = now();
      break;
    }
    for (const w of started) if (w.child.exitCode !== null) throw new Error(`worker exited:\n${w.output()}`);
    await sleep(5);
  }
  // CPU of the worker processes only (Redis's share of the ordering scripts is not counted).
  const cpu = started.reduce((a, w, i) => a + cpuSeconds(w.pid) - cpu0[i], 0);
  const stats = await staging.ask('stats');
  for (const w of started) await w.stop();
  await client.flushall();
  if (stats.count < entries) throw new Error(`staging received ${stats.count} of ${entries}`);
  const ms = end - stats.first;
  return { rps: (entries / ms) * 1000, ms, cpuUsPerEntry: (cpu / entries) * 1e6 };
}

try {
  const scenarios = [0, ...keyCounts];
  const name = (keys) => (keys === 0 ? 'no ordering' : `ORDER_BY, ${keys} keys`);
  console.log(`per-key ordering cost — ${entries} entries of 1 KiB, ${workers} worker(s) at concurrency ${concurrency}, ${reps} runs interleaved\n`);
  const runs = Object.fromEntries(scenarios.map((s) => [s, []]));
  for (let r = 0; r < reps; r += 1) {
    const order = r % 2 === 0 ? scenarios : [...scenarios].reverse();
    for (const keys of order) {
      const result = await run(keys);
      runs[keys].push(result);
      process.stdout.write(
        `  run ${r + 1}/${reps} ${name(keys).padEnd(24)} ${Math.round(result.rps)} entries/s  (${Math.round(result.ms)} ms)  CPU ${result.cpuUsPerEntry.toFixed(1)} µs/entry\n`,
      );
    }
  }
  const base = median(runs[0].map((x) => x.rps));
  const summary = Object.fromEntries(
    scenarios.map((keys) => {
      const rps = median(runs[keys].map((x) => x.rps));
      const cpuUsPerEntry = median(runs[keys].map((x) => x.cpuUsPerEntry));
      // With fewer entries than keys, only `entries` distinct keys are ever seen.
      return [keys, { name: name(keys), keys, keysSeen: Math.min(keys, entries), rps, ratio: rps / base, cpuUsPerEntry }];
    }),
  );
  const baseCpu = summary[0].cpuUsPerEntry;
  for (const s of Object.values(summary)) s.cpuRatio = s.cpuUsPerEntry / baseCpu;
  console.log(
    `\n${table([
      ['scenario', 'entries/s', '× no ordering', 'CPU µs/entry', 'CPU × no ordering'],
      ...scenarios.map((keys) => [name(keys), summary[keys].rps, summary[keys].ratio, summary[keys].cpuUsPerEntry, summary[keys].cpuRatio]),
    ])}`,
  );
  writeResults('order-cost', { entries, reps, concurrency, workers, keyCounts, runs, summary }, args);
} finally {
  await client.quit().catch(() => undefined);
  await stopAll();
}

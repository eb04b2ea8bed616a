#!/usr/bin/env node
// Memory of the ingress and the worker over time at half of the loop's peak load: RSS from
// /proc, V8 heap from each admin port's /metrics, the backlog from Redis. Quick: 1 minute;
// --full: 10 minutes. "Flat" compares the last third of the samples with the second third
// (the first third is warm-up).
//
//   node bench/soak.mjs [--full] [--json] [--minutes=M] [--rate=R]
import { rssBytes, sleep, stopAll } from './support/processes.mjs';
import { measurePeak, startStack } from './support/stack.mjs';
import { runWrk } from './support/wrk.mjs';
import { median, parseArgs, table, writeResults } from './support/report.mjs';

const args = parseArgs();
const minutes = Number(args.extra.minutes ?? (args.full ? 10 : 1));
const everyS = Number(args.extra.every ?? (minutes >= 5 ? 20 : 5));

async function heapUsed(port, prefix) {
  try {
    const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
    return Number(new RegExp(`^${prefix}nodejs_heap_size_used_bytes (\\S+)`, 'm').exec(text)?.[1] ?? NaN);
  } catch {
    return NaN;
  }
}

const stack = await startStack({ admin: true });
try {
  const peak = await measurePeak(stack, 5);
  const rate = Number(args.extra.rate ?? Math.round(peak.rps / 2 / 100) * 100);
  console.log(`soak — ${minutes} min at ${rate} req/s (half of the loop's peak ${Math.round(peak.rps)}), a sample every ${everyS} s\n`);
  const ingressPid = stack.ingress.pid;
  const workerPid = stack.workers[0].pid;
  const samples = [];
  const started = Date.now();
  const load = runWrk({ url: stack.url, connections: 64, seconds: minutes * 60, rate, pids: [ingressPid, workerPid] });
  let finished = false;
  void load.finally(() => {
    finished = true;
  });
  while (!finished) {
    await sleep(everyS * 1000);
    if (finished) break;
    const [ingressHeap, workerHeap, backlog] = await Promise.all([
      heapUsed(stack.ingressAdmin, 'mirrorplane_ingress_'),
      heapUsed(stack.workerAdmins[0], 'mirrorplane_worker_'),
      stack.client.xlen(stack.keys.stream),
    ]);
    const s = { t: (Date.now() - started) / 1000, ingressRss: rssBytes(ingressPid), workerRss: rssBytes(workerPid), ingressHeap, workerHeap, backlog };
    samples.push(s);
    process.stdout.write(
      `  ${s.t.toFixed(0).padStart(4)} s  ingress RSS ${(s.ingressRss / 2 ** 20).toFixed(1)} MiB heap ${(s.ingressHeap / 2 ** 20).toFixed(1)} MiB  worker RSS ${(s.workerRss / 2 ** 20).toFixed(1)} MiB heap ${(s.workerHeap / 2 ** 20).toFixed(1)} MiB  backlog ${backlog}\n`,
    );
  }
  const wrk = await load;
  await stack.drained();
  const third = Math.max(1, Math.floor(samples.length / 3));
  const mid = samples.slice(third, 2 * third);
  const last = samples.slice(-third);
  const growth = (key) => {
    const a = median(mid.map((s) => s[key]));
    const b = median(last.map((s) => s[key]));
    return { middle: a, last: b, change: (b - a) / a };
  };
  const summary = {
    peakRps: peak.rps,
    offeredRps: rate,
    achievedRps: wrk.rps,
    p99Ms: wrk.p99Ms,
    errors: wrk.errors,
    minutes,
    ingressRss: growth('ingressRss'),
    ingressHeap: growth('ingressHeap'),
    workerRss: growth('workerRss'),
    workerHeap: growth('workerHeap'),
    maxBacklog: Math.max(...samples.map((s) => s.backlog)),
  };
  const mib = (n) => n / 2 ** 20;
  console.log(
    `\n${table([
      ['process', 'middle third MiB', 'last third MiB', 'change'],
      ...['ingressRss', 'ingressHeap', 'workerRss', 'workerHeap'].map((k) => [
        k.replace(/([A-Z])/, ' $1'),
        mib(summary[k].middle),
        mib(summary[k].last),
        `${(summary[k].change * 100).toFixed(1)} %`,
      ]),
    ])}`,
  );
  console.log(`\nload: ${Math.round(wrk.rps)} req/s achieved, p99 ${wrk.p99Ms.toFixed(2)} ms, ${wrk.errors} errors, backlog at most ${summary.maxBacklog}`);
  writeResults('soak', { summary, samples, everyS }, args);
} finally {
  await stack.stop().catch(() => undefined);
  await stopAll();
}

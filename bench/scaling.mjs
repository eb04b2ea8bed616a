#!/usr/bin/env node
// Measured points for docs/SCALING.md: the whole loop (ingress + worker + staging + Redis on
// this machine) with one or two ingress processes (cluster mode) and one or two workers.
// Each layout gets wrk -c64 for S seconds on the ingress while the workers replay; "loop"
// throughput is what was accepted divided by the time until every entry was acknowledged.
//
//   node bench/scaling.mjs [--json] [--seconds=S] [--reps=N]
import { cpuSeconds, stopAll } from './support/processes.mjs';
import { startStack } from './support/stack.mjs';
import { runWrk } from './support/wrk.mjs';
import { median, parseArgs, table, writeResults } from './support/report.mjs';

const args = parseArgs();
const seconds = Number(args.extra.seconds ?? (args.full ? 15 : 8));
const reps = Number(args.extra.reps ?? (args.full ? 3 : 2));
const layouts = [
  { name: '1 ingress + 1 worker', ingressProcesses: 1, workers: 1 },
  { name: '2 ingress (cluster) + 1 worker', ingressProcesses: 2, workers: 1 },
  { name: '1 ingress + 2 workers', ingressProcesses: 1, workers: 2 },
  { name: '2 ingress (cluster) + 2 workers', ingressProcesses: 2, workers: 2 },
];

const runs = Object.fromEntries(layouts.map((l) => [l.name, []]));
try {
  for (let r = 0; r < reps; r += 1) {
    for (const layout of layouts) {
      const stack = await startStack(layout);
      try {
        const pids = [stack.ingress.pid, ...stack.workers.map((w) => w.pid), stack.redis.pid, stack.staging.pid];
        const cpu0 = pids.map(cpuSeconds);
        const started = performance.now();
        const wrk = await runWrk({ url: stack.url, connections: 64, seconds });
        await stack.drained(300_000);
        const elapsed = (performance.now() - started) / 1000;
        const cpu = pids.map((p, i) => (cpuSeconds(p) - cpu0[i]) / elapsed);
        const point = {
          ingressRps: wrk.rps,
          loopRps: wrk.requests / elapsed,
          p99Ms: wrk.p99Ms,
          errors: wrk.errors,
          cpu: {
            ingress: cpu[0],
            workers: cpu.slice(1, 1 + layout.workers).reduce((a, b) => a + b, 0),
            redis: cpu[1 + layout.workers],
            staging: cpu[2 + layout.workers],
          },
        };
        runs[layout.name].push(point);
        process.stdout.write(
          `  ${layout.name.padEnd(32)} ingress ${Math.round(point.ingressRps)} req/s, loop ${Math.round(point.loopRps)} req/s, p99 ${point.p99Ms.toFixed(1)} ms\n`,
        );
      } finally {
        await stack.stop();
      }
    }
  }
  const points = layouts.map((l) => {
    const rs = runs[l.name];
    const cpuOf = (k) => median(rs.map((x) => x.cpu[k]));
    return {
      name: l.name,
      ingressProcesses: l.ingressProcesses,
      workers: l.workers,
      ingressRps: median(rs.map((x) => x.ingressRps)),
      loopRps: median(rs.map((x) => x.loopRps)),
      p99Ms: median(rs.map((x) => x.p99Ms)),
      cpu: { ingress: cpuOf('ingress'), workers: cpuOf('workers'), redis: cpuOf('redis'), staging: cpuOf('staging') },
    };
  });
  console.log(
    `\n${table([['layout', 'ingress req/s', 'loop req/s', 'p99 ms', 'CPU ingress', 'CPU workers', 'CPU redis', 'CPU staging'], ...points.map((p) => [p.name, p.ingressRps, p.loopRps, p.p99Ms, p.cpu.ingress, p.cpu.workers, p.cpu.redis, p.cpu.staging])])}`,
  );
  writeResults('scaling', { seconds, reps, points }, args);
} finally {
  await stopAll();
}

#!/usr/bin/env node
// Ingress throughput and latency against a bare node:http server that reads the same 1 KiB
// body and answers 200, in the same invocation, interleaved, medians over repetitions.
// Also: a raw XADD server (bare + one ioredis XADD), the ingress in cluster mode (2
// processes), and an offered-load sweep (fixed rates) of bare vs ingress for the plot.
//
//   node bench/ingress.mjs [--full] [--json] [--processes=2] [--reps=N] [--seconds=S] [--sweep=0] [--cpu-prof=DIR]
//
// --cpu-prof=DIR runs the ingress under `node --cpu-prof` and leaves one profile per ingress start in DIR.
import { randomBytes } from 'node:crypto';
import { freePort, startCli, startRedis, startServer, stopAll } from './support/processes.mjs';
import { runWrk } from './support/wrk.mjs';
import { median, parseArgs, table, writeResults } from './support/report.mjs';

const args = parseArgs();
const reps = Number(args.extra.reps ?? (args.full ? 5 : 3));
const seconds = Number(args.extra.seconds ?? (args.full ? 10 : 5));
const sweepSeconds = args.full ? 8 : 3;
const connections = Number(args.extra.connections ?? 64);
const clusterProcesses = Number(args.extra.processes ?? 2);
const profileDir = args.extra['cpu-prof'];

const redis = await startRedis();
const admin = redis.client();

async function startIngress(processes) {
  const port = await freePort();
  const proc = await startCli(
    'ingress',
    {
      REDIS_URL: redis.url,
      MIRRORPLANE_PREFIX: `bench-${randomBytes(3).toString('hex')}`,
      INGRESS_HOST: '127.0.0.1',
      INGRESS_PORT: String(port),
      ADMIN_PORT: '0',
      INGRESS_PROCESSES: String(processes),
    },
    'ingress listening',
    profileDir ? ['--cpu-prof', `--cpu-prof-dir=${profileDir}`] : [],
  );
  return { ...proc, url: `http://127.0.0.1:${port}` };
}

const variants = [
  { name: 'bare node:http', key: 'bare', start: () => startServer('bare') },
  { name: 'raw XADD server', key: 'rawXadd', start: () => startServer('bare', ['--xadd', redis.url]) },
  { name: 'raw XADD, corked socket', key: 'rawXaddCorked', start: () => startServer('bare', ['--xadd', redis.url, '--cork']) },
  { name: 'ingress', key: 'ingress', start: () => startIngress(1) },
];
if (clusterProcesses > 1) variants.push({ name: `ingress ×${clusterProcesses} (cluster)`, key: 'cluster', start: () => startIngress(clusterProcesses) });

try {
  for (const v of variants) v.proc = await v.start();
  const measure = async (v, options) => {
    const result = await runWrk({ url: v.proc.url, pids: [v.proc.pid, redis.pid], ...options });
    // Entries pile up in Redis; drop them between runs so memory is the same for everyone.
    await admin.flushall();
    return result;
  };

  console.log(`ingress vs bare node:http — wrk -t1 -c${connections}, 1 KiB POST, ${reps} × ${seconds} s interleaved\n`);
  for (const v of variants) await measure(v, { connections, seconds: 2 }); // warm-up (JIT, connections)
  const runs = Object.fromEntries(variants.map((v) => [v.key, []]));
  for (let r = 0; r < reps; r += 1) {
    // Rotate the order so no variant always runs first (or last) on a noisy machine.
    for (let i = 0; i < variants.length; i += 1) {
      const v = variants[(i + r) % variants.length];
      const result = await measure(v, { connections, seconds });
      runs[v.key].push(result);
      process.stdout.write(
        `  run ${r + 1}/${reps} ${v.name.padEnd(24)} ${Math.round(result.rps)} req/s  p99 ${result.p99Ms.toFixed(2)} ms  errors ${result.errors}\n`,
      );
    }
  }
  const summary = {};
  for (const v of variants) {
    const rs = runs[v.key];
    summary[v.key] = {
      name: v.name,
      rps: median(rs.map((x) => x.rps)),
      p50Ms: median(rs.map((x) => x.p50Ms)),
      p99Ms: median(rs.map((x) => x.p99Ms)),
      serverCpu: median(rs.map((x) => x.cpu[0])),
      redisCpu: median(rs.map((x) => x.cpu[1])),
      cpuUsPerRequest: median(rs.map((x) => x.cpuUsPerRequest)),
      errors: rs.reduce((a, x) => a + x.errors, 0),
    };
  }
  const bare = summary.bare;
  const rows = [['server', 'req/s', '× bare', 'p50 ms', 'p99 ms', 'p99 × bare', 'server CPU', 'CPU µs/req', 'redis CPU', 'errors']];
  for (const v of variants) {
    const s = summary[v.key];
    s.ratio = s.rps / bare.rps;
    s.p99Ratio = s.p99Ms / bare.p99Ms;
    rows.push([s.name, s.rps, s.ratio, s.p50Ms, s.p99Ms, s.p99Ratio, s.serverCpu, s.cpuUsPerRequest, s.redisCpu, s.errors]);
  }
  console.log(`\n${table(rows)}`);
  const goal = summary.ingress;
  console.log(`\ngoal: ingress ≥ 1.0 × bare throughput (${goal.ratio.toFixed(2)}), p99 < 2 × bare (${goal.p99Ratio.toFixed(2)})`);
  if (summary.cluster) console.log(`cluster: ${summary.cluster.ratio.toFixed(2)} × bare, p99 ${summary.cluster.p99Ratio.toFixed(2)} × bare`);

  // Offered-load sweep: the same fixed rates for each server, interleaved per rate.
  const sweepVariants = args.extra.sweep === '0' ? [] : variants.filter((v) => !v.key.startsWith('rawXadd'));
  const fractions = args.full ? [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.25] : [0.1, 0.25, 0.4, 0.55, 0.7, 0.85, 1.0, 1.2];
  const rates = fractions.map((f) => Math.round((f * bare.rps) / 100) * 100);
  const sweep = Object.fromEntries(sweepVariants.map((v) => [v.key, []]));
  console.log(`\noffered-load sweep (fixed rate, -c${connections}, ${sweepSeconds} s a point)`);
  // --full measures every point twice (in two passes over the rates) and keeps the medians.
  const passes = args.full ? 2 : 1;
  const points = Object.fromEntries(sweepVariants.map((v) => [v.key, rates.map(() => [])]));
  for (let pass = 0; pass < passes; pass += 1) {
    for (const [i, rate] of rates.entries()) {
      for (const v of sweepVariants) points[v.key][i].push(await measure(v, { connections, seconds: sweepSeconds, rate }));
    }
  }
  for (const v of sweepVariants) {
    rates.forEach((rate, i) => {
      const rs = points[v.key][i];
      sweep[v.key].push({
        offered: rate,
        rps: median(rs.map((x) => x.rps)),
        p50Ms: median(rs.map((x) => x.p50Ms)),
        p99Ms: median(rs.map((x) => x.p99Ms)),
        errors: rs.reduce((a, x) => a + x.errors, 0),
      });
    });
  }
  if (sweepVariants.length > 0) {
    const sweepRows = [['offered req/s', ...sweepVariants.flatMap((v) => [`${v.key} req/s`, `${v.key} p99 ms`])]];
    rates.forEach((rate, i) => sweepRows.push([rate, ...sweepVariants.flatMap((v) => [sweep[v.key][i].rps, sweep[v.key][i].p99Ms])]));
    console.log(table(sweepRows));
  }

  writeResults(
    'ingress',
    {
      connections,
      reps,
      seconds,
      bodyBytes: 1024,
      runs,
      summary,
      sweep: { seconds: sweepSeconds, rates, series: sweep, names: Object.fromEntries(sweepVariants.map((v) => [v.key, v.name])) },
    },
    args,
  );
} finally {
  await admin.quit().catch(() => undefined);
  await stopAll();
}

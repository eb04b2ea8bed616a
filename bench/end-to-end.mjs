#!/usr/bin/env node
// Latency from the ingress's acknowledgement (the 200 the mirror proxy gets) to staging's
// receipt of the replay, at half of the loop's peak load. The load comes from a fixed-rate
// client that notes when each request was acknowledged; staging notes when it received each
// replay; both clocks are this machine's.
//
//   node bench/end-to-end.mjs [--full] [--json] [--seconds=S] [--rate=R]
import { fork } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { stopAll } from './support/processes.mjs';
import { startStack, measurePeak } from './support/stack.mjs';
import { parseArgs, percentile, table, writeResults } from './support/report.mjs';

const args = parseArgs();
const seconds = Number(args.extra.seconds ?? (args.full ? 60 : 10));
const CLIENT = fileURLToPath(new URL('./clients/fixed-rate.mjs', import.meta.url));

const stack = await startStack();
try {
  const peak = await measurePeak(stack, args.full ? 10 : 5);
  const rate = Number(args.extra.rate ?? Math.round(peak.rps / 2 / 100) * 100);
  console.log(`end-to-end — peak of the loop ${Math.round(peak.rps)} req/s (wrk -c64, ingress + worker + staging); offered ${rate} req/s for ${seconds} s\n`);
  await stack.staging.ask('record');
  const result = await new Promise((resolve, reject) => {
    const child = fork(CLIENT, [stack.url, String(rate), String(seconds)], { stdio: 'inherit' });
    child.once('message', resolve);
    child.once('exit', (code) => code !== 0 && reject(new Error(`load client exited ${code}`)));
  });
  await stack.drained();
  const { receipts } = await stack.staging.ask('receipts');
  const received = new Map(receipts);
  const latencies = [];
  for (const [i, ackAt] of result.acked) {
    const at = received.get(`e2e-${i}`);
    if (at !== undefined) latencies.push(at - ackAt);
  }
  latencies.sort((a, b) => a - b);
  const s = {
    peakRps: peak.rps,
    offeredRps: rate,
    achievedRps: result.total / result.seconds,
    sent: result.total,
    acknowledged: result.acked.length,
    failed: result.failed,
    replayed: latencies.length,
    p50Ms: percentile(latencies, 50),
    p90Ms: percentile(latencies, 90),
    p99Ms: percentile(latencies, 99),
    p999Ms: percentile(latencies, 99.9),
    maxMs: latencies[latencies.length - 1],
    minMs: latencies[0],
  };
  console.log(
    table([
      ['offered req/s', 'acknowledged', 'replayed', 'p50 ms', 'p90 ms', 'p99 ms', 'p99.9 ms', 'max ms'],
      [s.offeredRps, s.acknowledged, s.replayed, s.p50Ms, s.p90Ms, s.p99Ms, s.p999Ms, s.maxMs],
    ]),
  );
  console.log(`\ngoal: p50 < 5 ms at half of peak (${s.p50Ms.toFixed(2)} ms); every acknowledged request replayed (${s.replayed}/${s.acknowledged})`);
  // A negative latency is possible and correct: the worker can read an entry before the
  // ingress's 200 reached the client.
  writeResults('end-to-end', { seconds, peak, summary: s }, args);
} finally {
  await stack.stop().catch(() => undefined);
  await stopAll();
}

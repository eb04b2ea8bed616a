#!/usr/bin/env node
// HTTP/2 (h2c) next to HTTP/1.1: intake throughput of the ingress against bare servers of the
// same protocol, and replay (drain) throughput of the worker for HTTP/2 entries to an h2c
// staging next to HTTP/1.1 entries to an HTTP/1.1 staging. Every figure has its baseline from
// the same invocation; runs are interleaved and medians kept.
//
// Intake: one load client process (bench/clients/h2-load.mjs, node's own http2 and http
// clients, since wrk speaks no HTTP/2), `sessions` connections × `streams` requests in flight
// each, 1 KiB bodies (one gRPC message over h2c; a JSON POST over HTTP/1.1).
// Replay: the stream is pre-filled with N entries through the real codec; the worker (the real
// CLI) is timed from staging's first request to the last entry acknowledged.
//
//   node bench/h2c.mjs [--full] [--json] [--reps=N] [--seconds=S] [--sessions=4] [--streams=16] [--entries=N] [--concurrency=64]
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { encodeEntryFields, keysFor } from '@mirrorplane/core';
import { cpuSeconds, freePort, sleep, startCli, startRedis, startServer, stopAll } from './support/processes.mjs';
import { median, parseArgs, table, writeResults } from './support/report.mjs';
import { benchBody, benchRawHeaders } from './support/request.mjs';

const args = parseArgs();
const reps = Number(args.extra.reps ?? (args.full ? 5 : 3));
const seconds = Number(args.extra.seconds ?? (args.full ? 10 : 5));
const sessions = Number(args.extra.sessions ?? 4);
const streams = Number(args.extra.streams ?? 16);
const entries = Number(args.extra.entries ?? (args.full ? 50_000 : 10_000));
const concurrency = Number(args.extra.concurrency ?? 64);
const LOAD = fileURLToPath(new URL('./clients/h2-load.mjs', import.meta.url));
const now = () => performance.timeOrigin + performance.now();

const redis = await startRedis();
const client = redis.client();

/** One load run; `pid` is the server whose CPU is measured (cores, and µs per request). */
async function load(url, protocol, pid) {
  const cpu0 = cpuSeconds(pid);
  const t0 = now();
  const { stdout } = await promisify(execFile)(process.execPath, [LOAD, url, protocol, String(seconds), String(sessions), String(streams)]);
  const result = JSON.parse(stdout);
  const cpu = cpuSeconds(pid) - cpu0;
  result.serverCpu = cpu / ((now() - t0) / 1000);
  result.cpuUsPerRequest = result.requests > 0 ? (cpu / result.requests) * 1e6 : NaN;
  return result;
}

async function startIngress() {
  const port = await freePort();
  const proc = await startCli('ingress', {
    REDIS_URL: redis.url,
    MIRRORPLANE_PREFIX: `bench-${randomBytes(3).toString('hex')}`,
    INGRESS_HOST: '127.0.0.1',
    INGRESS_PORT: String(port),
    ADMIN_PORT: '0',
  });
  return { ...proc, url: `http://127.0.0.1:${port}` };
}

/** Appends `count` entries through the real codec, 500 to a pipeline. */
async function prefill(stream, count, protocol) {
  const body = benchBody();
  const http2 = protocol === 'HTTP/2';
  const rawHeaders = http2
    ? [':scheme', 'http', ':authority', '127.0.0.1:8080', 'content-type', 'application/grpc', 'te', 'trailers', 'user-agent', 'mirrorplane-bench']
    : benchRawHeaders();
  await client.xgroup('CREATE', stream, 'workers', '0', 'MKSTREAM');
  for (let done = 0; done < count;) {
    const pipeline = client.pipeline();
    const n = Math.min(500, count - done);
    for (let i = 0; i < n; i += 1) {
      const fields = encodeEntryFields({
        method: 'POST',
        target: http2 ? '/bench.Load/Call' : '/orders',
        rawHeaders,
        body,
        receivedAt: Date.now(),
        requestId: null,
        clientAddress: '127.0.0.1',
        ...(http2 && { protocol: 'HTTP/2' }),
      });
      pipeline.xadd(stream, '*', ...fields);
    }
    await pipeline.exec();
    done += n;
  }
}

async function drain(staging, protocol) {
  const prefix = `bench-${randomBytes(3).toString('hex')}`;
  const keys = keysFor(prefix);
  await prefill(keys.stream, entries, protocol);
  await staging.ask('reset');
  const worker = await startCli('worker', {
    REDIS_URL: redis.url,
    MIRRORPLANE_PREFIX: prefix,
    STAGING_URL: staging.url,
    WORKER_CONCURRENCY: String(concurrency),
    ADMIN_PORT: '0',
  });
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
  await client.flushall();
  if (stats.count < entries) throw new Error(`${protocol} staging received ${stats.count} of ${entries}`);
  const ms = end - stats.first;
  return { rps: (entries / ms) * 1000, ms, cpuUsPerEntry: (cpu / entries) * 1e6 };
}

try {
  const bareH2 = await startServer('h2-staging');
  const bareH1 = await startServer('bare');
  const ingress = await startIngress();
  const intake = [
    { key: 'bareH2', name: 'bare node:http2 (h2c)', url: bareH2.url, pid: bareH2.pid, protocol: 'h2' },
    { key: 'ingressH2', name: 'ingress, h2c', url: ingress.url, pid: ingress.pid, protocol: 'h2' },
    { key: 'bareH1', name: 'bare node:http (HTTP/1.1)', url: bareH1.url, pid: bareH1.pid, protocol: 'h1' },
    { key: 'ingressH1', name: 'ingress, HTTP/1.1', url: ingress.url, pid: ingress.pid, protocol: 'h1' },
  ];
  console.log(
    `intake — ${sessions} connections × ${streams} in flight (HTTP/1.1: ${sessions * streams} connections), 1 KiB, ${reps} × ${seconds} s interleaved\n`,
  );
  const runs = Object.fromEntries(intake.map((v) => [v.key, []]));
  for (let r = 0; r < reps; r += 1) {
    for (let i = 0; i < intake.length; i += 1) {
      const v = intake[(i + r) % intake.length];
      const result = await load(v.url, v.protocol, v.pid);
      await client.flushall();
      runs[v.key].push(result);
      process.stdout.write(
        `  run ${r + 1}/${reps} ${v.name.padEnd(26)} ${Math.round(result.rps)} req/s  p99 ${result.p99Ms.toFixed(2)} ms  CPU ${result.cpuUsPerRequest.toFixed(1)} µs/req  errors ${result.errors}\n`,
      );
    }
  }
  const summary = {};
  for (const v of intake) {
    const rs = runs[v.key];
    summary[v.key] = {
      name: v.name,
      rps: median(rs.map((x) => x.rps)),
      p50Ms: median(rs.map((x) => x.p50Ms)),
      p99Ms: median(rs.map((x) => x.p99Ms)),
      serverCpu: median(rs.map((x) => x.serverCpu)),
      cpuUsPerRequest: median(rs.map((x) => x.cpuUsPerRequest)),
      errors: rs.reduce((a, x) => a + x.errors, 0),
    };
  }
  const rows = [['server', 'req/s', '× bare (same protocol)', 'p50 ms', 'p99 ms', 'server CPU', 'CPU µs/req', 'errors']];
  for (const v of intake) {
    const s = summary[v.key];
    s.protocol = v.protocol;
    s.ratio = s.rps / summary[v.protocol === 'h2' ? 'bareH2' : 'bareH1'].rps;
    rows.push([s.name, s.rps, s.ratio, s.p50Ms, s.p99Ms, s.serverCpu, s.cpuUsPerRequest, s.errors]);
  }
  console.log(`\n${table(rows)}`);

  const stagingH2 = bareH2;
  const stagingH1 = await startServer('staging');
  console.log(`\nreplay — ${entries} entries of 1 KiB, concurrency ${concurrency}, ${reps} runs interleaved\n`);
  const drains = { h2: [], h1: [] };
  for (let r = 0; r < reps; r += 1) {
    for (const which of r % 2 === 0 ? ['h2', 'h1'] : ['h1', 'h2']) {
      const result = which === 'h2' ? await drain(stagingH2, 'HTTP/2') : await drain(stagingH1, 'HTTP/1.1');
      drains[which].push(result);
      process.stdout.write(
        `  run ${r + 1}/${reps} ${which === 'h2' ? 'HTTP/2 → h2c  ' : 'HTTP/1.1 → h1 '} ${Math.round(result.rps)} entries/s (${Math.round(result.ms)} ms)\n`,
      );
    }
  }
  const replay = {};
  for (const k of ['h2', 'h1']) replay[k] = { rps: median(drains[k].map((x) => x.rps)), cpuUsPerEntry: median(drains[k].map((x) => x.cpuUsPerEntry)) };
  replay.h1.ratio = 1;
  replay.h2.ratio = replay.h2.rps / replay.h1.rps;
  console.log(
    `\n${table([
      ['replay', 'entries/s', '× HTTP/1.1', 'CPU µs/entry'],
      ['HTTP/1.1 entries → HTTP/1.1 staging', replay.h1.rps, 1, replay.h1.cpuUsPerEntry],
      ['HTTP/2 entries → h2c staging', replay.h2.rps, replay.h2.rps / replay.h1.rps, replay.h2.cpuUsPerEntry],
    ])}`,
  );
  writeResults('h2c', { reps, seconds, sessions, streams, entries, concurrency, bodyBytes: 1024, runs, summary, drains, replay }, args);
} finally {
  await client.quit().catch(() => undefined);
  await stopAll();
}

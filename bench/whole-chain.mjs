#!/usr/bin/env node
// The whole chain against the design it replaced: wrk drives each mirroring system, and one
// shared staging server counts what each delivers. Interleaved, medians over repetitions.
//
// - respond-then-relay (bench/baseline/relay.go, Go standard library): reads the body, answers
//   200, relays in a goroutine over at most 64 keep-alive connections. Stores nothing.
// - Mirrorplane: ingress + 1 worker + Redis (durable, at-least-once), the real CLI.
// - nginx `mirror` straight to staging: nginx answers 200 itself and mirrors every request.
//
// Each run: wrk -t1 -c64 for S seconds (1 KiB POST), then wait until the system has delivered
// what it accepted (Mirrorplane: stream empty, nothing pending; the relay: nothing in flight;
// nginx: its mirror subrequests are done). Reported per system: delivered/s (staging's count
// over the time from wrk's start to staging's last receipt), CPU per delivered request (every
// process of the system: relay; ingress + worker + redis-server; nginx master + workers) and
// loss (accepted by the system minus delivered to staging).
//
//   node bench/whole-chain.mjs [--full] [--json] [--reps=N] [--seconds=S]
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { keysFor } from '@mirrorplane/core';
import { findNginx } from '@mirrorplane/sample-backend';
import { cpuSeconds, freePort, sleep, startCli, startProgram, startRedis, startServer, stopAll } from './support/processes.mjs';
import { runWrk } from './support/wrk.mjs';
import { median, parseArgs, table, writeResults } from './support/report.mjs';

const args = parseArgs();
const reps = Number(args.extra.reps ?? (args.full ? 5 : 3));
const seconds = Number(args.extra.seconds ?? (args.full ? 10 : 5));
const connections = Number(args.extra.connections ?? 64);
const BUILD = fileURLToPath(new URL('./.build/', import.meta.url));
const RELAY_SOURCE = fileURLToPath(new URL('./baseline/relay.go', import.meta.url));
/** The Go toolchain (`GO=/path/to/go` to pick another). */
const GO = process.env.GO ?? 'go';

/** Builds the Go baseline into bench/.build/ (ignored by git); null with the reason when it cannot. */
function buildRelay() {
  const go = spawnSync(GO, ['version'], { encoding: 'utf8' });
  if (go.error || go.status !== 0) return { binary: null, reason: `${GO} is not installed or does not run (Debian: apt-get install -y golang-go)` };
  mkdirSync(BUILD, { recursive: true });
  const binary = join(BUILD, 'relay');
  const env = { ...process.env, GOCACHE: process.env.GOCACHE ?? join(BUILD, 'gocache'), GO111MODULE: 'off', CGO_ENABLED: '0' };
  const built = spawnSync(GO, ['build', '-o', binary, RELAY_SOURCE], { encoding: 'utf8', env });
  if (built.status !== 0) return { binary: null, reason: `go build failed: ${built.stderr || built.stdout}` };
  return { binary, version: go.stdout.trim() };
}

const redis = await startRedis();
const staging = await startServer('staging');

async function startRelay(binary) {
  const proc = await startProgram(binary, ['-listen', '127.0.0.1:0', '-staging', staging.url, '-conns', '64'], /relay listening (\S+)/, {
    HOME: process.env.HOME ?? tmpdir(),
  });
  const url = `http://${proc.match}`;
  return {
    url,
    pids: [proc.pid],
    // Everything answered was handed to a goroutine; done when none is still relaying.
    async settled() {
      const stats = await (await fetch(`${url}/_relay/stats`)).json();
      return stats.inflight === 0;
    },
  };
}

async function startMirrorplane() {
  const prefix = `bench-${randomBytes(3).toString('hex')}`;
  const keys = keysFor(prefix);
  const port = await freePort();
  const common = { REDIS_URL: redis.url, MIRRORPLANE_PREFIX: prefix, ADMIN_PORT: '0' };
  const ingress = await startCli('ingress', { ...common, INGRESS_HOST: '127.0.0.1', INGRESS_PORT: String(port), INGRESS_PROCESSES: '1' });
  const worker = await startCli('worker', { ...common, STAGING_URL: staging.url, WORKER_CONCURRENCY: '64' });
  const client = redis.client();
  return {
    url: `http://127.0.0.1:${port}`,
    pids: [ingress.pid, worker.pid, redis.pid],
    async settled() {
      const [length, pending] = await Promise.all([client.xlen(keys.stream), client.xpending(keys.stream, keys.group).catch(() => [0])]);
      return length === 0 && Number(pending[0]) === 0;
    },
    close: () => client.quit().catch(() => undefined),
  };
}

async function startNginxMirror(binary) {
  const dir = mkdtempSync(join(tmpdir(), 'mp-bench-nginx-'));
  for (const sub of ['client_body', 'proxy', 'fastcgi', 'uwsgi', 'scgi', 'empty']) mkdirSync(join(dir, sub));
  const port = await freePort();
  const root = process.getuid?.() === 0;
  // nginx answers 200 itself: `return` would end the request before the mirror phase, so the
  // request goes to an empty static root whose 404/405 is turned into a 200 by error_page.
  const config = [
    root ? 'user root;' : '',
    'worker_processes auto;',
    'events { worker_connections 4096; }',
    'http {',
    '  access_log off;',
    '  log_not_found off;',
    ...['client_body', 'proxy', 'fastcgi', 'uwsgi', 'scgi'].map((s) => `  ${s}_temp_path ${join(dir, s)};`),
    '  client_body_buffer_size 1m;',
    '  keepalive_requests 1000000;',
    `  upstream staging { server 127.0.0.1:${staging.port}; keepalive 64; }`,
    '  server {',
    `    listen 127.0.0.1:${port};`,
    '    location / {',
    '      mirror /_mirror;',
    '      mirror_request_body on;',
    `      root ${join(dir, 'empty')};`,
    '      error_page 404 405 =200 @ok;',
    '    }',
    '    location @ok { return 200; }',
    '    location = /_mirror {',
    '      internal;',
    '      proxy_pass http://staging$request_uri;',
    '      proxy_http_version 1.1;',
    '      proxy_set_header Host $http_host;',
    '      proxy_set_header Connection "";',
    '      proxy_connect_timeout 250ms;',
    '      proxy_read_timeout 1s;',
    '      proxy_next_upstream off;',
    '    }',
    '  }',
    '}',
  ]
    .filter(Boolean)
    .join('\n');
  writeFileSync(join(dir, 'nginx.conf'), `${config}\n`);
  const proc = await startProgram(
    binary,
    ['-p', dir, '-c', join(dir, 'nginx.conf'), '-g', `daemon off; pid ${join(dir, 'nginx.pid')}; error_log stderr notice;`],
    /start worker process/,
  );
  let lastCount = -1;
  let stableSince = 0;
  return {
    url: `http://127.0.0.1:${port}`,
    pids: [proc.pid],
    // Mirror subrequests end within proxy_read_timeout (1 s): done when staging's count held still that long.
    async settled() {
      const { count } = await staging.ask('count');
      if (count !== lastCount) {
        lastCount = count;
        stableSince = Date.now();
        return false;
      }
      return Date.now() - stableSince > 1200;
    },
    close: () => rmSync(dir, { recursive: true, force: true }),
  };
}

const variants = [];
const skipped = [];
const relay = buildRelay();
if (relay.binary) variants.push({ key: 'relay', name: 'respond-then-relay (Go)', start: () => startRelay(relay.binary) });
else {
  skipped.push({ key: 'relay', reason: relay.reason });
  console.log(`SKIPPED the respond-then-relay baseline: ${relay.reason}\n`);
}
variants.push({ key: 'mirrorplane', name: 'Mirrorplane (ingress + worker + Redis)', start: startMirrorplane });
const nginx = findNginx();
if (nginx) variants.push({ key: 'nginx', name: 'nginx mirror straight to staging', start: () => startNginxMirror(nginx) });
else {
  skipped.push({ key: 'nginx', reason: 'nginx is not installed' });
  console.log('SKIPPED nginx mirror: nginx is not installed\n');
}

async function measure(v, secs) {
  await staging.ask('reset');
  const startedAt = performance.timeOrigin + performance.now();
  const before = v.sys.pids.map(cpuSeconds);
  const wrk = await runWrk({ url: v.sys.url, connections, seconds: secs });
  const accepted = wrk.requests - wrk.errorKinds.status;
  const deadline = Date.now() + 180_000;
  let drained = false;
  while (Date.now() < deadline) {
    if (await v.sys.settled()) {
      drained = true;
      break;
    }
    await sleep(20);
  }
  const cpu = v.sys.pids.reduce((sum, pid, i) => sum + cpuSeconds(pid) - before[i], 0);
  const { count, last } = await staging.ask('count');
  const window = Math.max(secs, (last - startedAt) / 1000);
  return {
    accepted,
    acceptedPerSecond: wrk.rps,
    delivered: count,
    deliveredPerSecond: count / window,
    windowSeconds: window,
    cpuSeconds: cpu,
    cpuUsPerDelivered: count > 0 ? (cpu / count) * 1e6 : NaN,
    lost: Math.max(0, accepted - count),
    duplicates: Math.max(0, count - accepted),
    drained,
    clientP99Ms: wrk.p99Ms,
    wrkErrors: wrk.errors,
  };
}

try {
  for (const v of variants) v.sys = await v.start();
  console.log(`whole chain — wrk -t1 -c${connections}, 1 KiB POST, ${reps} × ${seconds} s interleaved, one shared staging\n`);
  for (const v of variants) await measure(v, 2); // warm-up
  const runs = Object.fromEntries(variants.map((v) => [v.key, []]));
  for (let r = 0; r < reps; r += 1) {
    for (let i = 0; i < variants.length; i += 1) {
      const v = variants[(i + r) % variants.length];
      const result = await measure(v, seconds);
      runs[v.key].push(result);
      console.log(
        `  run ${r + 1}/${reps} ${v.name.padEnd(40)} delivered ${Math.round(result.deliveredPerSecond)}/s  ${result.cpuUsPerDelivered.toFixed(1)} µs CPU/delivered  lost ${result.lost}${result.drained ? '' : ' (not drained)'}`,
      );
    }
  }
  const summary = {};
  for (const v of variants) {
    const rs = runs[v.key];
    summary[v.key] = {
      name: v.name,
      deliveredPerSecond: median(rs.map((x) => x.deliveredPerSecond)),
      acceptedPerSecond: median(rs.map((x) => x.acceptedPerSecond)),
      cpuUsPerDelivered: median(rs.map((x) => x.cpuUsPerDelivered)),
      lost: rs.reduce((a, x) => a + x.lost, 0),
      accepted: rs.reduce((a, x) => a + x.accepted, 0),
      duplicates: rs.reduce((a, x) => a + x.duplicates, 0),
      clientP99Ms: median(rs.map((x) => x.clientP99Ms)),
      allDrained: rs.every((x) => x.drained),
    };
  }
  const base = summary.relay;
  const rows = [['system', 'delivered/s', '× relay', 'accepted/s', 'CPU µs/delivered', '× relay', 'lost', 'client p99 ms']];
  for (const v of variants) {
    const s = summary[v.key];
    s.deliveredRatio = base ? s.deliveredPerSecond / base.deliveredPerSecond : null;
    s.cpuRatio = base ? s.cpuUsPerDelivered / base.cpuUsPerDelivered : null;
    rows.push([s.name, s.deliveredPerSecond, s.deliveredRatio ?? '—', s.acceptedPerSecond, s.cpuUsPerDelivered, s.cpuRatio ?? '—', s.lost, s.clientP99Ms]);
  }
  console.log(`\n${table(rows)}`);
  for (const s of skipped) console.log(`\nSKIPPED ${s.key}: ${s.reason}`);
  if (base) {
    const mp = summary.mirrorplane;
    console.log(`\ngoal: Mirrorplane CPU per delivered ≤ relay (${mp.cpuRatio.toFixed(2)} ×), delivered/s ≥ relay (${mp.deliveredRatio.toFixed(2)} ×)`);
  }
  writeResults('whole-chain', { connections, reps, seconds, bodyBytes: 1024, go: relay.version ?? null, skipped, runs, summary }, args);
} finally {
  for (const v of variants) await v.sys?.close?.();
  await stopAll();
}

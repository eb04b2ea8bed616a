#!/usr/bin/env node
// Ingress throughput and latency with TLS on the traffic port next to the same ingress in
// clear text, in the same invocation, interleaved, medians over repetitions. The baseline is
// the clear-text ingress; bare node:http over TLS and in clear show what TLS costs any Node
// server on this machine, so the ingress's own share of the cost can be told apart.
//
// wrk keeps its connections alive: this is the steady state (one handshake per connection,
// then record encryption); the proxies keep their mirror connections alive the same way.
// wrk cannot present a client certificate, so mutual TLS is not measured here: its cost is
// in the handshake only (a verified chain per connection), which keep-alive amortises.
//
//   node bench/ingress-tls.mjs [--full] [--json] [--reps=N] [--seconds=S] [--connections=C]
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer as createHttps } from 'node:https';
import { createServer as createHttp } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { readFileSync } from 'node:fs';
import { fork } from 'node:child_process';
import { freePort, startCli, startRedis, stopAll } from './support/processes.mjs';
import { runWrk } from './support/wrk.mjs';
import { median, parseArgs, table, writeResults } from './support/report.mjs';

const args = parseArgs();
const reps = Number(args.extra.reps ?? (args.full ? 5 : 3));
const seconds = Number(args.extra.seconds ?? (args.full ? 10 : 5));
const connections = Number(args.extra.connections ?? 64);

/** Bare node:http (or https) in its own process: reads the body, answers 200. */
async function startBare(tls, cert, key) {
  const port = await freePort();
  const child = fork(new URL(import.meta.url), ['--bare-server', String(port), tls ? '1' : '0', cert, key], { stdio: 'ignore' });
  await new Promise((resolve, reject) => {
    child.once('message', resolve);
    child.once('exit', (code) => reject(new Error(`bare server exited ${code}`)));
  });
  return { pid: child.pid, url: `${tls ? 'https' : 'http'}://127.0.0.1:${port}`, stop: () => child.kill('SIGKILL') };
}

if (process.argv[2] === '--bare-server') {
  const [, , , port, tls, certPath, keyPath] = process.argv;
  const handler = (req, res) => {
    req.on('data', () => undefined);
    req.on('end', () => res.writeHead(200, { 'content-length': '0' }).end());
  };
  const server = tls === '1' ? createHttps({ cert: readFileSync(certPath), key: readFileSync(keyPath) }, handler) : createHttp(handler);
  server.keepAliveTimeout = 75_000;
  server.listen(Number(port), '127.0.0.1', () => process.send?.('ready'));
} else {
  // A throw-away self-signed certificate for 127.0.0.1 (wrk does not verify it).
  const dir = mkdtempSync(join(tmpdir(), 'mp-bench-tls-'));
  const cert = join(dir, 'cert.pem');
  const key = join(dir, 'key.pem');
  execFileSync(
    'openssl',
    [
      'req',
      '-x509',
      '-newkey',
      'ec',
      '-pkeyopt',
      'ec_paramgen_curve:prime256v1',
      '-nodes',
      '-keyout',
      key,
      '-out',
      cert,
      '-days',
      '1',
      '-subj',
      '/CN=127.0.0.1',
      '-addext',
      'subjectAltName=IP:127.0.0.1',
    ],
    { stdio: 'ignore' },
  );
  const redis = await startRedis();
  const admin = redis.client();
  async function startIngress(tls) {
    const port = await freePort();
    const proc = await startCli('ingress', {
      REDIS_URL: redis.url,
      MIRRORPLANE_PREFIX: `bench-${randomBytes(3).toString('hex')}`,
      INGRESS_HOST: '127.0.0.1',
      INGRESS_PORT: String(port),
      ADMIN_PORT: '0',
      ...(tls ? { INGRESS_TLS_CERT: cert, INGRESS_TLS_KEY: key } : {}),
    });
    return { ...proc, url: `${tls ? 'https' : 'http'}://127.0.0.1:${port}` };
  }
  const variants = [
    { name: 'ingress, clear text', key: 'ingress', start: () => startIngress(false) },
    { name: 'ingress, TLS', key: 'ingressTls', start: () => startIngress(true) },
    { name: 'bare node:http', key: 'bare', start: () => startBare(false, cert, key) },
    { name: 'bare node:https', key: 'bareTls', start: () => startBare(true, cert, key) },
  ];
  const bares = [];
  try {
    for (const v of variants) {
      v.proc = await v.start();
      if (v.key.startsWith('bare')) bares.push(v.proc);
    }
    const measure = async (v, options) => {
      const result = await runWrk({ url: v.proc.url, pids: [v.proc.pid, redis.pid], ...options });
      await admin.flushall();
      return result;
    };
    console.log(`ingress with TLS vs clear text — wrk -t1 -c${connections}, 1 KiB POST, keep-alive, ${reps} × ${seconds} s interleaved\n`);
    for (const v of variants) await measure(v, { connections, seconds: Math.min(2, seconds) }); // warm-up
    const runs = Object.fromEntries(variants.map((v) => [v.key, []]));
    for (let r = 0; r < reps; r += 1) {
      for (let i = 0; i < variants.length; i += 1) {
        const v = variants[(i + r) % variants.length];
        const result = await measure(v, { connections, seconds });
        runs[v.key].push(result);
        process.stdout.write(
          `  run ${r + 1}/${reps} ${v.name.padEnd(22)} ${Math.round(result.rps)} req/s  p99 ${result.p99Ms.toFixed(2)} ms  errors ${result.errors}\n`,
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
        cpuUsPerRequest: median(rs.map((x) => x.cpuUsPerRequest)),
        errors: rs.reduce((a, x) => a + x.errors, 0),
      };
    }
    const rows = [['server', 'req/s', '× clear ingress', 'p50 ms', 'p99 ms', 'CPU µs/req', 'errors']];
    for (const v of variants) {
      const s = summary[v.key];
      s.ratio = s.rps / summary.ingress.rps;
      rows.push([s.name, s.rps, s.ratio, s.p50Ms, s.p99Ms, s.cpuUsPerRequest, s.errors]);
    }
    console.log(`\n${table(rows)}`);
    const tlsCost = summary.ingressTls.rps / summary.ingress.rps;
    const bareCost = summary.bareTls.rps / summary.bare.rps;
    console.log(`\nTLS keeps ${tlsCost.toFixed(2)} of the ingress's clear-text throughput; ${bareCost.toFixed(2)} of bare node:http's`);
    writeResults('ingress-tls', { connections, reps, seconds, bodyBytes: 1024, runs, summary, tlsRatio: tlsCost, bareTlsRatio: bareCost }, args);
  } finally {
    for (const b of bares) b.stop();
    await admin.quit().catch(() => undefined);
    await stopAll();
    rmSync(dir, { recursive: true, force: true });
  }
}

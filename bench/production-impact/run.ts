// Production impact: does mirroring slow production down, whatever staging does?
//
//   node --import tsx bench/production-impact/run.ts [--rounds 3] [--duration 5] [--connections 64] [--think-ms 20] [--pin] [--write]
//
// One invocation runs wrk through nginx against the sample production backend in six set-ups,
// each on fresh processes: no mirror (the baseline); nginx mirroring to Mirrorplane with staging
// healthy, answering after 2 s, and down; the ingress alone (no workers); and, as the peer
// baseline, nginx mirroring straight to the 2 s staging. Each set-up runs a steady load and
// saturation; every figure is a ratio to "no mirror" under the same load, same invocation.
// --write puts the table, the command, the machine and the date in docs/BENCHMARKS.md
// (the "Production impact" section only).
//
// Every process shares every CPU, as on one small host; the workers and staging behind
// Mirrorplane run at nice 10 (replaying is background work, on its own hosts in a deployment).
// --pin puts nginx and production on CPU 0 and everything else on the other CPUs; on a 2-CPU
// machine that leaves the ingress one core shared with wrk, Redis and the workers, which
// measures that core's contention more than Mirrorplane.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, release, totalmem } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { freePort, LocalRedisServer } from '@mirrorplane/runtime';
import { NginxMirror } from '@mirrorplane/sample-backend';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const CLI = join(ROOT, 'apps/cli/bin/mirrorplane.js');
const BACKEND = fileURLToPath(new URL('./backend.ts', import.meta.url));
const LUA = fileURLToPath(new URL('./post.lua', import.meta.url));
const DOC = join(ROOT, 'docs/BENCHMARKS.md');
const BEGIN = '<!-- production-impact:begin -->';
const END = '<!-- production-impact:end -->';
const STAGING_DELAY_MS = 2000;

const { values: args } = parseArgs({
  options: {
    duration: { type: 'string', default: '5' },
    warmup: { type: 'string', default: '1' },
    rounds: { type: 'string', default: '3' },
    connections: { type: 'string', default: '64' },
    'think-ms': { type: 'string', default: '20' },
    threads: { type: 'string', default: '1' },
    write: { type: 'boolean', default: false },
    pin: { type: 'boolean', default: false },
  },
});
const duration = Number(args.duration);
const warmup = Number(args.warmup);
const connections = Number(args.connections);
const threads = Number(args.threads);
const thinkMs = Number(args['think-ms']);
const rounds = Number(args.rounds);
for (const [name, value] of Object.entries({ duration, warmup, connections, threads, 'think-ms': thinkMs, rounds })) {
  const zeroOk = name === 'warmup' || name === 'think-ms';
  if (!Number.isInteger(value) || value < 0 || (!zeroOk && value === 0)) {
    console.error(`--${name}: expected a whole number${zeroOk ? '' : ' above 0'}, got ${JSON.stringify(args[name as keyof typeof args])}`);
    process.exit(2);
  }
}
const pin = args.pin === true && cpus().length >= 2 && !spawnSync('taskset', ['-V']).error;
const PRODUCTION_CPUS = '0';
const OTHER_CPUS = `1-${cpus().length - 1}`;

for (const [tool, probe] of [
  ['wrk', ['--version']],
  ['redis-server', ['--version']],
  ['nginx', ['-v']],
] as const) {
  const r = spawnSync(tool, probe);
  if (r.error && !(tool === 'nginx' && existsSync('/usr/sbin/nginx'))) {
    console.error(`${tool} is not installed; the benchmark runs it for real (Debian/Ubuntu: apt-get install -y wrk redis-server nginx-light)`);
    process.exit(2);
  }
}

/** Processes started by the current set-up, stopped by pid at its end (and on Ctrl-C). */
const running = new Set<ChildProcess>();
/** The tail of each process's stdout, so a line printed before anyone waited for it is not missed. */
const output = new WeakMap<ChildProcess, string>();
let nginxRunning: NginxMirror | null = null;

function start(command: string, argv: string[], options: { env?: NodeJS.ProcessEnv; cpus?: string; background?: boolean } = {}): ChildProcess {
  let [cmd, full] = pin && options.cpus ? ['taskset', ['-c', options.cpus, command, ...argv]] : [command, argv];
  // Replaying is background work: in a deployment the workers and staging run on their own
  // hosts. Here they share CPUs with the ingress, which sits on production's path (nginx holds
  // a client connection until its mirror is answered), so they yield the CPU to it.
  if (options.background) [cmd, full] = ['nice', ['-n', '10', cmd as string, ...(full as string[])]];
  const child = spawn(cmd, full as string[], { env: options.env ?? process.env, stdio: ['ignore', 'pipe', 'pipe'] });
  running.add(child);
  child.once('exit', () => running.delete(child));
  // Drain the pipes (a full pipe would block the process being measured), keeping a short tail.
  output.set(child, '');
  child.stdout?.on('data', (d: Buffer) => output.set(child, ((output.get(child) ?? '') + d.toString()).slice(-4096)));
  child.stderr?.resume();
  return child;
}

async function stopAll(): Promise<void> {
  await nginxRunning?.stop().catch(() => undefined);
  nginxRunning = null;
  await Promise.all(
    [...running].map(
      (child) =>
        new Promise<void>((resolve) => {
          if (child.exitCode !== null || child.signalCode !== null) return resolve();
          child.once('exit', () => resolve());
          child.kill('SIGTERM');
          // A worker with a large backlog may take its shutdown timeout; the set-up is over anyway.
          setTimeout(() => child.kill('SIGKILL'), 3000).unref();
        }),
    ),
  );
}

process.once('SIGINT', () => {
  console.error('\ninterrupted: stopping every process of the benchmark');
  void stopAll().then(() => process.exit(130));
});

async function waitFor(what: string, check: () => Promise<boolean> | boolean, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

function waitForLine(child: ChildProcess, pattern: RegExp, what: string): Promise<void> {
  return waitFor(what, () => {
    if (child.exitCode !== null) throw new Error(`${what}: exited with ${child.exitCode}: ${output.get(child)}`);
    return pattern.test(output.get(child) ?? '');
  });
}

async function startBackend(name: string, delayMs: number, cpus: string, background = false): Promise<number> {
  const port = await freePort();
  const child = start(process.execPath, ['--import', 'tsx', BACKEND, name, String(port), String(delayMs)], { cpus, background });
  await waitForLine(child, /listening/, `${name} backend`);
  return port;
}

async function startRedis(cpus: string): Promise<{ port: number; dir: string }> {
  // Started through `start` so it is pinned to its CPUs and stopped by pid with the rest.
  const redis = await LocalRedisServer.start({
    dirPrefix: 'mp-impact-redis-',
    args: ['--appendonly', 'no', '--maxmemory-policy', 'noeviction'],
    launch: (command, argv) => start(command, argv, { cpus }),
  });
  return { port: redis.port, dir: redis.dir };
}

interface Mirrorplane {
  ingressPort: number;
  adminPort: number;
  redisPort: number;
  prefix: string;
  dir: string;
}

async function startMirrorplane(stagingUrl: string, workerCount: number): Promise<Mirrorplane> {
  const redis = await startRedis(OTHER_CPUS);
  const prefix = `impact${randomBytes(3).toString('hex')}`;
  const ingressPort = await freePort();
  const adminPort = await freePort();
  const env = { PATH: process.env.PATH ?? '', REDIS_URL: `redis://127.0.0.1:${redis.port}`, MIRRORPLANE_PREFIX: prefix, LOG_LEVEL: 'info' };
  start(process.execPath, [CLI, 'ingress'], {
    env: { ...env, INGRESS_HOST: '127.0.0.1', INGRESS_PORT: String(ingressPort), ADMIN_PORT: String(adminPort) },
    cpus: OTHER_CPUS,
  });
  const workers = Array.from({ length: workerCount }, () =>
    start(process.execPath, [CLI, 'worker'], { env: { ...env, STAGING_URL: stagingUrl, ADMIN_PORT: '0' }, cpus: OTHER_CPUS, background: true }),
  );
  await waitFor('the ingress to be ready', () =>
    fetch(`http://127.0.0.1:${adminPort}/readyz`).then(
      (r) => r.ok,
      () => false,
    ),
  );
  await Promise.all(workers.map((w) => waitForLine(w, /"msg":"worker started"/, 'a worker')));
  return { ingressPort, adminPort, redisPort: redis.port, prefix, dir: redis.dir };
}

async function accepted(adminPort: number): Promise<number> {
  const text = await fetch(`http://127.0.0.1:${adminPort}/metrics`).then(
    (r) => r.text(),
    () => '',
  );
  return Number(/^mirrorplane_ingress_requests_accepted_total(?:\{[^}]*\})? (\d+)/m.exec(text)?.[1] ?? 0);
}

function backlog(m: Mirrorplane): number {
  const r = spawnSync('redis-cli', ['-p', String(m.redisPort), 'xlen', `{${m.prefix}}:stream`], { encoding: 'utf8' });
  return Number(r.stdout.trim()) || 0;
}

interface WrkResult {
  requests: number;
  rps: number;
  p50: number;
  p99: number;
  errors: number;
  non2xx: number;
}

function toMs(value: string): number {
  const m = /^([\d.]+)(us|ms|s|m)$/.exec(value.trim());
  if (!m) throw new Error(`cannot read the latency ${JSON.stringify(value)}`);
  const n = Number(m[1]);
  return m[2] === 'us' ? n / 1000 : m[2] === 'ms' ? n : m[2] === 's' ? n * 1000 : n * 60_000;
}

function runWrk(url: string, seconds: number, think: number): Promise<WrkResult> {
  return new Promise((resolve, reject) => {
    const argv = [`-t${threads}`, `-c${connections}`, `-d${seconds}s`, '--latency', '-s', LUA, url];
    const [cmd, full] = pin ? ['taskset', ['-c', OTHER_CPUS, 'wrk', ...argv]] : ['wrk', argv];
    const child = spawn(cmd, full as string[], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, THINK_MS: String(think) } });
    let out = '';
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString();
    });
    child.stderr.on('data', (d: Buffer) => {
      out += d.toString();
    });
    child.once('exit', (code) => {
      if (code !== 0) return reject(new Error(`wrk exited with ${code}:\n${out}`));
      try {
        const socket = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(out);
        resolve({
          requests: Number(/(\d+) requests in/.exec(out)?.[1]),
          rps: Number(/Requests\/sec:\s+([\d.]+)/.exec(out)?.[1]),
          p50: toMs(/^\s+50%\s+(\S+)/m.exec(out)?.[1] ?? ''),
          p99: toMs(/^\s+99%\s+(\S+)/m.exec(out)?.[1] ?? ''),
          errors: socket ? socket.slice(1).reduce((a, b) => a + Number(b), 0) : 0,
          non2xx: Number(/Non-2xx or 3xx responses: (\d+)/.exec(out)?.[1] ?? 0),
        });
      } catch (error) {
        reject(new Error(`cannot read wrk's output (${(error as Error).message}):\n${out}`));
      }
    });
  });
}

interface Scenario {
  label: string;
  mirror: 'none' | 'mirrorplane' | 'direct';
  staging: 'healthy' | 'slow' | 'down' | null;
  /** Workers behind the ingress (default 2); 0 isolates the cost of the mirror hop itself. */
  workers?: number;
}

const SCENARIOS: Scenario[] = [
  { label: 'no mirror (baseline)', mirror: 'none', staging: null },
  { label: 'Mirrorplane, staging healthy', mirror: 'mirrorplane', staging: 'healthy' },
  { label: `Mirrorplane, staging answers after ${STAGING_DELAY_MS / 1000} s`, mirror: 'mirrorplane', staging: 'slow' },
  { label: 'Mirrorplane, staging down', mirror: 'mirrorplane', staging: 'down' },
  { label: "Mirrorplane ingress alone (no workers: the hop on production's path)", mirror: 'mirrorplane', staging: 'healthy', workers: 0 },
  { label: `peer baseline: nginx mirrors straight to the ${STAGING_DELAY_MS / 1000} s staging`, mirror: 'direct', staging: 'slow' },
];

/** The two loads each set-up runs, in this order, on the same processes. */
interface Load {
  name: string;
  thinkMs: number;
}

const LOADS: Load[] = [
  ...(thinkMs > 0 ? [{ name: `steady load: ${connections} clients, each waiting ${thinkMs} ms after an answer`, thinkMs }] : []),
  { name: `saturation: ${connections} connections sending as fast as answers come`, thinkMs: 0 },
];

interface Row extends WrkResult {
  scenario: Scenario;
  load: Load;
  /** Copies the ingress accepted, as a share of the requests production served (warm-up included). */
  mirrored: number | null;
  backlog: number | null;
}

async function runScenario(scenario: Scenario): Promise<Row[]> {
  const productionPort = await startBackend('production', 0, PRODUCTION_CPUS);
  let mirrorPort: number | null = null;
  let mirrorplane: Mirrorplane | null = null;
  if (scenario.mirror !== 'none') {
    // "Down" is a port nothing listens on: connections are refused at once.
    // In the peer baseline staging is nginx's direct mirror target, on the request path: not background.
    const stagingPort =
      scenario.staging === 'down'
        ? await freePort()
        : await startBackend('staging', scenario.staging === 'slow' ? STAGING_DELAY_MS : 0, OTHER_CPUS, scenario.mirror === 'mirrorplane');
    if (scenario.mirror === 'direct') mirrorPort = stagingPort;
    else {
      mirrorplane = await startMirrorplane(`http://127.0.0.1:${stagingPort}`, scenario.workers ?? 2);
      mirrorPort = mirrorplane.ingressPort;
    }
  }
  nginxRunning = await NginxMirror.start({ productionPort, mirrorPort, ...(pin ? { cpus: PRODUCTION_CPUS } : {}) });
  const url = `${nginxRunning.url}/events`;
  const rows: Row[] = [];
  for (const load of LOADS) {
    const before = mirrorplane ? await accepted(mirrorplane.adminPort) : 0;
    const warm = warmup > 0 ? await runWrk(url, warmup, load.thinkMs) : null;
    const result = await runWrk(url, duration, load.thinkMs);
    // Copies in flight when wrk stopped finish within nginx's 1 s mirror timeout.
    if (mirrorplane) await new Promise((r) => setTimeout(r, 1200));
    const copies = mirrorplane ? (await accepted(mirrorplane.adminPort)) - before : 0;
    const served = result.requests + (warm?.requests ?? 0);
    rows.push({ ...result, scenario, load, mirrored: mirrorplane ? copies / Math.max(1, served) : null, backlog: mirrorplane ? backlog(mirrorplane) : null });
    const row = rows.at(-1) as Row;
    process.stderr.write(
      `  ${load.thinkMs > 0 ? 'steady' : 'saturated'}: ${row.rps.toFixed(0)} req/s, p50 ${ms(row.p50)}, p99 ${ms(row.p99)}${row.mirrored !== null ? `, copies taken ${(100 * row.mirrored).toFixed(0)}%, backlog ${row.backlog}` : ''}\n`,
    );
  }
  await stopAll();
  if (mirrorplane) rmSync(mirrorplane.dir, { recursive: true, force: true });
  return rows;
}

function ratio(value: number, base: number): string {
  return base > 0 ? `${(value / base).toFixed(2)}×` : '—';
}

function ms(value: number): string {
  return value >= 100 ? `${value.toFixed(0)} ms` : value >= 10 ? `${value.toFixed(1)} ms` : `${value.toFixed(2)} ms`;
}

function version(command: string, argv: string[], pattern: RegExp): string {
  const r = spawnSync(command, argv, { encoding: 'utf8' });
  return pattern.exec(`${r.stdout ?? ''}${r.stderr ?? ''}`)?.[1] ?? '?';
}

function table(rows: Row[]): string[] {
  const base = rows[0] as Row;
  const lines = [
    '| set-up | req/s | × | p50 | × | p99 | × | copies taken by the ingress | backlog at the end | errors (all rounds) |',
    '|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|',
  ];
  for (const r of rows) {
    const mirrored = r.mirrored === null ? '—' : `${(100 * r.mirrored).toFixed(0)}%`;
    lines.push(
      `| ${r.scenario.label} | ${r.rps.toFixed(0)} | ${ratio(r.rps, base.rps)} | ${ms(r.p50)} | ${ratio(r.p50, base.p50)} | ${ms(r.p99)} | ${ratio(r.p99, base.p99)} | ${mirrored} | ${r.backlog ?? '—'} | ${r.errors + r.non2xx} |`,
    );
  }
  const withMirrorplane = rows.filter((r) => r.scenario.mirror === 'mirrorplane' && r.scenario.workers !== 0);
  const worstP99 = Math.max(...withMirrorplane.map((r) => r.p99 / base.p99));
  const worstRps = Math.min(...withMirrorplane.map((r) => r.rps / base.rps));
  const peer = rows.find((r) => r.scenario.mirror === 'direct');
  lines.push(
    '',
    `With Mirrorplane, across the three staging conditions, production's p99 was at most ${worstP99.toFixed(2)}× and its throughput at least ${worstRps.toFixed(2)}× "no mirror"` +
      ` (goal: p99 within 1.10×: ${worstP99 <= 1.1 ? 'met' : 'not met'}).` +
      (peer ? ` Mirroring straight to the slow staging: ${ratio(peer.rps, base.rps)} the throughput, ${ratio(peer.p99, base.p99)} the p99.` : ''),
  );
  return lines;
}

function render(rows: Row[], command: string): string {
  const cpu = cpus();
  const machine =
    `${cpu.length} × ${cpu[0]?.model.trim() ?? 'unknown CPU'}, ${(totalmem() / 2 ** 30).toFixed(1)} GiB, Linux ${release()}; ` +
    `Node ${process.versions.node}, nginx ${version('nginx', ['-v'], /nginx\/(\S+)/)}, Redis ${version('redis-server', ['--version'], /v=(\S+)/)}, wrk ${version('wrk', ['--version'], /wrk (\S+)/)}`;
  const lines = [
    BEGIN,
    '## Production impact',
    '',
    'The promise: mirroring must not slow production, whatever staging does. wrk sends',
    `\`POST /events\` (1 KiB JSON) through nginx to the sample production backend over ${connections} connections, ${duration} s`,
    `per load after a ${warmup} s warm-up; each figure is the median of ${rounds} rounds, and each round runs every set-up in turn,`,
    `on fresh processes. nginx's \`mirror\` sends every`,
    "request's copy to the Mirrorplane ingress (with Redis and two workers replaying to staging), or, in the",
    'peer baseline, straight to staging. Ratios are to "no mirror" under the same load in the same invocation.',
    pin
      ? `nginx and production were pinned to CPU ${PRODUCTION_CPUS}, wrk and everything else to CPU${OTHER_CPUS === '1-1' ? ' 1' : `s ${OTHER_CPUS}`} (\`taskset\`), as if Mirrorplane ran on other hosts;`
      : 'No CPU pinning: every process shared every CPU;',
    'the workers and staging behind Mirrorplane ran at `nice 10`: replaying is background work, which in a deployment runs on its own hosts.',
    '',
    '```',
    command,
    '```',
    '',
    `Machine: ${machine}. Date: ${new Date().toISOString().slice(0, 16).replace('T', ' ')} UTC. Load average (1 min) before the run: ${loadBefore.toFixed(1)}.`,
  ];
  for (const load of LOADS) {
    lines.push('', `### ${load.name[0]?.toUpperCase()}${load.name.slice(1)}`, '', ...table(rows.filter((r) => r.load === load)));
  }
  lines.push(
    '',
    "How to read it: nginx answers the client with production's response at once, but keeps the",
    "connection until the mirror subrequest is answered (or its 1 s timeout). So the mirror target's",
    'answer time bounds how fast a connection can go: mirroring straight to a slow staging holds',
    "production's connections, while the ingress answers as soon as Redis has the entry, whatever",
    'staging does. "Backlog at the end" is what Redis still held for the workers: a slow or absent',
    'staging delays the replays, not production. Copies taken below 100% were refused (503) or timed',
    'out at nginx: lost to staging, never to production.',
    '',
    'Here every process shares the same CPUs, wrk included, so the Mirrorplane rows also pay for',
    'Redis, the workers and staging running next to production; in a deployment they run on their',
    'own hosts. The "ingress alone" row, with no workers, isolates what stays on production\'s path:',
    "the copy nginx sends and the ingress's append to Redis. The set-ups are run one after the",
    'other on a shared machine: compare rows of one table, not figures across runs.',
    END,
  );
  return lines.join('\n');
}

function writeSection(section: string): void {
  // Re-read right before writing: other sections of this file belong to other benchmarks.
  const current = existsSync(DOC) ? readFileSync(DOC, 'utf8') : '# Benchmarks\n';
  const begin = current.indexOf(BEGIN);
  const end = current.indexOf(END);
  const next = begin !== -1 && end > begin ? `${current.slice(0, begin)}${section}${current.slice(end + END.length)}` : `${current.trimEnd()}\n\n${section}\n`;
  writeFileSync(DOC, next);
}

/** The 1-minute load average before the run: figures from a busy machine are noisier. */
const loadBefore = loadavg()[0] ?? 0;
const runs: Row[] = [];
process.on('unhandledRejection', (error) => {
  console.error(error);
  void stopAll().then(() => process.exit(1));
});
try {
  // Rounds go through every set-up in turn, so a machine that gets busier or quieter during the
  // invocation affects every set-up alike; each figure is the median of its rounds.
  for (let round = 1; round <= rounds; round++) {
    for (const scenario of SCENARIOS) {
      process.stderr.write(`round ${round}/${rounds}: ${scenario.label}…\n`);
      runs.push(...(await runScenario(scenario)));
    }
  }
} finally {
  await stopAll();
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? (sorted[mid] as number) : ((sorted[mid - 1] as number) + (sorted[mid] as number)) / 2;
}

const rows: Row[] = [];
for (const scenario of SCENARIOS) {
  for (const load of LOADS) {
    const same = runs.filter((r) => r.scenario === scenario && r.load === load);
    const pick = (f: (r: Row) => number) => median(same.map(f));
    rows.push({
      scenario,
      load,
      requests: pick((r) => r.requests),
      rps: pick((r) => r.rps),
      p50: pick((r) => r.p50),
      p99: pick((r) => r.p99),
      errors: same.reduce((a, r) => a + r.errors, 0),
      non2xx: same.reduce((a, r) => a + r.non2xx, 0),
      mirrored: scenario.mirror === 'mirrorplane' ? pick((r) => r.mirrored ?? 0) : null,
      backlog: scenario.mirror === 'mirrorplane' ? Math.round(pick((r) => r.backlog ?? 0)) : null,
    });
  }
}
const command = `node --import tsx bench/production-impact/run.ts ${process.argv.slice(2).join(' ')}`.trim();
const section = render(rows, command);
process.stdout.write(`${section}\n`);
if (args.write) {
  writeSection(section);
  process.stderr.write(`wrote the "Production impact" section of ${DOC}\n`);
}

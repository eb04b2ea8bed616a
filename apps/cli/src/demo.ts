import { commandHint } from './format.js';
import type { ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { Queue } from 'bullmq';
import type { Redis } from 'ioredis';
import { headerValue, keysFor, LocalProcessError, PrerequisiteError } from '@mirrorplane/core';
import {
  closeRedis,
  createLogger,
  createRedis,
  createRetryQueue,
  freePort,
  LocalRedisServer,
  readStatus,
  redisServerInstalled,
  spawnInOwnGroup,
  type RetryJobData,
  type Status,
} from '@mirrorplane/runtime';
import { NginxMirror, SampleBackend, findNginx, type ReceivedRequest } from '@mirrorplane/sample-backend';

/**
 * `mirrorplane demo` (`npm run demo`): the whole local topology in one command, the same one
 * the end-to-end test runs — nginx mirroring in front of a sample production API, Redis, the
 * ingress, two workers and a sample staging API, every one a real process on loopback. It
 * sends a little traffic through nginx, prints what production and staging answer and a live
 * summary, and stops everything it started when done (or on Ctrl-C).
 */
export interface DemoOptions {
  /** Requests to send through nginx. */
  requests: number;
  /** Keep running after the traffic, for the user's own curl, until Ctrl-C. */
  keep: boolean;
  /** nginx's port (0: 8000 when free, else any). */
  port: number;
  out: (s: string) => void;
  err: (s: string) => void;
  /** The environment the demo was started in; only PATH is passed on to the processes it starts. */
  env: Readonly<NodeJS.ProcessEnv>;
}

const CLI = fileURLToPath(new URL('../bin/mirrorplane.js', import.meta.url));
/**
 * The compose topology's config file: its rule moves every replay under /v2, where staging
 * serves. Shipped inside the package by scripts/pack.mjs (`examples/` next to `lib/`), so the
 * installed CLI finds it; from a checkout it is the repository's own file.
 */
export function demoConfigPath(): string {
  const candidates = ['../examples/compose/mirrorplane.yaml', '../../../examples/compose/mirrorplane.yaml'].map((p) =>
    fileURLToPath(new URL(p, import.meta.url)),
  );
  const found = candidates.find((p) => existsSync(p));
  if (!found)
    throw new LocalProcessError(
      `the demo's config file is missing from this installation (looked for ${candidates.join(' and ')}); reinstall the CLI from its tarball`,
    );
  return found;
}
const STAGING_PATH_PREFIX = '/v2';
const PREFIX = 'demo';

/** A child process of the demo, with its log lines kept and its warnings passed on. */
class DemoProcess {
  readonly name: string;
  readonly child: ChildProcess;
  readonly exited: Promise<void>;
  readonly #logs: Record<string, unknown>[] = [];
  #partial = '';

  constructor(name: string, command: string, args: string[], env: NodeJS.ProcessEnv, err: (s: string) => void) {
    this.name = name;
    // Own process group: Ctrl-C reaches the demo only, which stops everything in order
    // (nginx and the ingress first, the workers next, Redis last).
    this.child = spawnInOwnGroup(command, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
    this.exited = new Promise((resolve) => this.child.once('exit', () => resolve()));
    this.child.stdout?.on('data', (d: Buffer) => {
      const lines = (this.#partial + d.toString()).split('\n');
      this.#partial = lines.pop() ?? '';
      for (const line of lines) {
        if (!line.startsWith('{')) continue;
        try {
          const log = JSON.parse(line) as Record<string, unknown>;
          this.#logs.push(log);
          if (typeof log.level === 'number' && log.level >= 40) err(`  [${name}] ${String(log.msg)}${log.err ? `: ${String(log.err)}` : ''}\n`);
        } catch {
          // not a log line
        }
      }
    });
    this.child.stderr?.on('data', (d: Buffer) => err(`  [${name}] ${d.toString()}`));
  }

  async waitForLog(msg: string, timeoutMs = 20_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!this.#logs.some((l) => l.msg === msg)) {
      if (this.child.exitCode !== null) throw new LocalProcessError(`${this.name} exited with code ${this.child.exitCode} before it was ready`);
      if (Date.now() > deadline) throw new LocalProcessError(`${this.name} did not log "${msg}" within ${timeoutMs / 1000} s`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  async stop(signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill(signal);
    await this.exited;
  }
}

async function ingressAccepted(adminPort: number): Promise<number> {
  const res = await fetch(`http://127.0.0.1:${adminPort}/metrics`);
  const text = await res.text();
  const match = /^mirrorplane_ingress_requests_accepted_total(?:\{[^}]*\})? (\d+)/m.exec(text);
  return match ? Number(match[1]) : 0;
}

async function waitUntilReady(adminPort: number, what: string): Promise<void> {
  const deadline = Date.now() + 20_000;
  for (;;) {
    const ok = await fetch(`http://127.0.0.1:${adminPort}/readyz`).then(
      (r) => r.ok,
      () => false,
    );
    if (ok) return;
    if (Date.now() > deadline) throw new LocalProcessError(`${what} was not ready within 20 s`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** The traffic the demo sends: a small order workflow plus a binary upload, cycled. */
function demoRequest(i: number): { method: string; path: string; body?: Buffer; type?: string } {
  const n = Math.floor(i / 8);
  const id = `ord_${2 * n + 1}`;
  const json = (v: unknown) => Buffer.from(JSON.stringify(v));
  switch (i % 8) {
    case 0:
      return { method: 'POST', path: '/orders', body: json({ item: 'book', qty: 1 }), type: 'application/json' };
    case 1:
      return { method: 'POST', path: '/orders', body: json({ item: 'pen', qty: 3, note: 'Zoë' }), type: 'application/json' };
    case 2:
      return { method: 'GET', path: `/orders/${id}` };
    case 3:
      return { method: 'PUT', path: `/orders/${id}`, body: json({ item: 'book', qty: 2 }), type: 'application/json' };
    case 4:
      return { method: 'GET', path: '/orders?limit=10' };
    case 5:
      return { method: 'POST', path: '/uploads/avatar.png', body: randomBytes(4096), type: 'application/octet-stream' };
    case 6:
      return { method: 'DELETE', path: `/orders/${id}` };
    default:
      return { method: 'GET', path: `/orders/${id}` };
  }
}

function short(body: Buffer | string, max = 60): string {
  // Control characters other than tab, LF, VT, FF and CR mark a body as binary: that is the point of the pattern.
  // eslint-disable-next-line no-control-regex
  const binary = /[\x00-\x08\x0e-\x1f]/;
  const text = typeof body === 'string' ? body : binary.test(body.toString('latin1')) ? `<${body.length} bytes of binary>` : body.toString('utf8');
  return text.length > max ? `${text.slice(0, max - 1)}…` : text;
}

/**
 * Runs the demo. Resolves when it finished on its own (or after Ctrl-C), having stopped every
 * process it started.
 */
export async function runDemo(options: DemoOptions): Promise<void> {
  const { out, err } = options;
  const nginxBinary = findNginx();
  const redisFound = redisServerInstalled();
  if (!nginxBinary || !redisFound) {
    const missing = [!nginxBinary ? 'nginx' : null, !redisFound ? 'redis-server' : null].filter(Boolean).join(' and ');
    throw new PrerequisiteError(
      `the demo runs real ${missing === 'nginx' ? 'nginx' : missing}, which ${missing.includes(' and ') ? 'are' : 'is'} not installed. ` +
        'Debian/Ubuntu: apt-get install -y nginx-light redis-server; macOS: brew install nginx redis. ' +
        'Nothing is started as a service: the demo runs them as plain processes and stops them at the end.',
    );
  }

  const processes: DemoProcess[] = [];
  let nginx: NginxMirror | null = null;
  let production: SampleBackend | null = null;
  let staging: SampleBackend | null = null;
  let statusRedis: Redis | null = null;
  let statusBull: Redis | null = null;
  let queue: Queue<RetryJobData> | null = null;
  let redis: LocalRedisServer | null = null;
  let ticker: NodeJS.Timeout | null = null;
  let stopping: Promise<void> | null = null;
  let interrupted: () => void = () => undefined;
  const interruptedPromise = new Promise<void>((resolve) => {
    interrupted = resolve;
  });

  const killAll = () => {
    for (const p of processes) if (p.child.exitCode === null) p.child.kill('SIGKILL');
    if (redis?.child?.exitCode === null) redis.child.kill('SIGKILL');
  };
  process.on('exit', killAll);

  const stop = (): Promise<void> => {
    stopping ??= (async () => {
      if (ticker) clearInterval(ticker);
      out('\nstopping: nginx, ingress, workers, Redis…\n');
      await nginx?.stop().catch(() => undefined);
      // The ingress and workers first (they finish what they hold), Redis last.
      await Promise.all(processes.map((p) => p.stop()));
      await queue?.close().catch(() => undefined);
      if (statusRedis) await closeRedis(statusRedis).catch(() => undefined);
      if (statusBull) await closeRedis(statusBull).catch(() => undefined);
      await redis?.stop();
      await redis?.close();
      await production?.close();
      await staging?.close();
      process.off('exit', killAll);
      out('stopped everything the demo started.\n');
    })();
    return stopping;
  };

  let signals = 0;
  const onSignal = () => {
    signals += 1;
    if (signals > 1) {
      err('second Ctrl-C: killing everything now\n');
      killAll();
      process.exit(1);
    }
    interrupted();
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);

  try {
    // Redis, private to the demo: data is not kept.
    // Own process group: Ctrl-C reaches the demo only, which stops Redis last.
    redis = await LocalRedisServer.start({
      ownProcessGroup: true,
      dirPrefix: 'mirrorplane-demo-redis-',
      args: ['--appendonly', 'no', '--maxmemory-policy', 'noeviction'],
    });
    const redisPort = redis.port;
    const redisUrl = redis.url;

    const productionRequests: ReceivedRequest[] = [];
    const stagingRequests: ReceivedRequest[] = [];
    production = new SampleBackend({ name: 'production', onRequest: (r) => productionRequests.push(r) });
    const productionPort = await production.listen(0);
    // Staging is the same API as production, served under /v2, as in docker-compose: the
    // rule in examples/compose/mirrorplane.yaml is what makes the replays land there.
    staging = new SampleBackend({
      name: 'staging',
      pathPrefix: STAGING_PATH_PREFIX,
      onRequest: (r) => {
        stagingRequests.push(r);
        out(`    ↳ staging   ${r.method.padEnd(6)} ${r.url.padEnd(25)} → ${r.status}\n`);
      },
    });
    const stagingPort = await staging.listen(0);

    const ingressPort = await freePort(0);
    const ingressAdminPort = await freePort(0);
    const env = {
      PATH: options.env.PATH ?? '',
      REDIS_URL: redisUrl,
      MIRRORPLANE_PREFIX: PREFIX,
      LOG_LEVEL: 'info',
    };
    const ingress = new DemoProcess(
      'ingress',
      process.execPath,
      [CLI, 'ingress'],
      { ...env, INGRESS_PORT: String(ingressPort), INGRESS_HOST: '127.0.0.1', ADMIN_PORT: String(ingressAdminPort) },
      err,
    );
    processes.push(ingress);
    for (const n of [1, 2]) {
      processes.push(
        new DemoProcess(
          `worker ${n}`,
          process.execPath,
          [CLI, 'worker'],
          {
            ...env,
            MIRRORPLANE_CONFIG: demoConfigPath(),
            STAGING_URL: `http://127.0.0.1:${stagingPort}`,
            ADMIN_PORT: '0',
            REPLAY_ATTEMPTS: '3',
            REPLAY_BACKOFF_MS: '200',
          },
          err,
        ),
      );
    }
    await waitUntilReady(ingressAdminPort, 'the ingress');
    await Promise.all(processes.slice(1).map((p) => p.waitForLog('worker started')));
    nginx = await NginxMirror.start({ productionPort, mirrorPort: ingressPort, port: await freePort(options.port || 8000) });

    const logger = createLogger({ logLevel: 'silent' }, 'demo');
    statusRedis = createRedis({ redisUrl, appendTimeoutMs: 2000 }, 'cli', logger);
    statusBull = createRedis({ redisUrl, appendTimeoutMs: 2000 }, 'cli', logger);
    const keys = keysFor(PREFIX);
    queue = createRetryQueue(keys, statusBull);
    queue.on('error', () => undefined);
    const summary = async (): Promise<{ line: string; mirrored: number; status: Status }> => {
      const [mirrored, status] = await Promise.all([ingressAccepted(ingressAdminPort), readStatus(statusRedis as Redis, queue as Queue<RetryJobData>, keys)]);
      const line =
        `production served ${productionRequests.length} · mirrored ${mirrored} · replayed ${status.replayed} · failed ${status.failed}` +
        (status.backlog + status.pending + status.retrying > 0 ? ` · in progress ${status.backlog + status.pending + status.retrying}` : '');
      return { line, mirrored, status };
    };

    out(
      '\nMirrorplane demo: every process below is real and runs on loopback.\n\n' +
        `  client ──► nginx :${nginx.port} ──► production :${productionPort}\n` +
        `               └─ mirror copy ──► ingress :${ingressPort} ──► redis :${redisPort} ──► 2 workers ──► staging :${stagingPort}${STAGING_PATH_PREFIX}\n\n` +
        `Sending ${options.requests} requests through nginx…\n\n`,
    );

    let lastLine = '';
    // A summary line every second, printed only when it changed.
    const tick = () =>
      setInterval(() => {
        summary().then(
          ({ line }) => {
            if (line !== lastLine) out(` ▸ ${line}\n`);
            lastLine = line;
          },
          () => undefined,
        );
      }, 1000);
    ticker = tick();

    for (let i = 0; i < options.requests && signals === 0; i++) {
      const r = demoRequest(i);
      const res = await fetch(`${nginx.url}${r.path}`, {
        method: r.method,
        ...(r.body ? { body: r.body, headers: { 'content-type': r.type ?? 'application/octet-stream' } } : {}),
      });
      const text = Buffer.from(await res.arrayBuffer());
      out(`  production  ${r.method.padEnd(6)} ${r.path.padEnd(25)} → ${res.status}  ${short(text)}\n`);
      await Promise.race([new Promise((resolve) => setTimeout(resolve, 250)), interruptedPromise]);
    }

    if (signals === 0) {
      // Wait for the replays to finish: every mirrored request replayed or failed.
      const deadline = Date.now() + 30_000;
      for (;;) {
        const { mirrored, status } = await summary();
        if (status.replayed + status.failed >= mirrored && status.backlog + status.pending + status.retrying === 0) break;
        if (Date.now() > deadline || signals > 0) break;
        await Promise.race([new Promise((resolve) => setTimeout(resolve, 200)), interruptedPromise]);
      }
      if (ticker) clearInterval(ticker);
      const { line } = await summary();
      // nginx sent the same X-Request-ID to production and to the mirror: pair them up by it.
      const byId = new Map(stagingRequests.map((r) => [headerValue(r.rawHeaders, 'x-request-id'), r]));
      let same = 0;
      for (const p of productionRequests) if (byId.get(headerValue(p.rawHeaders, 'x-request-id'))?.status === p.status) same += 1;
      out(
        `\nSummary: ${line}\n` +
          `Production answered every request itself, at once; each copy went through the ingress, Redis and a worker\n` +
          `to staging, which serves under ${STAGING_PATH_PREFIX} (examples/compose/mirrorplane.yaml rewrote the paths).\n` +
          `Staging answered ${same} of ${productionRequests.length} requests with the same status as production.\n`,
      );
      if (options.keep && signals === 0) {
        out(
          `\nStill running. Try it yourself (Ctrl-C stops everything):\n` +
            `  curl -i -X POST localhost:${nginx.port}/orders -H 'content-type: application/json' -d '{"item":"mug"}'\n` +
            `  ${commandHint('status', { redisUrl, prefix: PREFIX })}\n\n`,
        );
        ticker = tick();
        await interruptedPromise;
      }
    }
  } finally {
    await stop();
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}

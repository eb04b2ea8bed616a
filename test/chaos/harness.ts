import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import { MirrorplaneProcess, RedisServer, freePort, requestHead, sendRaw, waitFor, withDeadline } from '../helpers/index.js';
import { ChaosStaging, bodyFor } from './chaos-staging.js';
import { createRandom, describeSchedule, planSchedule, type Fault } from './schedule.js';

/** Limits the run asserts; each is stated in docs/RELIABILITY.md. */
export interface ChaosLimits {
  /** Peak Redis `used_memory`. */
  redisMemoryBytes: number;
  /** Peak RSS of any ingress, worker or redis-server process. */
  processRssBytes: number;
  /** Time everything unfinished has, once the load stops and staging is healthy, to finish. */
  drainMs: number;
  /** Time a worker with free slots may go without finishing a replay while entries wait. */
  progressMs: number;
  /** Extra completed copies allowed: `duplicateFraction × accepted + duplicateSlack`. */
  duplicateFraction: number;
  duplicateSlack: number;
}

export interface ChaosOptions {
  seed: number;
  /** How long faults are injected while the load runs. */
  durationMs: number;
  /** How long the load goes on against a healthy deployment after the faults (liveness is watched). */
  tailMs?: number;
  workers?: number;
  /** Requests started per second. */
  rate?: number;
  limits?: Partial<ChaosLimits>;
  /** Progress lines (faults as they happen); the report is returned, not printed. */
  log?: (line: string) => void;
}

export interface ChaosReport {
  seed: number;
  schedule: string;
  sent: number;
  accepted: number;
  refused: Record<string, number>;
  faultsInjected: Record<string, number>;
  completedAtStaging: number;
  inFailedSet: number;
  failedReasons: Record<string, number>;
  droppedByRule: number;
  duplicateRequests: number;
  extraCopies: number;
  maxAttempt: number;
  peakRedisMemory: number;
  peakRss: Record<string, number>;
  drainedAfterMs: number | null;
  /** Consumers left in the group at the end, against the workers alive (dead ones are not pruned yet: issue 11, fault 7). */
  groupConsumers: number | null;
  workersAlive: number;
  violations: string[];
}

const DEFAULT_LIMITS: ChaosLimits = {
  redisMemoryBytes: 128 * 2 ** 20,
  processRssBytes: 400 * 2 ** 20,
  drainMs: 180_000,
  progressMs: 15_000,
  duplicateFraction: 0.25,
  duplicateSlack: 200,
};

/** Settings every process of the run gets: chosen so that each staging mode matters. */
const CLAIM_IDLE_MS = 1000;
const SLOW_MS = 1500; // slower than CLAIM_IDLE_MS, faster than REPLAY_TIMEOUT_MS
const CONCURRENCY = 8;
const MAX_BACKLOG = 3000;

function rssOf(pid: number | undefined | null): number {
  if (!pid) return 0;
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) * 1024 : 0;
  } catch {
    return 0;
  }
}

const alive = (p: MirrorplaneProcess) => p.child.exitCode === null && p.child.signalCode === null;

/** A one-shot Redis command that gives up after `ms` (Redis may be paused or restarting). */
async function withClient<T>(url: string, ms: number, run: (r: Redis) => Promise<T>): Promise<T | null> {
  const client = new Redis(url, {
    lazyConnect: true,
    maxRetriesPerRequest: 0,
    enableOfflineQueue: false,
    commandTimeout: ms,
    connectTimeout: ms,
    retryStrategy: () => null,
  });
  client.on('error', () => undefined);
  try {
    await client.connect();
    return await run(client);
  } catch {
    return null;
  } finally {
    client.disconnect();
  }
}

async function metricSum(adminPort: number, name: string): Promise<number | null> {
  try {
    const controller = AbortSignal.timeout(3000);
    const text = await (await fetch(`http://127.0.0.1:${adminPort}/metrics`, { signal: controller })).text();
    let sum = 0;
    for (const line of text.split('\n'))
      if (line.startsWith(name) && (line[name.length] === ' ' || line[name.length] === '{')) sum += Number(line.split(' ').pop());
    return sum;
  } catch {
    return null;
  }
}

interface WorkerSlot {
  process: MirrorplaneProcess;
  adminPort: number;
  consumer: string;
}

/**
 * Runs one chaos schedule against real processes: a redis-server with AOF (`everysec`), the
 * real CLI's ingress and workers, and `ChaosStaging`. Faults are injected while a steady load
 * runs; then staging is healthy for `tailMs` while liveness is watched; then the load stops,
 * the deployment must drain, and the invariants are checked (see `ChaosReport.violations`).
 * Every process and server is stopped before it returns, whatever happens.
 */
export async function runChaos(options: ChaosOptions): Promise<ChaosReport> {
  const limits = { ...DEFAULT_LIMITS, ...options.limits };
  const log = options.log ?? (() => undefined);
  const schedule = planSchedule(options.seed, options.durationMs);
  const tailMs = options.tailMs ?? 15_000;
  const workerCount = options.workers ?? 2;
  const rate = options.rate ?? 80;
  const violations: string[] = [];
  const faultsInjected: Record<string, number> = {};
  const peakRss: Record<string, number> = { ingress: 0, worker: 0, redis: 0 };
  let peakRedisMemory = 0;

  const redis = await RedisServer.start({ args: ['--appendonly', 'yes', '--appendfsync', 'everysec', '--maxmemory-policy', 'noeviction'] });
  const staging = await ChaosStaging.start(SLOW_MS);
  const prefix = `chaos${randomBytes(3).toString('hex')}`;
  const rulesFile = join(redis.dir, 'chaos-rules.yaml');
  writeFileSync(rulesFile, 'rules:\n  - name: chaos-drop\n    match: { pathPrefix: /drop/ }\n    drop: true\n');
  const env: Record<string, string> = {
    REDIS_URL: redis.url,
    MIRRORPLANE_PREFIX: prefix,
    STAGING_URL: staging.url,
    MIRRORPLANE_CONFIG: rulesFile,
    WORKER_CONCURRENCY: String(CONCURRENCY),
    CLAIM_IDLE_MS: String(CLAIM_IDLE_MS),
    REPLAY_TIMEOUT_MS: '3000',
    // Ten tries, delays from 250 ms doubling up to 10 s: the longest wait fits in drainMs.
    REPLAY_ATTEMPTS: '10',
    REPLAY_BACKOFF_MS: '250',
    RETRY_MAX_DELAY_MS: '10000',
    SHUTDOWN_TIMEOUT_MS: '1000',
    APPEND_TIMEOUT_MS: '1000',
    MAX_BACKLOG: String(MAX_BACKLOG),
  };
  const ingressPort = await freePort();
  let ingress: MirrorplaneProcess | null = null;
  let ingressAdmin = 0;
  const workers: WorkerSlot[] = [];
  const everyWorker: MirrorplaneProcess[] = [];
  let paused = false;

  // The start lines are logged at info, so processes run at info; their kept output is
  // trimmed as it grows (a long run logs every fault's aftermath).
  const startIngress = async () => {
    ingressAdmin = await freePort();
    const p = new MirrorplaneProcess(['ingress'], { ...env, INGRESS_PORT: String(ingressPort), INGRESS_HOST: '127.0.0.1', ADMIN_PORT: String(ingressAdmin) });
    ingress = p;
    await p.waitForLog('ingress listening', 60_000);
  };
  const startWorker = async (): Promise<void> => {
    const adminPort = await freePort();
    const p = new MirrorplaneProcess(['worker'], { ...env, ADMIN_PORT: String(adminPort) });
    everyWorker.push(p);
    const line = await p.waitForLog('worker started', 60_000);
    workers.push({ process: p, adminPort, consumer: String(line.consumer) });
  };
  const trimOutput = () => {
    for (const p of [ingress, ...everyWorker]) if (p && p.stdout.length > 1_000_000) p.stdout = p.stdout.slice(-200_000);
  };

  // The load: POSTs with X-Request-ID and a body derived from it; one in ten to /drop/, which
  // the rule drops. Only a 200 is accepted.
  const random = createRandom(options.seed ^ 0x5eed);
  const accepted = new Set<string>();
  /** Ids sent to /drop/, which the rule drops. */
  const dropIds = new Set<string>();
  const refused: Record<string, number> = {};
  let sent = 0;
  const inFlight = new Set<Promise<void>>();
  let loadTimer: NodeJS.Timeout | null = null;
  const sendOne = () => {
    const id = `${prefix}-${sent++}`;
    const drop = random() < 0.1;
    const size = Math.floor(random() * 2048);
    const body = bodyFor(id, size);
    const target = drop ? `/drop/${id}` : `/load/${id}`;
    if (drop) dropIds.add(id);
    const p = Promise.race([
      sendRaw(ingressPort, requestHead('POST', target, ['Host', 'chaos.example', 'X-Request-ID', id, 'X-Chaos-Size', String(size)], size), body),
      new Promise<never>((_, reject) => setTimeout(() => reject(Object.assign(new Error('no answer in 30 s'), { code: 'client_timeout' })), 30_000).unref()),
    ])
      .then(
        (r) => {
          if (r.status === 200) accepted.add(id);
          else {
            const reason = `${r.status} ${/x-mirrorplane-drop: (\S+)/.exec(r.head)?.[1] ?? ''}`.trim();
            refused[reason] = (refused[reason] ?? 0) + 1;
          }
        },
        (error: NodeJS.ErrnoException) => {
          refused[error.code ?? 'no answer'] = (refused[error.code ?? 'no answer'] ?? 0) + 1;
        },
      )
      .finally(() => inFlight.delete(p));
    inFlight.add(p);
  };
  const startLoad = () => {
    let owed = 0;
    loadTimer = setInterval(() => {
      owed = Math.min(owed + rate / 50, 5);
      while (owed >= 1 && inFlight.size < 32) {
        owed -= 1;
        sendOne();
      }
    }, 20);
  };
  const stopLoad = async () => {
    if (loadTimer) clearInterval(loadTimer);
    loadTimer = null;
    while (inFlight.size > 0) await Promise.all([...inFlight]);
  };

  // Sampling of memory, every second, for the whole run.
  const sample = async () => {
    const used = await withClient(redis.url, 1000, async (r) => Number(/used_memory:(\d+)/.exec(await r.info('memory'))?.[1] ?? 0));
    if (used !== null) peakRedisMemory = Math.max(peakRedisMemory, used);
    peakRss.redis = Math.max(peakRss.redis as number, rssOf(redis.pid));
    if (ingress) peakRss.ingress = Math.max(peakRss.ingress as number, rssOf(ingress.child.pid));
    for (const w of workers) peakRss.worker = Math.max(peakRss.worker as number, rssOf(w.process.child.pid));
    trimOutput();
  };
  let sampling = true;
  const sampler = (async () => {
    while (sampling) {
      await sample().catch(() => undefined);
      await new Promise((r) => setTimeout(r, 1000));
    }
  })();

  const groupState = () =>
    withClient(redis.url, 3000, async (r) => {
      const stream = `{${prefix}}:stream`;
      const length = await r.xlen(stream);
      const groups = (await r.xinfo('GROUPS', stream).catch(() => [])) as unknown[][];
      let lag = length;
      for (const g of groups) {
        const info: Record<string, unknown> = {};
        for (let i = 0; i + 1 < g.length; i += 2) info[String(g[i])] = g[i + 1];
        if (info.name === 'workers' && typeof info.lag === 'number') lag = info.lag;
      }
      const pendingByConsumer = new Map<string, number>();
      const summary = (await r.xpending(stream, 'workers').catch(() => [0, null, null, null])) as [number, unknown, unknown, [string, string][] | null];
      for (const [name, count] of summary[3] ?? []) pendingByConsumer.set(name, Number(count));
      const base = `{${prefix}}:retry`;
      const retrying = (
        await Promise.all([
          r.llen(`${base}:wait`),
          r.llen(`${base}:paused`),
          r.llen(`${base}:active`),
          r.zcard(`${base}:delayed`),
          r.zcard(`${base}:prioritized`),
        ])
      ).reduce((a, b) => a + b, 0);
      return { length, lag, pending: Number(summary[0]), pendingByConsumer, retrying };
    });

  const injectFault = async (fault: Fault) => {
    faultsInjected[fault.kind] = (faultsInjected[fault.kind] ?? 0) + 1;
    log(`${((Date.now() - loadStarted) / 1000).toFixed(1)}s fault ${fault.kind} for ${fault.ms} ms`);
    const hold = () => new Promise((r) => setTimeout(r, fault.ms));
    switch (fault.kind) {
      case 'worker-kill':
      case 'worker-term': {
        const index = fault.target % workers.length;
        const [w] = workers.splice(index, 1);
        if (!w) return;
        if (fault.kind === 'worker-kill') {
          await w.process.stop('SIGKILL');
        } else {
          w.process.child.kill('SIGTERM');
          // The worker has SHUTDOWN_TIMEOUT_MS (1 s) for its replays and bounded close steps.
          const code = await withDeadline(w.process.exited, 20_000, () => 'late' as const);
          if (code === 'late') {
            violations.push(`a worker (${w.consumer}) did not exit within 20 s of SIGTERM\n--- last log lines:\n${w.process.stdout.slice(-3000)}`);
            await w.process.stop('SIGKILL');
          } else if (code !== 0) {
            violations.push(
              `a worker (${w.consumer}) exited ${code} on SIGTERM\n--- stderr:\n${w.process.stderr.slice(-1000)}\n--- last log lines:\n${w.process.stdout.slice(-2000)}`,
            );
          }
        }
        await hold();
        await startWorker().catch((e: Error) => violations.push(`a worker could not be restarted: ${e.message}`));
        return;
      }
      case 'ingress-kill':
        await ingress?.stop('SIGKILL');
        await hold();
        await startIngress().catch((e: Error) => violations.push(`the ingress could not be restarted: ${e.message}`));
        return;
      case 'redis-pause':
        redis.signal('SIGSTOP');
        paused = true;
        try {
          await hold();
        } finally {
          redis.signal('SIGCONT');
          paused = false;
        }
        return;
      case 'redis-restart':
        await redis.stop('SIGTERM');
        await hold();
        await redis.start();
        return;
      case 'redis-maxmemory': {
        const set = await withClient(redis.url, 3000, async (r) => {
          const used = Number(/used_memory:(\d+)/.exec(await r.info('memory'))?.[1] ?? 0);
          await r.config('SET', 'maxmemory', String(used + 256 * 1024));
          return used;
        });
        if (set === null) return;
        // An even target also replaces a worker while Redis is full: the new one must start
        // (create or find the group) and work once memory is back.
        let replacement: Promise<void> | null = null;
        try {
          if (fault.target % 2 === 0 && workers.length > 0) {
            const [w] = workers.splice(fault.target % workers.length, 1);
            await w?.process.stop('SIGKILL');
            replacement = startWorker().catch((e: Error) => {
              violations.push(`a worker started while Redis was full did not start within 60 s: ${e.message}`);
            });
          }
          await hold();
        } finally {
          await waitFor('maxmemory restored', () => withClient(redis.url, 3000, (r) => r.config('SET', 'maxmemory', '0')), 30_000, 200);
        }
        await replacement;
        return;
      }
    }
  };

  let loadStarted = Date.now();
  const closeAll = async () => {
    sampling = false;
    if (paused) redis.signal('SIGCONT');
    if (loadTimer) clearInterval(loadTimer);
    await Promise.all([ingress?.stop('SIGKILL'), ...everyWorker.map((w) => w.stop('SIGKILL'))]);
    await sampler;
    await staging.close();
    await redis.close();
  };

  try {
    await startIngress();
    for (let i = 0; i < workerCount; i++) await startWorker();
    log(describeSchedule(schedule));
    loadStarted = Date.now();
    startLoad();

    // Staging's timeline runs beside the faults.
    const stagingTimeline = (async () => {
      for (const phase of schedule.staging) {
        const wait = loadStarted + phase.at - Date.now();
        if (wait > 0) await new Promise((r) => setTimeout(r, wait));
        log(`${((Date.now() - loadStarted) / 1000).toFixed(1)}s staging ${phase.mode}`);
        await staging.setMode(phase.mode);
      }
    })();
    for (const fault of schedule.faults) {
      const wait = loadStarted + fault.at - Date.now();
      if (wait > 0) await new Promise((r) => setTimeout(r, wait));
      await injectFault(fault);
    }
    await stagingTimeline;
    const faultsEnd = loadStarted + schedule.durationMs - Date.now();
    if (faultsEnd > 0) await new Promise((r) => setTimeout(r, faultsEnd));

    // Healthy from here on: staging fast, every process up.
    await staging.setMode('fast');
    while (workers.length < workerCount) await startWorker();
    log(`${((Date.now() - loadStarted) / 1000).toFixed(1)}s faults over; staging healthy; watching liveness for ${tailMs} ms`);

    // Liveness: a worker with free slots (its in-flight gauge below WORKER_CONCURRENCY) while
    // entries wait undelivered (the group's lag) must finish replays within progressMs.
    const tailEnd = Date.now() + tailMs;
    const lastProgress = new Map<WorkerSlot, { replays: number; at: number }>();
    while (Date.now() < tailEnd) {
      const state = await groupState();
      for (const w of workers) {
        const [replays, inFlightNow] = await Promise.all([
          metricSum(w.adminPort, 'mirrorplane_worker_replays_total'),
          metricSum(w.adminPort, 'mirrorplane_worker_in_flight'),
        ]);
        if (replays === null || inFlightNow === null) continue;
        const seen = lastProgress.get(w);
        const waiting = state !== null && state.lag > 0;
        if (!seen || replays > seen.replays || !waiting || inFlightNow >= CONCURRENCY) {
          lastProgress.set(w, { replays, at: Date.now() });
        } else if (Date.now() - seen.at > limits.progressMs) {
          violations.push(
            `liveness: worker ${w.consumer} had free slots (in flight ${inFlightNow} of ${CONCURRENCY}) and finished nothing for ${limits.progressMs} ms while ${state?.lag} entries waited (pending for it: ${state?.pendingByConsumer.get(w.consumer) ?? 0})`,
          );
          lastProgress.set(w, { replays, at: Date.now() });
        }
      }
      await new Promise((r) => setTimeout(r, 1000));
    }
    await stopLoad();

    // Drain: the stream empty, nothing pending, no retry left, within drainMs.
    const drainStarted = Date.now();
    let drainedAfterMs: number | null = null;
    let last: Awaited<ReturnType<typeof groupState>> = null;
    try {
      await waitFor(
        'the deployment to drain',
        async () => {
          last = await groupState();
          return last !== null && last.length === 0 && last.pending === 0 && last.retrying === 0;
        },
        limits.drainMs,
        500,
      );
      drainedAfterMs = Date.now() - drainStarted;
    } catch {
      const l = last as Awaited<ReturnType<typeof groupState>>;
      violations.push(
        `liveness: not drained ${limits.drainMs} ms after the load stopped with staging healthy: stream ${l?.length}, undelivered ${l?.lag}, pending ${l?.pending}, retrying ${l?.retrying}`,
      );
    }
    // No slot is held by a finished entry: each worker's in-flight gauge against what the
    // group says it holds. Once drained, both are 0; if not drained, a gauge above its
    // pending count (with nothing retrying) is a slot held by something already finished.
    const state = await groupState();
    for (const w of workers) {
      const inFlightNow = await metricSum(w.adminPort, 'mirrorplane_worker_in_flight');
      const pendingFor = state?.pendingByConsumer.get(w.consumer) ?? 0;
      if (inFlightNow === null) violations.push(`worker ${w.consumer}: no metrics`);
      else if (inFlightNow > pendingFor + (state?.retrying ?? 0))
        violations.push(
          `liveness: worker ${w.consumer} counts ${inFlightNow} in flight but holds ${pendingFor} pending entries (retrying ${state?.retrying}): slots held by finished entries`,
        );
    }

    // Accounting: every accepted request completed at staging, or sits in the failed set,
    // or was dropped by the rule.
    const queue = new Queue(`retry`, { connection: { host: '127.0.0.1', port: redis.port, maxRetriesPerRequest: null }, prefix: `{${prefix}}` });
    const failedReasons: Record<string, number> = {};
    const failedIds = new Set<string>();
    try {
      const failed = await queue.getFailed(0, -1);
      for (const job of failed) {
        const id = (job.data as { entry?: { requestId?: string | null } }).entry?.requestId;
        if (id) failedIds.add(id);
        const reason = String(job.failedReason ?? 'no reason')
          .replace(/[0-9a-f]{8,}|\d+/g, 'N')
          .slice(0, 80);
        failedReasons[reason] = (failedReasons[reason] ?? 0) + 1;
        if (!job.failedReason) violations.push(`accounting: failed job ${job.id} has no reason`);
      }
    } finally {
      await queue.close();
    }
    const unaccounted: string[] = [];
    let droppedByRule = 0;
    let completed = 0;
    let duplicateRequests = 0;
    let extraCopies = 0;
    let maxAttempt = 0;
    for (const id of accepted) {
      const record = staging.records.get(id);
      const isDrop = record === undefined && dropIds.has(id);
      if (isDrop) droppedByRule += 1;
      if (record && record.completed > 0) completed += 1;
      if (!(record && record.completed > 0) && !failedIds.has(id) && !isDrop) unaccounted.push(id);
    }
    for (const [id, record] of staging.records) {
      maxAttempt = Math.max(maxAttempt, record.maxAttempt);
      if (record.completed > 1) {
        duplicateRequests += 1;
        extraCopies += record.completed - 1;
      }
      if (record.entryIds.size > 1) violations.push(`request ${id} reached staging under ${record.entryIds.size} x-mirrorplane-ids`);
      if (dropIds.has(id)) violations.push(`request ${id} matched the drop rule and still reached staging`);
    }
    if (unaccounted.length > 0)
      violations.push(
        `accounting: ${unaccounted.length} accepted requests neither completed at staging nor in the failed set: ${unaccounted.slice(0, 50).join(', ')}${unaccounted.length > 50 ? ', …' : ''}`,
      );
    if (staging.corrupted.length > 0)
      violations.push(`${staging.corrupted.length} copies reached staging with a body other than the one sent: ${staging.corrupted.slice(0, 20).join(', ')}`);
    if (staging.unlabelled > 0) violations.push(`${staging.unlabelled} requests reached staging without x-request-id or x-mirrorplane-id`);

    const groupConsumers = await withClient(redis.url, 3000, async (r) => ((await r.xinfo('CONSUMERS', `{${prefix}}:stream`, 'workers')) as unknown[]).length);

    // Boundedness.
    await sample();
    if (peakRedisMemory > limits.redisMemoryBytes)
      violations.push(`boundedness: Redis used_memory peaked at ${peakRedisMemory} bytes (limit ${limits.redisMemoryBytes})`);
    for (const [name, rss] of Object.entries(peakRss))
      if (rss > limits.processRssBytes) violations.push(`boundedness: ${name} RSS peaked at ${rss} bytes (limit ${limits.processRssBytes})`);
    const allowed = Math.round(limits.duplicateFraction * accepted.size + limits.duplicateSlack);
    if (extraCopies > allowed) violations.push(`boundedness: ${extraCopies} extra completed copies of ${duplicateRequests} requests (allowed ${allowed})`);

    return {
      seed: options.seed,
      schedule: describeSchedule(schedule),
      sent,
      accepted: accepted.size,
      refused,
      faultsInjected,
      completedAtStaging: completed,
      inFailedSet: failedIds.size,
      failedReasons,
      droppedByRule,
      duplicateRequests,
      extraCopies,
      maxAttempt,
      peakRedisMemory,
      peakRss,
      drainedAfterMs,
      groupConsumers,
      workersAlive: workers.filter((w) => alive(w.process)).length,
      violations,
    };
  } finally {
    await closeAll();
  }
}

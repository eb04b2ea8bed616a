import { hostname } from 'node:os';
import { randomBytes } from 'node:crypto';
import type { Redis } from 'ioredis';
import { DelayedError, UnrecoverableError, type Job, type Queue, type Worker } from 'bullmq';
import { Counter, Gauge, Registry, collectDefaultMetrics } from 'prom-client';
import {
  EntryCipher,
  Redactor,
  composePipeline,
  ConfigError,
  decodeEntry,
  encodeEntryFields,
  openEntryFields,
  describeRawFields,
  deserializeEntry,
  errorMessage,
  exporterLockKey,
  keysFor,
  orderKeys,
  partitionKeys,
  ReplayFailedError,
  splitId,
  serializeEntry,
  ShutdownTimeoutError,
  type CompiledPipeline,
  type Config,
  type Entry,
  type Keys,
  type MirroredRequest,
  formatRateLimit,
} from '@mirrorplane/core';
import {
  type AdminServer,
  adminServerFor,
  DeploymentMetrics,
  StreamTrimmer,
  WorkerMetrics,
  closeRedis,
  createRedis,
  createRetryQueue,
  createRetryWorker,
  ensureGroup,
  type Logger,
  type RetryJobData,
  type WorkerHeartbeat,
  RedisProbe,
  RateLimiter,
} from '@mirrorplane/runtime';
import { StagingClient, type CopyOutcome, type ReplayOptions } from './replay.js';
import { SlotAccounting } from './slot-accounting.js';
import { AckBatcher, type OrderRelease } from './ack-batcher.js';
import { Claimer, byPartition } from './claimer.js';
import { READ_BLOCK_MS, runReadLoop } from './read-loop.js';
import { classifyReplay, type AttemptResult, type Disposition } from './replay-outcome.js';
import { retryPolicyOf, type RetryPolicy } from './retry-schedule.js';
import { handOver, policyBackoff, type HandOverReason } from './retry-bridge.js';
import { Heartbeat } from './heartbeat.js';
import { KeyOrder } from './key-order.js';

export interface ReplayWorkerOptions {
  /** Pipeline stages (rules, hooks, recording), composed once. */
  pipeline?: CompiledPipeline;
  /** Consumer name in the group; unique per process by default. */
  consumer?: string;
}

/** The slot key of a retry job, apart from the stream entry of the same id. */
const jobSlot = (id: string) => `job:${id}`;

/** Time the cleanup steps after SHUTDOWN_TIMEOUT_MS share, in ms: the stop's bound past the deadline. */
export const SHUTDOWN_GRACE_MS = 3000;
/** The least a cleanup step gets, in ms, even past the grace period (one local round trip). */
const MIN_STEP_MS = 100;

/** Stalls (a worker died holding the job) before BullMQ fails a retry job: in effect, never. */
const RETRY_MAX_STALLS = 1_000_000;

/**
 * A worker: composes the read loop, the slot accounting, the acknowledgement batcher, the
 * claimer, the retry-queue bridge and the heartbeat. Reads the stream through the consumer
 * group, replays each entry to staging with bounded concurrency, acknowledges and deletes what
 * is finished, hands retryable failures to the BullMQ retry queue, and takes over entries a
 * dead worker left unfinished. Each replay's outcome is classified by `classifyReplay`, for
 * stream entries and retry jobs alike.
 */
export class ReplayWorker {
  readonly #config: Config;
  readonly #logger: Logger;
  /** Partition 0's keys: the retry queue, the failed set and the metrics lock live there. */
  readonly #keys: Keys;
  /** Every partition's keys; `[#keys]` without partitions. */
  readonly #parts: Keys[];
  readonly #consumer: string;
  readonly #commands: Redis;
  readonly #reader: Redis;
  readonly #bull: Redis;
  readonly #queue: Queue<RetryJobData>;
  #retryWorker: Worker<RetryJobData> | null = null;
  readonly #staging: StagingClient;
  /** The deployment's rate caps by staging origin (config and live overrides). */
  readonly #rate: RateLimiter;
  readonly #pipeline: CompiledPipeline;
  /** Decrypts encrypted entries and encrypts retry jobs; null when MIRRORPLANE_DATA_KEY is unset. */
  readonly #cipher: EntryCipher | null;
  /** Failure reasons are stored as text in the failed set (even with a data key): redacted first. */
  readonly #redactor: Redactor;
  readonly #admin: AdminServer | null;
  readonly #registry = new Registry();
  readonly #m: WorkerMetrics;
  readonly #deployment: DeploymentMetrics;
  /** Trims finished entries beyond STREAM_RETENTION; null when finished entries are deleted at once. */
  readonly #trimmer: StreamTrimmer | null;
  readonly #policy: RetryPolicy;
  readonly #slots: SlotAccounting;
  readonly #acks: AckBatcher;
  readonly #claimer: Claimer;
  /** Per-key ordering (ORDER_BY), or null when off. */
  readonly #order: KeyOrder | null;
  /** Requests of retry jobs run here, to leave per-key ordering once BullMQ recorded their end (by job id). */
  readonly #endsOrder = new Map<string, MirroredRequest>();
  readonly #overtaken: Counter;
  readonly #heartbeat: Heartbeat;
  /** Whether Redis answers PINGs in time (for readiness). */
  readonly #probe: RedisProbe;
  /** Whether the consumer group exists (set once start() made sure of it). */
  #canRead = false;

  /** Resolves when close() begins, to cut an idle wait short. */
  #stop: () => void = () => undefined;
  readonly #stopped = new Promise<void>((resolve) => {
    this.#stop = resolve;
  });
  #stopping = false;
  #readLoop: Promise<void> | null = null;
  #claimTimer: NodeJS.Timeout | null = null;
  #claiming: Promise<void> | null = null;

  constructor(config: Config, logger: Logger, options: ReplayWorkerOptions = {}) {
    // loadConfig requires it for the worker role; a hand-built config without it is refused the same way.
    if (!config.stagingUrl) throw new ConfigError([{ key: 'STAGING_URL', message: 'required by the worker' }]);
    this.#config = config;
    this.#logger = logger;
    this.#parts = partitionKeys(config.prefix, config.partitions);
    this.#keys = this.#parts[0] ?? keysFor(config.prefix);
    this.#consumer = options.consumer ?? `${hostname()}-${process.pid}-${randomBytes(3).toString('hex')}`;
    this.#commands = createRedis(config, 'commands', logger);
    this.#reader = createRedis(config, 'blocking', logger);
    this.#bull = createRedis(config, 'bullmq', logger);
    this.#queue = createRetryQueue(this.#keys, this.#bull);
    this.#queue.on('error', this.#throttledWarn('retry queue error'));
    this.#pipeline = options.pipeline ?? composePipeline([]);
    this.#cipher = EntryCipher.fromSpec(config.dataKey);
    this.#redactor = new Redactor(config.redaction);
    this.#rate = new RateLimiter({ redis: this.#commands, prefix: config.prefix, limits: config.rateLimits, logger });
    this.#staging = new StagingClient(config, this.#pipeline, this.#rate);
    for (const origin of this.#staging.insecureOrigins)
      logger.warn({ origin, url: config.origins[origin] }, 'staging origin with insecure: true: its TLS certificate is NOT verified');
    this.#policy = retryPolicyOf(config);
    this.#slots = new SlotAccounting(config.workerConcurrency);
    this.#trimmer =
      config.streamRetention === null ? null : new StreamTrimmer({ redis: this.#commands, keys: this.#parts, retention: config.streamRetention, logger });
    this.#acks = new AckBatcher({
      redis: this.#commands,
      parts: this.#parts,
      deleteFinished: this.#trimmer === null,
      ...(config.orderBy
        ? { order: { keys: this.#parts.map((_, p) => orderKeys(config.prefix, p)), released: (sets: string[]) => this.#order?.released(sets) } }
        : {}),
      logger,
    });
    this.#overtaken = new Counter({
      name: 'mirrorplane_worker_order_overtaken_total',
      help: 'ORDER_BY: entries that ran ahead of older ones of their key stuck longer than ORDER_MAX_WAIT_MS (retrying, or their worker died)',
      registers: [this.#registry],
    });
    this.#order = config.orderBy
      ? new KeyOrder({
          commands: this.#commands,
          prefix: config.prefix,
          partitions: this.#parts.length,
          orderBy: config.orderBy,
          cipher: this.#cipher,
          maxWaitMs: config.orderMaxWaitMs,
          forgetMs: config.orderMaxWaitMs === 0 ? 0 : config.retryWindowMs + config.orderMaxWaitMs + config.claimIdleMs,
          maxParked: config.workerConcurrency * 4,
          run: (id, fields, attemptNo, prepaid) => this.#startEntry(id, fields, attemptNo, prepaid),
          busy: (id) => this.#slots.has(id) || this.#acks.has(id),
          refund: () => this.#rate.refund('default', 1),
          overtook: () => this.#overtaken.inc(),
          logger,
        })
      : null;
    if (this.#order) {
      const order = this.#order;
      new Gauge({
        name: 'mirrorplane_worker_order_parked',
        help: 'ORDER_BY: entries read by this worker waiting for an older one of their key (they hold no slot)',
        registers: [this.#registry],
        collect() {
          this.set(order.parked);
        },
      });
    }
    this.#claimer = new Claimer({
      commands: this.#commands,
      parts: this.#parts,
      consumer: this.#consumer,
      claimIdleMs: config.claimIdleMs,
      poisonAfter: Math.max(10, config.replayAttempts * 2),
      slots: this.#slots,
      acks: this.#acks,
      start: (id, fields, delivered) => this.#admit(id, fields, delivered, false),
      ...(this.#order ? { parked: this.#order } : {}),
      poison: (id, fields, delivered) => this.#startPoison(id, fields, delivered),
      claimed: () => this.#m.claimed(),
      logger,
    });
    this.#heartbeat = new Heartbeat({
      redis: this.#commands,
      prefix: config.prefix,
      parts: this.#parts,
      consumer: this.#consumer,
      concurrency: config.workerConcurrency,
      periodMs: config.heartbeatMs,
      pruneIdleMs: Math.max(config.heartbeatMs * 3, config.claimIdleMs),
      load: () => this.load,
      published: {
        origins: Object.keys(config.origins).concat(config.stagingUrl && !('default' in config.origins) ? ['default'] : []),
        rateLimits: Object.fromEntries(Object.entries(config.rateLimits).map(([origin, limit]) => [origin, formatRateLimit(limit)])),
      },
      logger,
    });

    collectDefaultMetrics({ register: this.#registry, prefix: 'mirrorplane_worker_' });
    this.#m = new WorkerMetrics(this.#registry, () => this.#slots.held, this.#rate);
    // Workers are the candidates to export the deployment's gauges; a lock elects one.
    this.#deployment = new DeploymentMetrics({
      registry: this.#registry,
      redis: this.#commands,
      queue: this.#queue,
      prefix: config.prefix,
      keys: this.#parts,
      lockKey: exporterLockKey(config.prefix),
      holder: this.#consumer,
      logger,
      rateLimits: () => this.#rate.limits(),
    });
    this.#probe = new RedisProbe(
      this.#commands,
      config.appendTimeoutMs,
      logger,
      this.#parts.map((k) => k.stream),
    );
    this.#admin = adminServerFor(config, { ready: () => this.ready, metrics: this.#registry, logger });
  }

  /**
   * A listener that logs an error at most every 10 s with the count since the last line: BullMQ
   * reports each failed command, hundreds a second on a full Redis.
   */
  #throttledWarn(msg: string): (error: Error) => void {
    let last = 0;
    let count = 0;
    return (error) => {
      count += 1;
      const now = Date.now();
      if (now - last < 10_000) return;
      this.#logger.warn({ err: errorMessage(error), count }, msg);
      last = now;
      count = 0;
    };
  }

  get consumer(): string {
    return this.#consumer;
  }

  /**
   * Whether this worker can do its job (the admin server's /readyz): not stopping, both
   * connections open, Redis answering (a PING answered within APPEND_TIMEOUT_MS; see
   * `RedisProbe`: a paused Redis keeps its sockets open), and its consumer group there to read
   * from (false while it waits to create it, e.g. on a full Redis).
   */
  get ready(): boolean {
    return !this.#stopping && this.#canRead && this.#reader.status === 'ready' && this.#commands.status === 'ready' && this.#probe.responsive;
  }

  get metrics(): Registry {
    return this.#registry;
  }

  /**
   * What this worker holds now: replays running (`inFlight`; stream entries among them,
   * `inFlightEntries`) and finished entries waiting for their acknowledgement (`unacked`).
   * `inFlightEntries + unacked` is at most this consumer's pending count in XPENDING.
   */
  get load(): Pick<WorkerHeartbeat, 'inFlight' | 'inFlightEntries' | 'unacked'> {
    return {
      inFlight: this.#slots.held,
      inFlightEntries: this.#slots.keys((k) => !k.startsWith('job:')).length,
      unacked: this.#acks.waiting,
    };
  }

  async start(): Promise<{ adminPort: number | null }> {
    const adminPort = this.#admin ? await this.#admin.listen() : null;
    this.#probe.start();
    await this.#heartbeat.start();
    await this.#rate.start();
    await this.#ensureGroupWithRetry();
    if (this.#stopping) return { adminPort };
    this.#canRead = true;
    this.#retryWorker = createRetryWorker(this.#keys, (job, token) => this.#processRetryJob(job, token), this.#bull, {
      concurrency: Math.max(1, Math.ceil(this.#config.workerConcurrency / 4)),
      // A job is locked at least as long as a replay can take, so BullMQ never thinks it stalled.
      lockDuration: Math.max(this.#config.retryStallCheckMs, this.#config.replayTimeoutMs * 2),
      stalledInterval: this.#config.retryStallCheckMs,
      // A stalled job is one whose worker died or was cut off from Redis: our fault, not
      // staging's. It is run again (after its lock expires and the stalled check, every
      // RETRY_STALL_CHECK_MS, sees it), never failed for it; RETRY_WINDOW_MS, checked when each
      // try starts, still ends it.
      maxStalledCount: RETRY_MAX_STALLS,
      removeOnComplete: { count: 0 },
      removeOnFail: { count: 1_000_000 },
      settings: { backoffStrategy: policyBackoff },
    });
    this.#retryWorker.on('error', this.#throttledWarn('retry worker error'));
    if (this.#order) {
      // A retry job's end is durable once BullMQ emits these: only then may its key move on.
      // 'failed' also follows a failed try BullMQ will retry: only a job with finishedOn ended.
      const ended = (job: Job<RetryJobData> | undefined, terminal: boolean) => {
        const id = job?.id === undefined ? undefined : String(job.id);
        const request = id === undefined ? undefined : this.#endsOrder.get(id);
        if (id === undefined || request === undefined) return;
        this.#endsOrder.delete(id);
        if (!terminal) return;
        // The stream entry's own acknowledgement (after its hand-over) not taken yet: the key
        // moves on with it, or a claim of that entry would replay it after later ones.
        if (this.#acks.has(id)) this.#acks.finish(id, false, this.#order?.placeOf(id, request));
        else void this.#order?.finish(id, request);
      };
      this.#retryWorker.on('completed', (job) => ended(job, true));
      this.#retryWorker.on('failed', (job) => ended(job, Boolean(job?.finishedOn)));
    }
    this.#readLoop = runReadLoop({
      reader: this.#reader,
      commands: this.#commands,
      parts: this.#parts,
      consumer: this.#consumer,
      slots: this.#slots,
      refillAt: Math.max(1, Math.floor(this.#config.workerConcurrency / 4)),
      onEntry: (id, fields, prepaid) => {
        // Deleted after it was delivered: nothing to replay, just clear it.
        // (With ORDER_BY its acknowledgement also takes it out of the unregistered entries.)
        if (fields === null) {
          this.#acks.finish(id, false);
        } else this.#admit(id, fields, 1, prepaid);
      },
      ...(this.#order
        ? {
            read: (p: number, count: number) => (this.#order as KeyOrder).read(p, (this.#parts[p] as Keys).group, this.#consumer, count),
            room: () => (this.#order as KeyOrder).room,
          }
        : {}),
      tokens: {
        capped: () => this.#rate.limitOf('default') !== null,
        take: (want) => this.#rate.tryTake('default', want),
        refund: (n) => this.#rate.refund('default', n),
        refunded: () => this.#rate.refunded('default'),
      },
      stopping: () => this.#stopping,
      stopped: this.#stopped,
      logger: this.#logger,
    });
    this.#order?.start();
    this.#deployment.start();
    this.#trimmer?.start();
    const every = Math.max(100, Math.min(5000, Math.floor(this.#config.claimIdleMs / 3)));
    this.#claimTimer = setInterval(() => {
      if (this.#stopping) return;
      this.#claiming ??= this.#claimer.run().finally(() => {
        this.#claiming = null;
      });
    }, every);
    this.#logger.info({ consumer: this.#consumer, staging: this.#config.stagingUrl, concurrency: this.#config.workerConcurrency, adminPort }, 'worker started');
    return { adminPort };
  }

  /**
   * Makes sure every partition's group exists. A Redis that refuses (down, or full: XGROUP
   * CREATE allocates) is a transient condition: logged, and tried again with a capped backoff
   * until it works or close() begins.
   */
  async #ensureGroupWithRetry(): Promise<void> {
    let logged = false;
    for (let delay = 100; ; delay = Math.min(delay * 2, 2000)) {
      try {
        for (const keys of this.#parts) await ensureGroup(this.#commands, keys.stream, keys.group);
        if (logged) this.#logger.info('consumer group ready');
        return;
      } catch (error) {
        if (this.#stopping) return;
        const message = errorMessage(error);
        if (!logged) {
          const why = message.startsWith('OOM') ? 'Redis is full (maxmemory); ' : '';
          this.#logger.warn({ err: message }, `cannot create the consumer group yet; ${why}retrying`);
        }
        logged = true;
        await Promise.race([new Promise((r) => setTimeout(r, delay)), this.#stopped]);
      }
    }
  }

  /** A stream entry read or claimed: with ORDER_BY it waits for its key's turn, else it starts now. */
  #admit(id: string, fields: Buffer[], attemptNo: number, prepaid: boolean): void {
    if (this.#order) this.#order.admit(id, fields, attemptNo, prepaid);
    else this.#startEntry(id, fields, attemptNo, prepaid);
  }

  /**
   * Starts replaying a stream entry when it gets a slot; an entry already running here is not
   * started again. `prepaid`: the read loop took a rate token of the default origin for it.
   */
  #startEntry(id: string, fields: Buffer[], attemptNo: number, prepaid = false): void {
    // Beyond capacity only when retry jobs took slots after the read was sized: the entry was
    // delivered to this consumer, and leaving it unstarted would leave it pending for CLAIM_IDLE_MS.
    if (this.#acks.has(id) || !this.#slots.acquireOver(id)) {
      if (prepaid) this.#rate.refund('default', 1);
      return;
    }
    // One reaction for both ends (not .catch().finally(): two promises more per entry).
    this.#processStreamEntry(id, fields, attemptNo, prepaid).then(
      () => this.#slots.release(id),
      (error: unknown) => {
        // Should not happen: #processStreamEntry handles its own failures. The entry stays
        // pending and another worker takes it over after CLAIM_IDLE_MS.
        this.#logger.error({ entryId: id, err: errorMessage(error) }, 'unexpected error processing an entry');
        this.#slots.release(id);
      },
    );
  }

  async #processStreamEntry(id: string, fields: Buffer[], attemptNo: number, prepaid: boolean): Promise<void> {
    let entry: Entry;
    try {
      entry = decodeEntry(id, openEntryFields(splitId(id).id, fields, this.#cipher));
    } catch (error) {
      if (prepaid) this.#rate.refund('default', 1);
      this.#logger.warn({ entryId: id, err: errorMessage(error) }, 'undecodable entry goes to the failed set');
      await this.#handOver(id, { entry: null, raw: describeRawFields(fields), priorAttempts: 0, failReason: errorMessage(error) }, 'undecodable');
      return;
    }
    // Delivered before (claimed): handed to the retry queue already, with its acknowledgement
    // lost? The job owns it (and its key's turn): acknowledged, not replayed a second time.
    if (attemptNo > 1 && (await this.#queue.getJobState(id).catch(() => 'unknown')) !== 'unknown') {
      if (prepaid) this.#rate.refund('default', 1);
      this.#logger.info({ entryId: id }, 'claimed entry is in the retry queue already; acknowledged without replaying');
      this.#acks.finish(id, false);
      return;
    }
    const firstTriedAt = Date.now();
    const d = await this.#attemptOnce(entry, attemptNo, firstTriedAt, prepaid ? 'default' : undefined);
    switch (d.kind) {
      case 'replayed':
      case 'post-error':
        // The next request of its key may go once the acknowledgement is durable, not before.
        this.#acks.finish(id, true, this.#order?.placeOf(id, entry.request));
        return;
      case 'dropped':
        this.#acks.finish(id, false, this.#order?.placeOf(id, entry.request));
        return;
      // Handed to the retry queue, an entry stays first of its key until its job finishes.
      case 'later':
        // A stage asked for later (an ID whose staging twin is not known yet): the entry waits
        // in the retry queue, holding no slot, and no attempt is spent.
        await this.#handOver(id, { ...this.#jobEntry(entry), priorAttempts: attemptNo - 1, firstTriedAt }, 'wait', d.delayMs);
        return;
      case 'retry':
        await this.#handOver(id, { ...this.#jobEntry(entry), priorAttempts: attemptNo, firstTriedAt, retrying: true }, 'retry', d.delayMs);
        return;
      case 'failed':
        await this.#handOver(
          id,
          { ...this.#jobEntry(entry), priorAttempts: attemptNo, firstTriedAt, failReason: d.message },
          d.reason,
          undefined,
          this.#order?.placeOf(id, entry.request),
        );
        return;
    }
  }

  /** One replay attempt, classified once and counted, the same for the stream and the retry queue. */
  readonly #onCopy = (c: CopyOutcome): void => {
    this.#m.copied('status' in c ? c.status : null);
    if ('error' in c) this.#logger.debug({ copy: c.copy, err: errorMessage(c.error) }, 'a copy of an amplified request failed (copies are not retried)');
  };

  readonly #firstTry: Readonly<ReplayOptions> = { onCopy: this.#onCopy };

  async #attemptOnce(entry: Entry, attemptNo: number, firstTriedAt: number, prepaid?: string, copiesSent = false): Promise<Disposition> {
    const started = performance.now();
    // Extra copies of an amplified request go once: a retry after a failure re-sends copy 1 only.
    // The usual first try shares one options object (nothing downstream writes to it).
    let options: ReplayOptions;
    if (copiesSent) options = prepaid === undefined ? { copies: false } : { copies: false, prepaid };
    else options = prepaid === undefined ? this.#firstTry : { onCopy: this.#onCopy, prepaid };
    // `attempt` inlined: one async frame and one closure fewer per replay on the hot path.
    let result: AttemptResult;
    try {
      result = { ok: true, outcome: await this.#staging.replay(entry, attemptNo, options) };
    } catch (error) {
      result = { ok: false, error };
    }
    const d = classifyReplay(result, attemptNo, this.#policy, firstTriedAt, performance.now() - started);
    this.#account(d, entry, attemptNo);
    return d;
  }

  /** Metrics and logs of one classified attempt: the same for the stream and the retry path. */
  #account(d: Disposition, entry: Entry, attemptNo: number): void {
    // Made only for the outcomes that log (not per replayed entry).
    const log = () => ({ entryId: entry.id, reqId: entry.request.requestId, attempt: attemptNo });
    switch (d.kind) {
      case 'replayed':
        this.#m.replayed(d.status, d.ms / 1000);
        return;
      case 'dropped':
        this.#m.dropped();
        return;
      case 'post-error':
        // A post handler failed after staging completed the replay: count it, finish the entry.
        this.#m.errored('post_error', d.ms / 1000);
        this.#logger.warn({ ...log(), err: d.message }, 'post handler failed');
        return;
      case 'later':
        return;
      case 'retry':
        this.#m.errored('retryable_error', d.ms / 1000);
        this.#logger.debug({ ...log(), ms: d.delayMs, err: d.message }, 'replay failed; will retry');
        return;
      case 'failed':
        this.#m.errored(d.reason === 'exhausted' ? 'retryable_error' : 'failed', d.ms / 1000);
        this.#m.failedEntry(d.reason);
        this.#logger.warn({ ...log(), err: d.message }, 'replay failed; entry goes to the failed set');
        return;
    }
  }

  /**
   * Moves a stream entry to the retry queue (or straight to its failed set) and only then
   * acknowledges it. Refused (Redis down or full), the entry stays pending and is taken over
   * after CLAIM_IDLE_MS. `release`: an entry that ends here (failed set) leaves per-key ordering
   * with its acknowledgement; one handed to the retry queue stays first of its key.
   */
  async #handOver(id: string, data: RetryJobData, why: HandOverReason, delayMs?: number, release?: OrderRelease | null): Promise<void> {
    // BullMQ stores the reason in clear: redacted like logs are.
    const stored = data.failReason === undefined ? data : { ...data, failReason: this.#redactor.text(data.failReason) };
    if (!(await handOver(this.#queue, this.#logger, id, stored, why, delayMs))) return;
    if (why === 'retry') this.#m.retryScheduled();
    else if (why === 'undecodable' || why === 'poison') this.#m.failedEntry(why);
    this.#acks.finish(id, false, release);
  }

  /**
   * What a retry job holds of an entry: the entry itself, or with MIRRORPLANE_DATA_KEY set,
   * its fields encrypted again (`raw`), so that Redis never holds a payload in clear.
   */
  #jobEntry(entry: Entry): Pick<RetryJobData, 'entry' | 'raw'> {
    if (this.#cipher === null) return { entry: serializeEntry(entry) };
    const sealed = this.#cipher.sealFields(encodeEntryFields(entry.request));
    return { entry: null, raw: describeRawFields(sealed.map((v) => (typeof v === 'string' ? Buffer.from(v, 'latin1') : v))) };
  }

  async #processRetryJob(job: Job<RetryJobData>, token?: string): Promise<void> {
    const data = job.data;
    // A job made to carry a failure goes to the failed set on its first run; run again (a retry
    // from the dashboard), it replays like any other.
    if (data.failReason !== undefined && job.attemptsMade === 0) throw new UnrecoverableError(data.failReason);
    let entry: Entry;
    try {
      if (data.entry === null && data.raw !== undefined) {
        // Encrypted (or undecodable) stream fields: decoded like a stream entry, so that an entry
        // that failed for want of its key is delivered by `failed replay` once the key is there.
        const fields = Object.entries(data.raw).flatMap(([name, value]) => [Buffer.from(name, 'latin1'), Buffer.from(value, 'base64')]);
        const id = String(job.id);
        entry = decodeEntry(id, openEntryFields(splitId(id).id, fields, this.#cipher));
      } else {
        entry = deserializeEntry(data.entry);
      }
    } catch (error) {
      throw new UnrecoverableError(this.#redactor.text(errorMessage(error)));
    }
    const attemptNo = data.priorAttempts + job.attemptsMade + 1;
    const firstTriedAt = data.firstTriedAt ?? (await this.#startWindow(job));
    // The window is checked when a try starts, not only when the previous one failed: a busy
    // retry queue (ceil(WORKER_CONCURRENCY / 4) jobs at once) starts jobs later than their delay.
    const late = Date.now() - (firstTriedAt + this.#policy.windowMs);
    // Only for a try after a retryable failure: a stage asking to replay later is not bounded.
    if (data.firstTriedAt !== undefined && (data.retrying === true || job.attemptsMade > 0) && late > 0) {
      this.#m.failedEntry('exhausted');
      const message = `exhausted: try ${attemptNo} would start ${late} ms after the retry window (RETRY_WINDOW_MS=${this.#policy.windowMs}) ended; not tried`;
      this.#logger.warn(
        { entryId: String(job.id), attempt: attemptNo, lateMs: late },
        'retry window ended before the try could start; entry goes to the failed set',
      );
      this.#endsOrder.set(String(job.id), entry.request);
      throw new UnrecoverableError(message);
    }
    // Finished for good (answered, dropped, failed, out of attempts): the next request of its
    // key may go once BullMQ recorded the end (its 'completed' event, or 'failed' with
    // finishedOn), not before: a job cut short before that runs again, and must still be first
    // of its key then.
    if (this.#order) this.#endsOrder.set(String(job.id), entry.request);
    await this.#runRetryJob(job, token, entry, attemptNo, firstTriedAt);
  }

  async #runRetryJob(job: Job<RetryJobData>, token: string | undefined, entry: Entry, attemptNo: number, firstTriedAt: number): Promise<void> {
    const data = job.data;
    // BullMQ runs the job whether or not a slot is free: it is counted all the same.
    const slot = jobSlot(String(job.id));
    this.#slots.acquireOver(slot);
    this.#m.retried();
    try {
      // A job that waited for an ID mapping sent nothing yet: its first run sends the extra copies too.
      const copiesSent = data.retrying === true || job.attemptsMade > 0;
      const d = await this.#attemptOnce(entry, attemptNo, firstTriedAt, undefined, copiesSent);
      switch (d.kind) {
        case 'replayed':
        case 'post-error':
          await this.#commands.incr(this.#keys.replayed).catch(() => undefined);
          return;
        case 'dropped':
          return;
        case 'later':
          if (!token) throw new ReplayFailedError('asked to replay later', d.delayMs);
          // Waiting spends no attempt: BullMQ's manual delay.
          await job.moveToDelayed(Date.now() + d.delayMs, token);
          throw new DelayedError();
        case 'retry':
          // BullMQ stores these messages as the job's failedReason: redacted like logs are.
          throw new ReplayFailedError(this.#redactor.text(d.message), d.delayMs);
        case 'failed':
          throw new UnrecoverableError(this.#redactor.text(d.message));
      }
    } finally {
      this.#slots.release(slot);
    }
  }

  /** The first try of a job without `firstTriedAt` (replayed from the failed set, or older): now. */
  async #startWindow(job: Job<RetryJobData>): Promise<number> {
    const now = Date.now();
    // Kept in the job so later tries count from it; refused (Redis full), this try still runs.
    await job.updateData({ ...job.data, firstTriedAt: now }).catch(() => undefined);
    return now;
  }

  #startPoison(id: string, fields: Buffer[], delivered: number): void {
    if (!this.#slots.acquireOver(id)) return;
    void this.#handOverPoison(id, fields, delivered).finally(() => this.#slots.release(id));
  }

  async #handOverPoison(id: string, fields: Buffer[], delivered: number): Promise<void> {
    let entry: RetryJobData['entry'] = null;
    try {
      entry = this.#cipher === null ? serializeEntry(decodeEntry(id, fields)) : null;
    } catch {
      entry = null;
    }
    const reason = `delivered ${delivered} times without finishing`;
    this.#logger.warn({ entryId: id, attempt: delivered }, `entry ${reason}; it goes to the failed set`);
    await this.#handOver(
      id,
      { entry, raw: entry ? undefined : describeRawFields(fields), priorAttempts: delivered - 1, failReason: reason },
      'poison',
      undefined,
      this.#order?.placeOf(id, null, fields),
    );
  }

  /**
   * Stops reading, lets in-flight replays finish for up to SHUTDOWN_TIMEOUT_MS, hands back what
   * is still running (its idle time is set so another worker takes it at once), flushes
   * acknowledgements and closes every connection. Every step runs even when one fails.
   */
  async close(): Promise<void> {
    if (this.#stopping) return;
    this.#stopping = true;
    this.#stop();
    this.#probe.stop();
    this.#order?.close();
    this.#slots.close();
    this.#logger.info({ inFlight: this.#slots.held }, 'worker shutting down');
    if (this.#claimTimer) clearInterval(this.#claimTimer);
    const deadline = Date.now() + this.#config.shutdownTimeoutMs;
    // Every step is bounded: with Redis gone, a command would wait for a reconnect for ever.
    // The steps after the deadline (hand back, acknowledgements, connections) share one grace
    // period instead of a second each, so the whole stop is bounded by SHUTDOWN_TIMEOUT_MS +
    // SHUTDOWN_GRACE_MS even when Redis does not answer at all (a paused or partitioned Redis).
    const hardDeadline = deadline + SHUTDOWN_GRACE_MS;
    const step = async (name: string, fn: () => Promise<unknown>) => {
      let timer: NodeJS.Timeout | undefined;
      try {
        await Promise.race([
          fn(),
          new Promise((_, reject) => {
            const until = Date.now() < deadline ? deadline : hardDeadline;
            timer = setTimeout(() => reject(new ShutdownTimeoutError(name)), Math.max(MIN_STEP_MS, until - Date.now()));
          }),
        ]);
      } catch (error) {
        this.#logger.warn({ step: name, err: errorMessage(error) }, 'shutdown step failed');
      } finally {
        clearTimeout(timer);
      }
    };
    await step('read loop', async () => {
      // A read blocks at most READ_BLOCK_MS; past that Redis is not answering.
      const cut = setTimeout(() => this.#reader.disconnect(), READ_BLOCK_MS + 500);
      await this.#readLoop;
      clearTimeout(cut);
    });
    await step('claim', async () => {
      await this.#claiming;
    });
    // The retry worker stops taking jobs now; its running jobs count as in flight below. It is
    // closed (forced) only after that wait: BullMQ's close(true) after a close() is a no-op
    // (it returns the first, waiting close), and a worker still waiting for its jobs when its
    // connections are closed under it keeps the process from ever exiting.
    await step('retry worker', async () => this.#retryWorker?.pause(true));
    // Replays (and copies of amplified ones) waiting for a rate token keep waiting until the
    // deadline, so a graceful stop drops no copy; past it they stop waiting (a retryable failure:
    // copy 1 goes to the retry queue; nothing is sent uncapped).
    await step('in flight', () => Promise.race([this.#slots.whenEmpty(), new Promise((r) => setTimeout(r, Math.max(0, deadline - Date.now())).unref())]));
    this.#rate.close();
    // A job cut short is retried after its lock expires (BullMQ's stalled check).
    await step('retry worker close', async () => this.#retryWorker?.close(true));
    // Parked entries (ORDER_BY) are handed back with the running ones: another worker runs them in turn.
    const unfinished = [...this.#slots.keys((k) => !k.startsWith('job:')), ...(this.#order?.drop() ?? [])];
    if (unfinished.length > 0) {
      await step('hand back', () =>
        Promise.all(
          [...byPartition(unfinished)].map(([p, raw]) => {
            const keys = this.#parts[p] as Keys;
            return this.#commands.xclaim(keys.stream, keys.group, this.#consumer, 0, ...raw, 'IDLE', this.#config.claimIdleMs, 'JUSTID');
          }),
        ),
      );
    }
    await step('flush acks', () => this.#acks.drain(Math.max(deadline, Date.now() + 1000)));
    await step('heartbeat', () => this.#heartbeat.close());
    await step('deployment metrics', () => this.#deployment.close());
    await step('trimmer', async () => this.#trimmer?.close());
    await step('staging', () => this.#staging.close());
    await step('pipeline', () => this.#pipeline.close());
    await step('queue', () => this.#queue.close());
    await step('redis', () => Promise.all([closeRedis(this.#commands), closeRedis(this.#reader), closeRedis(this.#bull)]));
    await step('admin', async () => this.#admin?.close());
    this.#logger.info({ handedBack: unfinished.length }, 'worker stopped');
  }
}

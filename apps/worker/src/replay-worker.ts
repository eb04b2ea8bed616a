import { hostname } from 'node:os';
import { randomBytes } from 'node:crypto';
import type { Redis } from 'ioredis';
import { DelayedError, UnrecoverableError, Worker, type Job, type Queue } from 'bullmq';
import { Registry, collectDefaultMetrics } from 'prom-client';
import {
  compareStreamIds,
  composePipeline,
  ConfigError,
  decodeEntry,
  describeRawFields,
  deserializeEntry,
  encodeEntryFields,
  EntryCipher,
  errorMessage,
  exporterLockKey,
  keysFor,
  openEntryFields,
  partitionKeys,
  qualifyId,
  RedisUnavailableError,
  ReplayFailedError,
  ReplayLaterError,
  serializeEntry,
  ShutdownTimeoutError,
  splitId,
  type CompiledPipeline,
  type Config,
  type Entry,
  type Keys,
} from '@mirrorplane/core';
import {
  type AdminServer,
  adminServerFor,
  closeRedis,
  createRedis,
  createRetryQueue,
  DeploymentMetrics,
  ensureGroup,
  retryJobName,
  StreamTrimmer,
  WorkerMetrics,
  type FailedReason,
  type Logger,
  type RetryJobData,
} from '@mirrorplane/runtime';
import { StagingClient } from './replay.js';

type StreamReply = [Buffer, [Buffer, Buffer[] | null][]][] | null;

/** ioredis has Buffer-returning variants of every command; its types omit these two. */
interface BufferCommands {
  xreadgroupBuffer(...args: (string | number)[]): Promise<unknown>;
  xautoclaimBuffer(...args: (string | number)[]): Promise<unknown>;
}

export interface ReplayWorkerOptions {
  /** Pipeline stages (rules, hooks, recording), composed once. */
  pipeline?: CompiledPipeline;
  /** Consumer name in the group; unique per process by default. */
  consumer?: string;
}

const READ_BLOCK_MS = 1000;
/** With several partitions, how long a worker waits after a round that found nothing. */
const IDLE_POLL_MS = 50;

/**
 * A worker: reads the stream through the consumer group, replays each entry to staging with
 * bounded concurrency, acknowledges and deletes what is finished, hands retryable failures to
 * the BullMQ retry queue, and takes over entries a dead worker left unfinished.
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
  readonly #pipeline: CompiledPipeline;
  /** Decrypts encrypted entries and encrypts retry jobs; null when MIRRORPLANE_DATA_KEY is unset. */
  readonly #cipher: EntryCipher | null;
  readonly #admin: AdminServer | null;
  readonly #registry = new Registry();
  readonly #m: WorkerMetrics;
  readonly #deployment: DeploymentMetrics;
  /** Trims finished entries beyond STREAM_RETENTION; null when finished entries are deleted at once. */
  readonly #trimmer: StreamTrimmer | null;

  /** Stream entries being replayed by this process: id → start time. */
  readonly #inFlight = new Map<string, number>();
  #retryInFlight = 0;
  #slotFree: Promise<void> | null = null;
  /** Resolves when close() begins, to cut an idle wait short. */
  #stop: () => void = () => undefined;
  readonly #stopped = new Promise<void>((resolve) => { this.#stop = resolve; });
  /** Free slots that make the read loop read again (a quarter of the concurrency). */
  readonly #refillAt: number;
  #slotWaiter: (() => void) | null = null;
  #stopping = false;
  #readLoop: Promise<void> | null = null;
  #claimTimer: NodeJS.Timeout | null = null;
  #claiming: Promise<void> | null = null;
  /** Ids finished since the last flush, and how many of them count as replayed. */
  #toAck: string[] = [];
  #toAckReplayed = 0;
  #flushScheduled = false;
  #flushing: Promise<void> = Promise.resolve();

  constructor(config: Config, logger: Logger, options: ReplayWorkerOptions = {}) {
    // loadConfig requires it for the worker role; a hand-built config without it is refused the same way.
    if (!config.stagingUrl) throw new ConfigError([{ key: 'STAGING_URL', message: 'required by the worker' }]);
    this.#config = config;
    this.#logger = logger;
    this.#refillAt = Math.max(1, Math.floor(config.workerConcurrency / 4));
    this.#parts = partitionKeys(config.prefix, config.partitions);
    this.#keys = this.#parts[0] ?? keysFor(config.prefix);
    this.#consumer = options.consumer ?? `${hostname()}-${process.pid}-${randomBytes(3).toString('hex')}`;
    this.#commands = createRedis(config, 'commands', logger);
    this.#reader = createRedis(config, 'blocking', logger);
    this.#bull = createRedis(config, 'bullmq', logger);
    this.#queue = createRetryQueue(this.#keys, this.#bull);
    this.#queue.on('error', (error) => this.#logger.warn({ err: errorMessage(error) }, 'retry queue error'));
    this.#pipeline = options.pipeline ?? composePipeline([]);
    this.#cipher = EntryCipher.fromSpec(config.dataKey);
    this.#staging = new StagingClient(config, this.#pipeline);

    collectDefaultMetrics({ register: this.#registry, prefix: 'mirrorplane_worker_' });
    this.#m = new WorkerMetrics(this.#registry, () => this.#inFlight.size + this.#retryInFlight);
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
    });
    this.#trimmer = config.streamRetention === null ? null : new StreamTrimmer({ redis: this.#commands, keys: this.#parts, retention: config.streamRetention, logger });
    this.#admin = adminServerFor(config, { ready: () => this.ready, metrics: this.#registry, logger });
  }

  get consumer(): string {
    return this.#consumer;
  }

  get ready(): boolean {
    return !this.#stopping && this.#reader.status === 'ready' && this.#commands.status === 'ready';
  }

  get metrics(): Registry {
    return this.#registry;
  }

  async start(): Promise<{ adminPort: number | null }> {
    const adminPort = this.#admin ? await this.#admin.listen() : null;
    await this.#ensureGroupWithRetry();
    this.#retryWorker = new Worker<RetryJobData>(this.#keys.retryQueue, (job, token) => this.#processRetryJob(job, token), {
      connection: this.#bull,
      prefix: this.#keys.bullPrefix,
      concurrency: Math.max(1, Math.ceil(this.#config.workerConcurrency / 4)),
      // A job is locked at least as long as a replay can take, so BullMQ never thinks it stalled.
      lockDuration: Math.max(30_000, this.#config.replayTimeoutMs * 2),
      removeOnComplete: { count: 0 },
      removeOnFail: { count: 1_000_000 },
    });
    this.#retryWorker.on('error', (error) => this.#logger.warn({ err: errorMessage(error) }, 'retry worker error'));
    this.#readLoop = this.#runReadLoop();
    this.#deployment.start();
    this.#trimmer?.start();
    const every = Math.max(100, Math.min(5000, Math.floor(this.#config.claimIdleMs / 3)));
    this.#claimTimer = setInterval(() => {
      this.#claiming ??= this.#claimAbandoned().finally(() => { this.#claiming = null; });
    }, every);
    this.#logger.info({ consumer: this.#consumer, staging: this.#config.stagingUrl, concurrency: this.#config.workerConcurrency, adminPort }, 'worker started');
    return { adminPort };
  }

  async #ensureGroupWithRetry(): Promise<void> {
    for (let delay = 100; ; delay = Math.min(delay * 2, 2000)) {
      try {
        for (const keys of this.#parts) await ensureGroup(this.#commands, keys.stream, keys.group);
        return;
      } catch (error) {
        if (this.#stopping) return;
        this.#logger.warn({ err: errorMessage(error) }, 'cannot create the consumer group yet; retrying');
        await new Promise((r) => setTimeout(r, delay));
      }
    }
  }

  #freeSlots(): number {
    return this.#config.workerConcurrency - this.#inFlight.size - this.#retryInFlight;
  }

  /** Resolves when a replay finishes; every waiting read loop wakes. */
  #waitForSlot(): Promise<void> {
    this.#slotFree ??= new Promise<void>((resolve) => {
      this.#slotWaiter = () => {
        this.#slotFree = null;
        this.#slotWaiter = null;
        resolve();
      };
    });
    return this.#slotFree;
  }

  /** Reads the stream: one blocking read at a time on one partition, a round over them on several. */
  #runReadLoop(): Promise<void> {
    return this.#parts.length === 1 ? this.#runBlockingReadLoop() : this.#runRoundRobinReadLoop();
  }

  async #runBlockingReadLoop(): Promise<void> {
    const keys = this.#keys;
    let backoff = 100;
    while (!this.#stopping) {
      const free = this.#freeSlots();
      // Under load slots free up one at a time; reading each time would cost an XREADGROUP
      // per entry. Reading once a quarter of the slots is free costs one per many entries.
      if (free < this.#refillAt) {
        await this.#waitForSlot();
        continue;
      }
      let reply: StreamReply;
      try {
        reply = (await (this.#reader as unknown as BufferCommands).xreadgroupBuffer(
          'GROUP', keys.group, this.#consumer,
          'COUNT', free, 'BLOCK', READ_BLOCK_MS,
          'STREAMS', keys.stream, '>',
        )) as StreamReply;
        backoff = 100;
      } catch (error) {
        if (this.#stopping) break;
        backoff = await this.#readFailed(keys, error, backoff);
        continue;
      }
      this.#startReplies(reply, 0);
    }
  }

  /**
   * Several partitions: a blocking read on one would hold the free slots while the others
   * have work (and a cluster cannot block on streams of several slots at once). So each
   * round reads every partition without blocking, starting one further each time and
   * sharing the free slots evenly; an idle round sleeps briefly before the next.
   */
  async #runRoundRobinReadLoop(): Promise<void> {
    const n = this.#parts.length;
    let start = 0;
    let backoff = 100;
    while (!this.#stopping) {
      if (this.#freeSlots() < this.#refillAt) {
        await this.#waitForSlot();
        continue;
      }
      let got = 0;
      let failed = false;
      for (let i = 0; i < n && !this.#stopping; i++) {
        const p = (start + i) % n;
        const free = this.#freeSlots();
        if (free <= 0) break;
        const keys = this.#parts[p] as Keys;
        try {
          const reply = (await (this.#reader as unknown as BufferCommands).xreadgroupBuffer(
            'GROUP', keys.group, this.#consumer,
            'COUNT', Math.max(1, Math.ceil(free / (n - i))),
            'STREAMS', keys.stream, '>',
          )) as StreamReply;
          got += this.#startReplies(reply, p);
        } catch (error) {
          if (this.#stopping) break;
          backoff = await this.#readFailed(keys, error, backoff);
          failed = true;
          break;
        }
      }
      start = (start + 1) % n;
      if (!failed) backoff = 100;
      if (got === 0 && !failed && !this.#stopping) {
        await Promise.race([new Promise((r) => setTimeout(r, IDLE_POLL_MS)), this.#stopped]);
      }
    }
  }

  /** Logs a failed read (or remakes a missing group) and waits; returns the next backoff. */
  async #readFailed(keys: Keys, error: unknown, backoff: number): Promise<number> {
    const message = errorMessage(error);
    if (message.includes('NOGROUP')) {
      // The stream was deleted (or never existed): make the group again and go on.
      await ensureGroup(this.#commands, keys.stream, keys.group).catch(() => undefined);
    } else {
      this.#logger.warn({ err: message }, 'reading the stream failed; retrying');
    }
    await new Promise((r) => setTimeout(r, backoff));
    return Math.min(backoff * 2, 2000);
  }

  /** Starts the entries of a read reply of partition `p`; returns how many there were. */
  #startReplies(reply: StreamReply, p: number): number {
    let count = 0;
    for (const [, entries] of reply ?? []) {
      for (const [idBuffer, fields] of entries) {
        count += 1;
        const id = qualifyId(idBuffer.toString(), p);
        if (fields === null) {
          // Deleted after it was delivered: nothing to replay, just clear it.
          this.#finish(id, false);
          continue;
        }
        this.#startEntry(id, fields, 1);
      }
    }
    return count;
  }

  #startEntry(id: string, fields: Buffer[], attempt: number): void {
    this.#inFlight.set(id, Date.now());
    this.#processStreamEntry(id, fields, attempt)
      .catch((error: unknown) => {
        // Should not happen: #processStreamEntry handles its own failures. The entry stays
        // pending and another worker takes it over after CLAIM_IDLE_MS.
        this.#logger.error({ entryId: id, err: errorMessage(error) }, 'unexpected error processing an entry');
      })
      .finally(() => {
        this.#inFlight.delete(id);
        this.#slotWaiter?.();
      });
  }

  async #processStreamEntry(id: string, fields: Buffer[], attempt: number): Promise<void> {
    let entry: Entry;
    try {
      entry = decodeEntry(id, openEntryFields(splitId(id).id, fields, this.#cipher));
    } catch (error) {
      this.#logger.warn({ entryId: id, err: errorMessage(error) }, 'undecodable entry goes to the failed set');
      await this.#handOver(id, { entry: null, raw: describeRawFields(fields), priorAttempts: 0, failReason: errorMessage(error) }, 'undecodable');
      return;
    }
    const started = performance.now();
    try {
      const outcome = await this.#staging.replay(entry, attempt);
      if (outcome.kind === 'dropped') {
        this.#m.dropped();
        this.#finish(id, false);
      } else {
        this.#m.replayed(outcome.status, outcome.ms / 1000);
        this.#finish(id, true);
      }
    } catch (error) {
      if (error instanceof ReplayLaterError) {
        // A stage asked for later (an ID whose staging twin is not known yet): the entry waits
        // in the retry queue, holding no slot, and no attempt is spent.
        await this.#handOver(id, { ...this.#jobEntry(entry), priorAttempts: attempt - 1 }, 'wait', error.delayMs);
        return;
      }
      const retryable = (error as { retryable?: boolean }).retryable === true;
      const completed = (error as { completed?: boolean }).completed === true;
      const message = errorMessage(error);
      const seconds = (performance.now() - started) / 1000;
      if (completed) {
        // A post handler failed after staging completed the replay: count it, finish the entry.
        this.#m.errored('post_error', seconds);
        this.#logger.warn({ entryId: id, reqId: entry.request.requestId, err: message }, 'post handler failed');
        this.#finish(id, true);
        return;
      }
      this.#m.errored(retryable ? 'retryable_error' : 'failed', seconds);
      const serialized = this.#jobEntry(entry);
      if (retryable && this.#config.replayAttempts > attempt) {
        this.#logger.debug({ entryId: id, reqId: entry.request.requestId, attempt, err: message }, 'replay failed; will retry');
        await this.#handOver(id, { ...serialized, priorAttempts: attempt }, 'retry');
      } else {
        this.#logger.warn({ entryId: id, reqId: entry.request.requestId, attempt, err: message }, 'replay failed; entry goes to the failed set');
        await this.#handOver(id, { ...serialized, priorAttempts: attempt, failReason: message }, retryable ? 'exhausted' : 'unretryable');
      }
    }
  }

  /**
   * Moves a stream entry to the retry queue (or straight to its failed set) and only then
   * acknowledges it. The job id is the entry id, so a repeat after a crash adds nothing.
   */
  async #handOver(id: string, data: RetryJobData, why: 'retry' | 'wait' | FailedReason, delayMs?: number): Promise<void> {
    const attempts = this.#config.replayAttempts - data.priorAttempts;
    const base = this.#config.replayBackoffMs;
    try {
      // An encrypted entry's method and target are not in clear, so neither is the job name.
      const name = data.entry === null && data.raw?.e !== undefined ? 'encrypted entry' : retryJobName(data.entry);
      await this.#queue.add(name, data, {
        jobId: id,
        attempts: why === 'retry' || why === 'wait' ? Math.max(1, attempts) : 1,
        backoff: { type: 'exponential', delay: base, jitter: 0.5 },
        // The first retry waits like any later one: the base delay with jitter.
        delay: delayMs ?? (why === 'retry' ? Math.round(base * (0.5 + Math.random() * 0.5)) : 0),
        removeOnComplete: true,
        removeOnFail: false,
      });
    } catch (error) {
      // Not acknowledged: the entry stays pending and is taken over after CLAIM_IDLE_MS.
      this.#logger.error({ entryId: id, err: errorMessage(error) }, 'could not hand the entry to the retry queue; it stays pending');
      return;
    }
    if (why === 'retry') this.#m.retryScheduled();
    else if (why !== 'wait') this.#m.failedEntry(why);
    this.#finish(id, false);
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
      throw new UnrecoverableError(errorMessage(error));
    }
    const attempt = data.priorAttempts + job.attemptsMade + 1;
    this.#retryInFlight += 1;
    this.#m.retried();
    const started = performance.now();
    try {
      const outcome = await this.#staging.replay(entry, attempt);
      if (outcome.kind === 'dropped') {
        this.#m.dropped();
        return;
      }
      this.#m.replayed(outcome.status, outcome.ms / 1000);
      await this.#commands.incr(this.#keys.replayed);
    } catch (error) {
      const message = errorMessage(error);
      const seconds = (performance.now() - started) / 1000;
      if ((error as { completed?: boolean }).completed) {
        this.#m.errored('post_error', seconds);
        this.#logger.warn({ entryId: entry.id, reqId: entry.request.requestId, attempt, err: message }, 'post handler failed');
        await this.#commands.incr(this.#keys.replayed);
        return;
      }
      if (error instanceof ReplayLaterError && token) {
        // Waiting spends no attempt: BullMQ's manual delay.
        await job.moveToDelayed(Date.now() + error.delayMs, token);
        throw new DelayedError();
      }
      const retryable = (error as { retryable?: boolean }).retryable === true;
      this.#m.errored(retryable ? 'retryable_error' : 'failed', seconds);
      const last = !retryable || attempt >= this.#config.replayAttempts || job.attemptsMade + 1 >= (job.opts.attempts ?? 1);
      if (last) this.#m.failedEntry(retryable ? 'exhausted' : 'unretryable');
      if (last) this.#logger.warn({ entryId: entry.id, reqId: entry.request.requestId, attempt, err: message }, 'replay failed; entry goes to the failed set');
      throw retryable ? new ReplayFailedError(message, { cause: error }) : new UnrecoverableError(message);
    } finally {
      this.#retryInFlight -= 1;
      this.#slotWaiter?.();
    }
  }

  /** Queues an acknowledgement; acknowledgements of one tick go to Redis in one MULTI. */
  #finish(id: string, replayed: boolean): void {
    this.#toAck.push(id);
    if (replayed) this.#toAckReplayed += 1;
    if (!this.#flushScheduled) {
      this.#flushScheduled = true;
      setImmediate(() => {
        this.#flushScheduled = false;
        this.#flushing = this.#flushing.then(() => this.#flushAcks());
      });
    }
  }

  async #flushAcks(): Promise<void> {
    if (this.#toAck.length === 0) return;
    const ids = this.#toAck;
    const replayed = this.#toAckReplayed;
    this.#toAck = [];
    this.#toAckReplayed = 0;
    // XACK and XDEL together: a finished entry leaves Redis, so memory follows the backlog.
    // With a retention, finished entries stay for it and the trimmer removes them later.
    // One MULTI per partition: a partition's keys share one hash tag (one slot in a cluster).
    // Status sums every partition's replayed counter, so a flush counts its replays in one.
    let count = replayed;
    for (const [p, partIds] of byPartition(ids)) {
      const keys = this.#parts[p] as Keys;
      const multi = this.#commands.multi().xack(keys.stream, keys.group, ...partIds);
      if (this.#trimmer === null) multi.xdel(keys.stream, ...partIds);
      if (count > 0) multi.incrby(keys.replayed, count);
      count = 0;
      try {
        const results = await multi.exec();
        const failed = results?.find(([error]) => error);
        if (failed) throw new RedisUnavailableError(errorMessage(failed[0]), { cause: failed[0] });
      } catch (error) {
        // Left pending, the entries are replayed again after CLAIM_IDLE_MS: at least once, never lost.
        this.#logger.error({ count: partIds.length, err: errorMessage(error) }, 'acknowledging finished entries failed; they will be replayed again');
      }
    }
  }

  /**
   * Takes over entries other workers left pending for CLAIM_IDLE_MS (the worker died), and
   * keeps this worker's own long replays from looking abandoned.
   */
  async #claimAbandoned(): Promise<void> {
    if (this.#stopping) return;
    try {
      await this.#refreshOwnPending();
      for (const [p, keys] of this.#parts.entries()) {
        let cursor = '0-0';
        do {
          const free = this.#freeSlots();
          if (free <= 0 || this.#stopping) return;
          const reply = (await (this.#commands as unknown as BufferCommands).xautoclaimBuffer(
            keys.stream, keys.group, this.#consumer, this.#config.claimIdleMs, cursor, 'COUNT', Math.min(free, 100),
          )) as unknown as [Buffer, [Buffer, Buffer[] | null][], Buffer[]?];
          cursor = reply[0].toString();
          const entries = reply[1];
          for (const gone of reply[2] ?? []) this.#finish(qualifyId(gone.toString(), p), false);
          if (entries.length === 0) continue;
          const deliveries = await this.#deliveryCounts(entries.map(([id]) => qualifyId(id.toString(), p)));
          for (const [idBuffer, fields] of entries) {
            const id = qualifyId(idBuffer.toString(), p);
            if (this.#inFlight.has(id)) continue;
            if (fields === null) {
              this.#finish(id, false);
              continue;
            }
            this.#m.claimed();
            const delivered = deliveries.get(id) ?? 2;
            if (delivered > Math.max(10, this.#config.replayAttempts * 2)) {
              // An entry that keeps its workers from finishing it (a crash on it, say) must not
              // circle for ever.
              this.#inFlight.set(id, Date.now());
              void this.#handOverPoison(id, fields, delivered).finally(() => this.#inFlight.delete(id));
              continue;
            }
            this.#logger.info({ entryId: id, attempt: delivered }, 'took over an abandoned entry');
            this.#startEntry(id, fields, delivered);
          }
        } while (cursor !== '0-0');
      }
    } catch (error) {
      this.#logger.warn({ err: errorMessage(error) }, 'claiming abandoned entries failed; will try again');
    }
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
    await this.#handOver(id, { entry, raw: entry ? undefined : describeRawFields(fields), priorAttempts: delivered - 1, failReason: reason }, 'poison');
  }

  /** Delivery counts of entries of one partition, by their qualified ids. */
  async #deliveryCounts(ids: string[]): Promise<Map<string, number>> {
    const out = new Map<string, number>();
    for (const [p, raw] of byPartition(ids)) {
      const keys = this.#parts[p] as Keys;
      const sorted = raw.slice().sort(compareStreamIds);
      const rows = (await this.#commands.xpending(
        keys.stream, keys.group, sorted[0] as string, sorted[sorted.length - 1] as string, raw.length + 10, this.#consumer,
      )) as [string, string, number, number][];
      for (const [id, , , count] of rows) out.set(qualifyId(id, p), Number(count));
    }
    return out;
  }

  /** Resets the idle time of this worker's long-running replays so no one takes them over. */
  async #refreshOwnPending(): Promise<void> {
    const threshold = Date.now() - this.#config.claimIdleMs / 2;
    const old = [...this.#inFlight].filter(([, since]) => since < threshold).map(([id]) => id);
    if (old.length === 0) return;
    for (const [p, raw] of byPartition(old)) {
      const keys = this.#parts[p] as Keys;
      await this.#commands.xclaim(keys.stream, keys.group, this.#consumer, 0, ...raw, 'JUSTID');
    }
    for (const id of old) this.#inFlight.set(id, Date.now());
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
    this.#logger.info({ inFlight: this.#inFlight.size + this.#retryInFlight }, 'worker shutting down');
    if (this.#claimTimer) clearInterval(this.#claimTimer);
    this.#slotWaiter?.();
    const deadline = Date.now() + this.#config.shutdownTimeoutMs;
    // Every step is bounded: with Redis gone, a command would wait for a reconnect for ever.
    const step = async (name: string, fn: () => Promise<unknown>) => {
      let timer: NodeJS.Timeout | undefined;
      try {
        await Promise.race([
          fn(),
          new Promise((_, reject) => {
            timer = setTimeout(() => reject(new ShutdownTimeoutError(name)), Math.max(1000, deadline - Date.now()));
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
    await step('claim', async () => { await this.#claiming; });
    await step('retry worker', async () => {
      // BullMQ waits for active jobs; a job cut short is retried by BullMQ's stalled check.
      const closing = this.#retryWorker?.close();
      const timeout = new Promise((r) => setTimeout(r, Math.max(0, deadline - Date.now())).unref());
      await Promise.race([closing, timeout]);
      if (this.#retryInFlight > 0) await this.#retryWorker?.close(true);
    });
    while (this.#inFlight.size > 0 && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 20));
    }
    const unfinished = [...this.#inFlight.keys()];
    if (unfinished.length > 0) {
      await step('hand back', () => Promise.all([...byPartition(unfinished)].map(([p, raw]) => {
        const keys = this.#parts[p] as Keys;
        return this.#commands.xclaim(keys.stream, keys.group, this.#consumer, 0, ...raw, 'IDLE', this.#config.claimIdleMs, 'JUSTID');
      })));
    }
    await step('flush acks', async () => {
      await this.#flushing;
      await this.#flushAcks();
    });
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

/** Qualified ids (see `qualifyId`) grouped by partition, as stream ids. */
function byPartition(ids: readonly string[]): Map<number, string[]> {
  const out = new Map<number, string[]>();
  for (const q of ids) {
    const { id, partition } = splitId(q);
    const list = out.get(partition);
    if (list) list.push(id);
    else out.set(partition, [id]);
  }
  return out;
}

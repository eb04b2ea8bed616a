import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import type { Queue } from 'bullmq';
import { drainSeconds, errorMessage, type Keys, type RateLimit } from '@mirrorplane/core';
import type { Logger } from './logger.js';
import type { RedisClient } from './redis.js';
import type { RetryJobData } from './retry-queue.js';
import { readStatus, type Status } from './operations.js';

/**
 * Metrics every process shares, in Prometheus' conventions: the `mirrorplane_` prefix,
 * counters end in `_total`, durations are `_seconds`, sizes are bytes.
 *
 * - per process: what the process itself did (the ingress's and worker's own counters);
 *   summed across processes, they give the deployment's totals.
 * - per deployment: what is in Redis (backlog, pending, retrying, failed, oldest backlog
 *   age). Every worker could read them, so exactly one exports them, elected with a
 *   short-lived Redis lock; the others export the series with no samples, so a `sum()`
 *   never counts them twice.
 */

/** Buckets of a replay to staging: 1 ms to 10 s. */
export const REPLAY_SECONDS_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

/** What a replay attempt came to: staging's status class, or why there was no status. */
export type ReplayOutcomeLabel = '1xx' | '2xx' | '3xx' | '4xx' | '5xx' | 'dropped' | 'post_error' | 'retryable_error' | 'failed';

/** Why an entry went to the failed set. */
export type FailedReason = 'exhausted' | 'unretryable' | 'undecodable' | 'poison';

const STATUS_CLASSES = ['1xx', '2xx', '3xx', '4xx', '5xx'] as const;
const OUTCOMES: readonly ReplayOutcomeLabel[] = [...STATUS_CLASSES, 'dropped', 'post_error', 'retryable_error', 'failed'];
const FAILED_REASONS: readonly FailedReason[] = ['exhausted', 'unretryable', 'undecodable', 'poison'];

/** A worker's own counters, with every label child bound once at construction. */
export class WorkerMetrics {
  readonly #replays: Record<ReplayOutcomeLabel, Counter.Internal>;
  readonly #seconds: Record<ReplayOutcomeLabel | 'error', Histogram.Internal<string>>;
  readonly #failed: Record<FailedReason, Counter.Internal>;
  readonly #retries: Counter.Internal;
  readonly #retriesScheduled: Counter.Internal;
  readonly #claimed: Counter.Internal;
  readonly #copies: Counter<'outcome'>;

  /**
   * @param rate the worker's rate caps: times a replay waited for a token, by origin
   *   (`mirrorplane_worker_rate_limit_waits_total`), read at each scrape.
   */
  constructor(registry: Registry, inFlight: () => number, rate?: { readonly waits: ReadonlyMap<string, number> }) {
    const registers = [registry];
    if (rate) {
      new Counter({
        name: 'mirrorplane_worker_rate_limit_waits_total',
        help: 'Times a replay (a retry, a copy, one routed off the default origin) waited for a rate token, by staging origin',
        labelNames: ['origin'],
        registers,
        collect() {
          this.reset();
          for (const [origin, n] of rate.waits) this.inc({ origin }, n);
        },
      });
    }
    const replays = new Counter({
      name: 'mirrorplane_worker_replays_total',
      help: 'Replay attempts by outcome: staging status class (1xx-5xx), or dropped, post_error, retryable_error, failed',
      labelNames: ['outcome'],
      registers,
    });
    const seconds = new Histogram({
      name: 'mirrorplane_worker_replay_seconds',
      help: 'Time of one replay attempt to staging, by outcome (error when staging gave no usable answer)',
      labelNames: ['outcome'],
      buckets: REPLAY_SECONDS_BUCKETS,
      registers,
    });
    const failed = new Counter({
      name: 'mirrorplane_worker_failed_total',
      help: 'Entries moved to the failed set, by reason (exhausted, unretryable, undecodable, poison)',
      labelNames: ['reason'],
      registers,
    });
    const retries = new Counter({ name: 'mirrorplane_worker_retries_total', help: 'Replay attempts made from the retry queue', registers });
    const scheduled = new Counter({
      name: 'mirrorplane_worker_retries_scheduled_total',
      help: 'Stream entries handed to the retry queue after a retryable failure',
      registers,
    });
    this.#copies = new Counter({
      name: 'mirrorplane_worker_copies_total',
      help: 'Extra copies (2…N) of amplified requests, by outcome: staging status class (1xx-5xx), or error; copy 1 counts in replays_total',
      labelNames: ['outcome'],
      registers,
    });
    const claimed = new Counter({ name: 'mirrorplane_worker_claimed_total', help: 'Entries taken over from workers that left them unfinished', registers });
    new Gauge({
      name: 'mirrorplane_worker_in_flight',
      help: 'Replays in flight in this process',
      registers,
      collect() {
        this.set(inFlight());
      },
    });
    // Label children are bound once: looking them up per replay costs a hash of the labels each time.
    this.#replays = Object.fromEntries(OUTCOMES.map((o) => [o, replays.labels(o)])) as Record<ReplayOutcomeLabel, Counter.Internal>;
    this.#seconds = Object.fromEntries([...OUTCOMES, 'error'].map((o) => [o, seconds.labels(o)])) as Record<
      ReplayOutcomeLabel | 'error',
      Histogram.Internal<string>
    >;
    this.#failed = Object.fromEntries(FAILED_REASONS.map((r) => [r, failed.labels(r)])) as Record<FailedReason, Counter.Internal>;
    this.#retries = retries.labels();
    this.#retriesScheduled = scheduled.labels();
    this.#claimed = claimed.labels();
    // Every series exists from the start (at 0), so rate() and alerts see the first event of a kind.
    for (const child of [...Object.values(this.#replays), ...Object.values(this.#failed), this.#retries, this.#retriesScheduled, this.#claimed]) child.inc(0);
  }

  /** Staging answered with a status that completes the replay. */
  replayed(status: number, seconds: number): void {
    const cls = STATUS_CLASSES[Math.floor(status / 100) - 1] ?? '5xx';
    this.#replays[cls].inc();
    this.#seconds[cls].observe(seconds);
  }

  /** A pipeline stage dropped the request: nothing was sent. */
  dropped(): void {
    this.#replays.dropped.inc();
  }

  /** The attempt threw: a post handler after staging answered, or a (retryable) failure. */
  errored(kind: 'post_error' | 'retryable_error' | 'failed', seconds: number): void {
    this.#replays[kind].inc();
    this.#seconds.error.observe(seconds);
  }

  failedEntry(reason: FailedReason): void {
    this.#failed[reason].inc();
  }

  retried(): void {
    this.#retries.inc();
  }

  retryScheduled(): void {
    this.#retriesScheduled.inc();
  }

  claimed(): void {
    this.#claimed.inc();
  }

  /** An extra copy of an amplified request was answered with `status`, or failed (null). */
  copied(status: number | null): void {
    this.#copies.inc({ outcome: status === null ? 'error' : (STATUS_CLASSES[Math.floor(status / 100) - 1] ?? '5xx') });
  }
}

export interface DeploymentMetricsOptions {
  registry: Registry;
  redis: RedisClient;
  queue: Queue<RetryJobData>;
  /** The deployment's prefix, the `prefix` label of every series. */
  prefix: string;
  /** The deployment's keys, one set per partition. */
  keys: readonly Keys[];
  /** The key of the exporter lock; shares the deployment's hash tag. */
  lockKey: string;
  /** Who holds the lock (the worker's consumer name). */
  holder: string;
  logger: Logger;
  /** How often the status is read and the lock renewed. */
  intervalMs?: number;
  /** The rate caps in force by origin (`RateLimiter.limits`); none: the rate gauges stay empty. */
  rateLimits?: () => ReadonlyMap<string, RateLimit | null>;
}

const RENEW = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) else return 0 end";
const RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end";

/**
 * The deployment's gauges (from Redis), exported by one process. Every `intervalMs` each
 * candidate tries `SET lock holder NX PX 3×interval`; the holder renews it and reads the
 * status. A holder that dies stops renewing and another takes over within three intervals.
 * Scrapes never wait on Redis: they see the last status read.
 */
export class DeploymentMetrics {
  readonly #o: Required<DeploymentMetricsOptions>;
  readonly #gauges: {
    exporter: Gauge;
    backlog: Gauge<'prefix' | 'partition'>;
    pending: Gauge<'prefix' | 'partition'>;
    oldestAge: Gauge<'prefix' | 'partition'>;
    consumers: Gauge<'prefix' | 'partition'>;
    retrying: Gauge<'prefix'>;
    failed: Gauge<'prefix'>;
    replayed: Counter<'prefix'>;
    accepted: Counter<'prefix'>;
    ratePerSecond: Gauge<'prefix' | 'origin'>;
    rateBurst: Gauge<'prefix' | 'origin'>;
    drain: Gauge<'prefix'>;
  };
  #owner = false;
  #timer: NodeJS.Timeout | null = null;
  #running: Promise<void> | null = null;
  #replayedSeen = 0;
  #acceptedSeen = 0;

  constructor(options: DeploymentMetricsOptions) {
    this.#o = { intervalMs: 2000, rateLimits: () => new Map(), ...options };
    const registers = [options.registry];
    // Every deployment series carries the prefix: with no label at all, prom-client would show a
    // 0 sample on the processes that do not export, and a max() or an alert would see it.
    const partitioned = { labelNames: ['prefix', 'partition'] as const, registers };
    const deployment = { labelNames: ['prefix'] as const, registers };
    this.#gauges = {
      exporter: new Gauge({ name: 'mirrorplane_deployment_exporter', help: '1 on the one process exporting the deployment gauges, 0 elsewhere', registers }),
      backlog: new Gauge({ name: 'mirrorplane_stream_backlog_entries', help: 'Entries accepted and not yet taken by a worker', ...partitioned }),
      pending: new Gauge({ name: 'mirrorplane_stream_pending_entries', help: 'Entries taken by a worker and not finished', ...partitioned }),
      oldestAge: new Gauge({
        name: 'mirrorplane_stream_oldest_backlog_age_seconds',
        help: 'Age of the oldest entry of the backlog (0 when empty)',
        ...partitioned,
      }),
      consumers: new Gauge({ name: 'mirrorplane_stream_consumers', help: 'Members of the consumer group', ...partitioned }),
      retrying: new Gauge({ name: 'mirrorplane_retry_queue_jobs', help: 'Jobs waiting in the retry queue or being retried', ...deployment }),
      failed: new Gauge({ name: 'mirrorplane_failed_jobs', help: 'Entries in the failed set', ...deployment }),
      replayed: new Counter({ name: 'mirrorplane_deployment_replayed_total', help: 'Completed replays of the whole deployment, from Redis', ...deployment }),
      accepted: new Counter({ name: 'mirrorplane_deployment_accepted_total', help: 'Entries ever appended to the stream(s), from Redis', ...deployment }),
      ratePerSecond: new Gauge({
        name: 'mirrorplane_rate_limit_per_second',
        help: 'Rate cap in force on a staging origin, requests a second (0: uncapped)',
        labelNames: ['prefix', 'origin'] as const,
        registers,
      }),
      rateBurst: new Gauge({
        name: 'mirrorplane_rate_limit_burst',
        help: 'Burst of the rate cap on a staging origin (0: uncapped)',
        labelNames: ['prefix', 'origin'] as const,
        registers,
      }),
      drain: new Gauge({
        name: 'mirrorplane_rate_limit_drain_seconds',
        help: 'Estimated time to drain the backlog and the retry queue at the default origin cap (absent when uncapped)',
        ...deployment,
      }),
    };
    this.#gauges.exporter.set(0);
  }

  /** True while this process holds the lock and exports the gauges. */
  get exporting(): boolean {
    return this.#owner;
  }

  start(): void {
    const tick = () => {
      this.#running ??= this.#tick().finally(() => {
        this.#running = null;
      });
    };
    tick();
    this.#timer = setInterval(tick, this.#o.intervalMs);
  }

  async #tick(): Promise<void> {
    const { redis, lockKey, holder, intervalMs } = this.#o;
    const ttl = intervalMs * 3;
    try {
      const owner = this.#owner ? Number(await redis.eval(RENEW, 1, lockKey, holder, ttl)) === 1 : (await redis.set(lockKey, holder, 'PX', ttl, 'NX')) === 'OK';
      if (owner !== this.#owner)
        this.#o.logger.info({ exporter: owner }, owner ? 'exporting the deployment metrics' : 'no longer exporting the deployment metrics');
      this.#owner = owner;
      if (!owner) {
        this.#clear();
        return;
      }
      const statuses = await Promise.all(this.#o.keys.map((k) => readStatus(redis, this.#o.queue, k)));
      // The lock may have passed to another process while we read: export nothing stale twice.
      if (this.#owner) this.#set(statuses);
    } catch (error) {
      // Unknown state: better no samples than numbers another process may be exporting too.
      this.#owner = false;
      this.#clear();
      this.#o.logger.debug({ err: errorMessage(error) }, 'could not read the deployment metrics');
    }
  }

  #set(statuses: Status[]): void {
    const g = this.#gauges;
    g.exporter.set(1);
    const prefix = this.#o.prefix;
    statuses.forEach((s, i) => {
      const labels = { prefix, partition: String(i) };
      g.backlog.set(labels, s.backlog);
      g.pending.set(labels, s.pending);
      g.oldestAge.set(labels, (s.oldestBacklogAgeMs ?? 0) / 1000);
      g.consumers.set(labels, s.consumers.length);
    });
    // The retry queue and the failed set are shared by all partitions: read once.
    const first = statuses[0];
    if (!first) return;
    g.retrying.set({ prefix }, first.retrying);
    g.failed.set({ prefix }, first.failed);
    g.ratePerSecond.reset();
    g.rateBurst.reset();
    g.drain.reset();
    for (const [origin, limit] of this.#o.rateLimits()) {
      g.ratePerSecond.set({ prefix, origin }, limit?.perSecond ?? 0);
      g.rateBurst.set({ prefix, origin }, limit?.burst ?? 0);
    }
    const waiting = statuses.reduce((n, s) => n + s.backlog, 0) + first.retrying;
    const drain = drainSeconds(waiting, this.#o.rateLimits().get('default') ?? null);
    if (drain !== null) g.drain.set({ prefix }, drain);
    this.#advance(
      g.replayed,
      'replayed',
      statuses.reduce((n, s) => n + s.replayed, 0),
    );
    this.#advance(
      g.accepted,
      'accepted',
      statuses.reduce((n, s) => n + (s.accepted ?? 0), 0),
    );
  }

  /** Counters follow Redis' absolute value: they only go up, and reset if Redis was reset. */
  #advance(counter: Counter<'prefix'>, which: 'replayed' | 'accepted', value: number): void {
    const seen = which === 'replayed' ? this.#replayedSeen : this.#acceptedSeen;
    const labels = { prefix: this.#o.prefix };
    if (value < seen) counter.reset();
    counter.inc(labels, value < seen ? value : value - seen);
    if (which === 'replayed') this.#replayedSeen = value;
    else this.#acceptedSeen = value;
  }

  #clear(): void {
    const g = this.#gauges;
    g.exporter.set(0);
    for (const metric of [g.backlog, g.pending, g.oldestAge, g.consumers, g.retrying, g.failed, g.replayed, g.accepted, g.ratePerSecond, g.rateBurst, g.drain])
      metric.reset();
    this.#replayedSeen = 0;
    this.#acceptedSeen = 0;
  }

  /** Stops the loop and gives the lock up, so another process takes over at once. */
  async close(): Promise<void> {
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = null;
    await this.#running?.catch(() => undefined);
    if (this.#owner) {
      this.#owner = false;
      await this.#o.redis.eval(RELEASE, 1, this.#o.lockKey, this.#o.holder).catch(() => undefined);
    }
    this.#clear();
  }
}

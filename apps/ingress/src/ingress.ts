import { performance } from 'node:perf_hooks';
import type { Redis } from 'ioredis';
import type { Registry } from 'prom-client';
import { errorMessage, headerValue, keysFor, partitionKeys, type Config, type HttpProtocol } from '@mirrorplane/core';
import {
  RedisProbe,
  adminServerFor,
  isOutOfMemory,
  closeRedis,
  countUnfinishedRetries,
  createRedis,
  ensureGroup,
  readGroup,
  secretMatcher,
  ServerTls,
  type AdminServer,
  type Logger,
} from '@mirrorplane/runtime';
import { createProductionIntake } from './production-intake.js';
import { DEFAULT_MAX_BULK_BYTES, EntryAppender, INGRESS_TOKEN_HEADER } from './entry-appender.js';
import { IngressMetrics, type DropReason } from './ingress-metrics.js';
import { IntakeServer, type IntakeLoss } from './intake-server.js';
import { H2Intake, type H2Loss, type H2Request } from './h2-intake.js';
import type { ParsedRequest, Refusal } from './http1-parser.js';

export { INGRESS_TOKEN_HEADER, type DropReason };

/** How often the ingress learns the backlog from Redis when a cap is set. */
const BACKLOG_CHECK_MS = 100;

/** How long `listen` waits for the first Redis connection before it takes traffic anyway. */
const REDIS_START_WAIT_MS = 10_000;

/** How often an ingress that saw Redis full reads INFO memory to learn it has room again (ms). */
const FULL_CHECK_MS = 1000;

/**
 * The ingress: answers every mirrored request once Redis accepted it as a stream entry.
 * Its answer never depends on staging or workers. The hot path is one pipelined XADD.
 * Reading (`IntakeServer`, `RequestParser`), appending (`EntryAppender`) and metrics
 * (`IngressMetrics`) are their own units; this class decides: refuse, shed, or append.
 */
export class Ingress {
  readonly #config: Config;
  readonly #logger: Logger;
  readonly #redis: Redis;
  readonly #stream: string;
  /** Every partition's stream. */
  readonly #streams: string[];
  readonly #server: IntakeServer;
  readonly #h2: H2Intake;
  /** TLS of the traffic port (INGRESS_TLS_*), or null in clear text. */
  readonly #tls: ServerTls | null;
  readonly #appender: EntryAppender;
  readonly #admin: AdminServer | null;
  readonly #metrics: IngressMetrics;
  #inFlight = 0;
  #closing = false;
  readonly #token: ((presented: string | undefined) => boolean) | null;
  /** Unfinished entries at the last check, plus those this process appended since. */
  #backlog = 0;
  #appendedSinceCheck = 0;
  #shedding = false;
  #backlogTimer: NodeJS.Timeout | null = null;
  /** A backlog check is under way: a slow Redis must not pile up checks. */
  #checking = false;
  /** Whether Redis answers at all (a paused Redis keeps its connection open). */
  readonly #probe: RedisProbe;
  /** Redis refused the last append for want of memory (see `#setFull`). */
  #full = false;
  #fullTimer: NodeJS.Timeout | null = null;
  #idle: (() => void) | null = null;

  constructor(config: Config, logger: Logger) {
    this.#config = config;
    this.#logger = logger;
    this.#stream = keysFor(config.prefix).stream;
    this.#streams = partitionKeys(config.prefix, config.partitions).map((k) => k.stream);
    this.#redis = createRedis(config, 'append', logger);
    // A Redis that has not answered a PING for APPEND_TIMEOUT_MS is as good as down: the same
    // deadline an append has.
    this.#probe = new RedisProbe(this.#redis, config.appendTimeoutMs, logger, this.#streams);
    this.#token = config.ingressToken === null ? null : secretMatcher(config.ingressToken);
    this.#metrics = new IngressMetrics(() => this.#inFlight);
    // Read now: a missing or unusable file fails the start with the setting's name.
    this.#tls = config.ingressTls === null ? null : new ServerTls(config.ingressTls, logger);
    if (this.#tls) this.#tls.onRefused = (reason) => this.#metrics.tlsRefused[reason].inc();
    this.#appender = new EntryAppender(config, this.#redis);
    this.#h2 = new H2Intake(
      {
        maxHeaderBytes: config.maxHeaderBytes,
        maxBodyBytes: config.maxBodyBytes,
        maxConcurrentStreams: config.maxConcurrentStreams,
        requestTimeoutMs: config.bodyTimeoutMs,
        keepAliveTimeoutMs: 75_000,
      },
      {
        admit: (rawHeaders) => this.#onHead(rawHeaders),
        request: (request, address, answer) => this.#append(request, address, answer, 'HTTP/2'),
        lost: (reason, afterAdmit) => this.#onLost(reason, afterAdmit, null),
      },
    );
    this.#server = new IntakeServer(
      {
        maxHeaderBytes: config.maxHeaderBytes,
        maxBodyBytes: config.maxBodyBytes,
        requestTimeoutMs: config.bodyTimeoutMs,
        headersTimeoutMs: config.headersTimeoutMs,
        maxConnections: config.maxConnections,
        // Longer than the mirror proxy's idle timeout, so the proxy closes idle connections first.
        keepAliveTimeoutMs: 75_000,
        http2: (socket) => this.#h2.accept(socket),
      },
      {
        head: (head) => this.#onHead(head.rawHeaders),
        request: (request, address, answer) => this.#append(request, address, answer),
        lost: (reason, afterHead, refusal) => this.#onLost(reason, afterHead, refusal),
      },
    );
    this.#admin = adminServerFor(config, {
      ready: () => this.ready,
      metrics: this.#metrics.registry,
      logger,
      routes: { 'POST /production-responses': createProductionIntake(config, this.#redis, logger, this.#metrics.registry) },
    });
  }

  /**
   * True when the ingress can accept traffic: listening, not closing, Redis connected and
   * answering (a PING answered within APPEND_TIMEOUT_MS; see `RedisProbe`).
   */
  get ready(): boolean {
    return !this.#closing && this.#server.listening && this.#redis.status === 'ready' && this.#probe.responsive && !this.#full;
  }

  /**
   * Redis full (maxmemory, noeviction): the last append was refused with OOM. Not ready until
   * an append succeeds or Redis reports `used_memory` below `maxmemory` (INFO memory, read
   * every FULL_CHECK_MS while full: a load balancer that follows /readyz sends no traffic, so
   * an append cannot be what clears it). Appends are still tried meanwhile.
   */
  #setFull(full: boolean): void {
    if (full === this.#full) return;
    this.#full = full;
    if (full) {
      this.#logger.warn('Redis is full (maxmemory): not ready until an append succeeds or memory is under maxmemory');
      this.#fullTimer = setInterval(() => void this.#checkFull(), FULL_CHECK_MS).unref();
    } else {
      this.#logger.info('Redis takes entries again: ready');
      if (this.#fullTimer) clearInterval(this.#fullTimer);
      this.#fullTimer = null;
    }
  }

  async #checkFull(): Promise<void> {
    if (this.#redis.status !== 'ready' || !this.#probe.responsive) return;
    try {
      const memory = await this.#redis.info('memory');
      const used = Number(/used_memory:(\d+)/.exec(memory)?.[1] ?? 0);
      const max = Number(/maxmemory:(\d+)/.exec(memory)?.[1] ?? 0);
      if (max === 0 || used < max) this.#setFull(false);
    } catch {
      // Unknown: stays as it is; the next check or append decides.
    }
  }

  get metrics(): Registry {
    return this.#metrics.registry;
  }

  /** Starts both ports; resolves with the bound ports (useful with port 0). */
  async listen(): Promise<{ port: number; adminPort: number | null }> {
    // The group is created from the start of the stream, so entries appended before the
    // first worker starts are not skipped. Redis may be down at start: the ingress still
    // listens and answers 503 until it is back, and the worker creates the group too.
    const createGroup = () => {
      Promise.all(this.#streams.map((stream) => ensureGroup(this.#redis, stream, keysFor(this.#config.prefix).group))).catch((error: unknown) => {
        this.#logger.warn({ err: errorMessage(error) }, 'could not create the consumer group; the worker will');
      });
    };
    if (this.#redis.status === 'ready') createGroup();
    else this.#redis.once('ready', createGroup);
    this.#redis.on('ready', () => void this.#readRedisLimits());
    // Taking traffic before Redis is connected would only answer 503: give the connection a
    // bounded moment first (Redis down at start still ends in listening and answering 503).
    if (this.#redis.status !== 'ready') {
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([
        new Promise((resolve) => this.#redis.once('ready', resolve)),
        new Promise((resolve) => {
          timer = setTimeout(resolve, REDIS_START_WAIT_MS);
        }),
      ]);
      clearTimeout(timer);
    }
    // Known before the first request when Redis is up (bounded: a Redis that does not answer leaves the defaults).
    if (this.#redis.status === 'ready') {
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([this.#readRedisLimits(), new Promise((resolve) => (timer = setTimeout(resolve, REDIS_START_WAIT_MS)))]);
      clearTimeout(timer);
    }
    const port = await this.#server.listen(this.#config.ingressPort, this.#config.ingressHost, this.#tls);
    const adminPort = this.#admin ? await this.#admin.listen() : null;
    this.#probe.start();
    if (this.#config.maxBacklog > 0 || this.#config.maxBacklogBytes > 0) {
      this.#backlogTimer = setInterval(() => void this.#checkBacklog(), BACKLOG_CHECK_MS).unref();
    }
    this.#logger.info({ port, adminPort, stream: this.#stream, tls: this.#tls?.summary ?? false }, 'ingress listening');
    return { port, adminPort };
  }

  /** A head (HTTP/2: a stream's headers) arrived: refuse it at once (closing, unauthorized, shedding), or read its body. */
  #onHead(rawHeaders: readonly string[]): readonly [number, DropReason] | null {
    this.#metrics.received.inc();
    let refused: readonly [number, DropReason] | null = null;
    if (this.#closing) refused = [503, 'shutting_down'];
    else if (this.#token !== null && !this.#token(headerValue(rawHeaders, INGRESS_TOKEN_HEADER) ?? undefined)) refused = [401, 'unauthorized'];
    else if (this.#shedding) refused = [503, 'backlog_full'];
    // Redis is known not to answer: every append would wait APPEND_TIMEOUT_MS for the same
    // 503, holding the request (and its body) meanwhile. Answer at once until a PING answers.
    else if (!this.#probe.responsive) refused = [503, 'redis_timeout'];
    if (refused !== null) {
      this.#metrics.dropped[refused[1]].inc();
      return refused;
    }
    this.#inFlight += 1;
    return null;
  }

  /** A request lost before it was whole: counted once, by reason. */
  #onLost(reason: IntakeLoss | H2Loss, afterHead: boolean, refusal: Refusal | null): void {
    if (!afterHead) this.#metrics.received.inc();
    this.#metrics.dropped[reason].inc();
    if (afterHead) this.#release();
    if (refusal !== null) this.#logRefused(refusal);
  }

  #append(
    request: ParsedRequest | H2Request,
    clientAddress: string | undefined,
    answer: (status: number, reason?: string) => void,
    protocol?: HttpProtocol,
  ): void {
    const started = performance.now();
    const sent = this.#appender.append(
      request,
      clientAddress,
      (error) => (error === null ? this.#stored(request.body.length, started, answer) : this.#notStored(error, answer)),
      protocol,
    );
    if (!sent) {
      // Redis would refuse the entry by closing the connection every append shares: refused
      // here, on its own (MAX_BODY_BYTES above the Redis server's proto-max-bulk-len).
      this.#metrics.dropped.over_redis_limit.inc();
      answer(413, 'over_redis_limit');
      this.#logOverLimit(request.body.length);
      this.#release();
    }
  }

  /** Redis has the entry: 200. */
  #stored(bodyBytes: number, started: number, answer: (status: number, reason?: string) => void): void {
    if (this.#config.maxBacklog > 0 && this.#backlog + ++this.#appendedSinceCheck >= this.#config.maxBacklog) this.#shedding = true;
    this.#metrics.appendSeconds.observe((performance.now() - started) / 1000);
    this.#metrics.accepted.inc();
    this.#metrics.acceptedBytes.inc(bodyBytes);
    // While shutting down, each connection closes after its answer.
    if (this.#closing) this.#server.draining = true;
    answer(200);
    this.#setFull(false);
    this.#release();
  }

  /** Redis refused the entry, is away, or did not answer within APPEND_TIMEOUT_MS: 503 with the reason. */
  #notStored(error: Error, answer: (status: number, reason?: string) => void): void {
    const reason: DropReason = /timed out/i.test(error.message) ? 'redis_timeout' : this.#redis.status !== 'ready' ? 'redis_unavailable' : 'redis_error';
    if (reason === 'redis_timeout') this.#probe.markUnresponsive('an append timed out');
    if (isOutOfMemory(error)) this.#setFull(true);
    this.#metrics.dropped[reason].inc();
    answer(503, reason);
    this.#logDropped(reason, error);
    this.#release();
  }

  #lastOverLimitLog = 0;
  #logOverLimit(bodyBytes: number): void {
    const now = Date.now();
    if (now - this.#lastOverLimitLog < 1000) return;
    this.#lastOverLimitLog = now;
    this.#logger.warn(
      { bodyBytes, maxBodyBytes: this.#config.maxBodyBytes },
      "answering 413: the entry holds a value over Redis's proto-max-bulk-len; lower MAX_BODY_BYTES or raise Redis's limit",
    );
  }

  /**
   * Reads the largest value the Redis server takes, `proto-max-bulk-len` (on each connection:
   * a failover may reach a Redis set otherwise). A Redis that refuses CONFIG (managed
   * services, a renamed command) leaves Redis's default, 512 MiB.
   */
  async #readRedisLimits(): Promise<void> {
    let maxBulk = DEFAULT_MAX_BULK_BYTES;
    try {
      const reply = (await this.#redis.config('GET', 'proto-max-bulk-len')) as unknown as string[];
      const value = Number(reply?.[1]);
      if (Number.isSafeInteger(value) && value > 0) maxBulk = value;
    } catch {
      // CONFIG refused: the default stands.
    }
    this.#appender.setRedisLimits(maxBulk);
    if (maxBulk < this.#config.maxBodyBytes) {
      this.#logger.warn(
        { protoMaxBulkLen: maxBulk, maxBodyBytes: this.#config.maxBodyBytes },
        'Redis takes values smaller than MAX_BODY_BYTES: larger bodies are answered 413 over_redis_limit',
      );
    }
  }

  #lastDropLog = 0;
  #logDropped(reason: DropReason, error: Error): void {
    // One line a second at most: an outage must not flood the logs.
    const now = Date.now();
    if (now - this.#lastDropLog < 1000) return;
    this.#lastDropLog = now;
    this.#logger.warn(
      { reason, err: errorMessage(error) },
      reason === 'redis_timeout'
        ? 'answering 503: redis did not answer in time; the entry may still be stored'
        : 'answering 503: redis did not accept the entry',
    );
  }

  #lastRefusalLog = 0;
  #logRefused(refusal: Refusal): void {
    // Refusals are counted; a line a second at most says what the last kind was.
    const now = Date.now();
    if (now - this.#lastRefusalLog < 1000) return;
    this.#lastRefusalLog = now;
    this.#logger.info({ status: refusal.status, reason: refusal.reason, detail: refusal.detail }, 'refused a request at intake');
  }

  /**
   * Entries of one stream not yet finished. Without retention, finished entries are deleted
   * and the stream's length is exact (and cheapest). With STREAM_RETENTION the stream also
   * keeps finished entries, so the group's lag (not yet delivered) plus its pending count is
   * what the cap is about.
   */
  async #unfinished(stream: string): Promise<number> {
    if (this.#config.streamRetention === null) return this.#redis.xlen(stream);
    const group = await readGroup(this.#redis, stream, keysFor(this.#config.prefix).group).catch(() => null);
    if (group?.lag != null) return group.lag + group.pending;
    // No group yet (or a Redis without lag): fall back to the length, an upper bound.
    return this.#redis.xlen(stream);
  }

  /**
   * Learns the backlog from Redis (XLEN of each partition, and INFO memory when a byte cap is set) and
   * decides whether to shed. Runs on a timer, never per request; between two checks the
   * entries this process appended are counted locally, so the cap holds for a single ingress.
   */
  async #checkBacklog(): Promise<void> {
    if (this.#redis.status !== 'ready' || !this.#probe.responsive || this.#checking) return;
    this.#checking = true;
    try {
      const [length, memory] = await Promise.all([
        // Everything unfinished: every partition's stream (its entries not yet delivered and
        // those pending), plus the retry queue's unfinished jobs, which hold the entries
        // handed over for a retry or waiting for an ID mapping. Without the retry queue a
        // staging outage would move the whole load out of the stream and past the cap.
        this.#config.maxBacklog > 0
          ? Promise.all([...this.#streams.map((stream) => this.#unfinished(stream)), countUnfinishedRetries(this.#redis, keysFor(this.#config.prefix))]).then(
              (counts) => counts.reduce((a, b) => a + b, 0),
            )
          : Promise.resolve(0),
        this.#config.maxBacklogBytes > 0 ? this.#redis.info('memory') : Promise.resolve(''),
      ]);
      this.#backlog = length;
      this.#appendedSinceCheck = 0;
      const used = this.#config.maxBacklogBytes > 0 ? Number(/used_memory:(\d+)/.exec(memory)?.[1] ?? 0) : 0;
      const shedding =
        (this.#config.maxBacklog > 0 && length >= this.#config.maxBacklog) || (this.#config.maxBacklogBytes > 0 && used >= this.#config.maxBacklogBytes);
      if (shedding !== this.#shedding) {
        this.#logger.warn(
          { backlog: length, usedMemory: used || undefined, shedding },
          shedding ? 'backlog over its cap: answering 503 backlog_full' : 'backlog under its cap again: accepting',
        );
      }
      this.#shedding = shedding;
    } catch {
      // Redis is away: appends fail with their own 503 reasons; the last verdict stands.
    } finally {
      this.#checking = false;
    }
  }

  #release(): void {
    this.#inFlight -= 1;
    if (this.#inFlight === 0 && this.#idle) this.#idle();
  }

  /**
   * Stops accepting, lets in-flight appends finish (up to `shutdownTimeoutMs`), then closes
   * Redis and the admin port. Every step runs even when one fails.
   */
  async close(): Promise<void> {
    if (this.#closing) return;
    this.#closing = true;
    if (this.#backlogTimer) clearInterval(this.#backlogTimer);
    this.#probe.stop();
    if (this.#fullTimer) clearInterval(this.#fullTimer);
    this.#logger.info({ inFlight: this.#inFlight }, 'ingress shutting down');
    const serverClosed = this.#server.close();
    // HTTP/2 connections get GOAWAY: their open streams are answered, no new one starts.
    this.#h2.closeGracefully();
    let closed = false;
    void serverClosed.then(() => {
      closed = true;
    });
    const deadline = Date.now() + this.#config.shutdownTimeoutMs;
    if (this.#inFlight > 0) {
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([
        new Promise<void>((resolve) => {
          this.#idle = resolve;
        }),
        new Promise<void>((resolve) => {
          timer = setTimeout(resolve, this.#config.shutdownTimeoutMs);
        }),
      ]);
      clearTimeout(timer);
    }
    // Answers already written may still be on their way out; their connections close (or turn
    // idle) once flushed. Only what is left at the deadline is cut.
    while (!closed && Date.now() < deadline) {
      this.#server.closeIdleConnections();
      await Promise.race([serverClosed, new Promise((r) => setTimeout(r, 25))]);
    }
    this.#server.closeAllConnections();
    this.#h2.closeAll();
    await serverClosed;
    await closeRedis(this.#redis).catch(() => undefined);
    this.#appender.close();
    await this.#admin?.close().catch(() => undefined);
    this.#logger.info({ unfinished: this.#inFlight }, 'ingress stopped');
  }
}

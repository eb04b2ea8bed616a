import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import type { Redis } from 'ioredis';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import { createPartitioner, EntryCipher, errorMessage, keysFor, partitionKeys, pushEntryFields, withoutHeaders, type Config } from '@mirrorplane/core';
import { type AdminServer, adminServerFor, closeRedis, createRedis, ensureGroup, readGroup, secretMatcher, type Logger } from '@mirrorplane/runtime';
import { createProductionIntake } from './production-intake.js';

/** Why the ingress did not accept a request; the `reason` label of the dropped counter. */
export type DropReason = 'too_large' | 'redis_unavailable' | 'redis_timeout' | 'redis_error' | 'bad_request' | 'headers_too_large' | 'body_timeout' | 'aborted' | 'shutting_down' | 'unauthorized' | 'backlog_full';

/** The header carrying INGRESS_TOKEN; removed before the entry is stored. */
export const INGRESS_TOKEN_HEADER = 'x-mirrorplane-token';

/** How often the ingress learns the backlog from Redis when a cap is set. */
const BACKLOG_CHECK_MS = 100;

const TOKEN_HEADERS: ReadonlySet<string> = new Set([INGRESS_TOKEN_HEADER]);

/** How long `listen` waits for the first Redis connection before it takes traffic anyway. */
const REDIS_START_WAIT_MS = 10_000;

const ACK_HEADERS = { 'content-length': '0' };

/**
 * The ingress: answers every mirrored request once Redis accepted it as a stream entry.
 * Its answer never depends on staging or workers. The hot path is one pipelined XADD.
 */
export class Ingress {
  readonly #config: Config;
  readonly #logger: Logger;
  readonly #redis: Redis;
  readonly #stream: string;
  /** Every partition's stream, and what picks one for a request (null: one partition). */
  readonly #streams: string[];
  readonly #partitionOf: ((headers: IncomingMessage['headers']) => number) | null;
  readonly #server: Server;
  readonly #admin: AdminServer | null;
  readonly #registry = new Registry();
  readonly #received: Counter.Internal;
  readonly #accepted: Counter.Internal;
  readonly #acceptedBytes: Counter.Internal;
  readonly #dropped: Record<DropReason, Counter.Internal>;
  readonly #appendSeconds: Histogram.Internal<string>;
  #inFlight = 0;
  #closing = false;
  readonly #token: ((presented: string | undefined) => boolean) | null;
  readonly #cipher: EntryCipher | null;
  /** Sockets whose error was already counted by clientError (their request's close must not count again). */
  readonly #clientErrored = new WeakSet<Socket>();
  /** Unfinished entries at the last check, plus those this process appended since. */
  #backlog = 0;
  #appendedSinceCheck = 0;
  #shedding = false;
  #backlogTimer: NodeJS.Timeout | null = null;
  #idle: (() => void) | null = null;
  /** The Redis socket held corked until the end of this event-loop turn, if any. */
  #corked: Socket | null = null;
  readonly #uncork = (): void => {
    const socket = this.#corked;
    this.#corked = null;
    socket?.uncork();
  };

  constructor(config: Config, logger: Logger) {
    this.#config = config;
    this.#logger = logger;
    this.#stream = keysFor(config.prefix).stream;
    this.#streams = partitionKeys(config.prefix, config.partitions).map((k) => k.stream);
    this.#partitionOf = config.partitions === 1 ? null : createPartitioner(config.partitions, config.partitionKey);
    this.#redis = createRedis(config, 'append', logger);
    this.#token = config.ingressToken === null ? null : secretMatcher(config.ingressToken);
    this.#cipher = EntryCipher.fromSpec(config.dataKey);

    collectDefaultMetrics({ register: this.#registry, prefix: 'mirrorplane_ingress_' });
    const received = new Counter({ name: 'mirrorplane_ingress_requests_received_total', help: 'Requests received (accepted + dropped + in flight)', registers: [this.#registry] });
    const accepted = new Counter({ name: 'mirrorplane_ingress_requests_accepted_total', help: 'Requests appended to the stream and answered 200', registers: [this.#registry] });
    const bytes = new Counter({ name: 'mirrorplane_ingress_accepted_bytes_total', help: 'Body bytes of accepted requests', registers: [this.#registry] });
    const dropped = new Counter({ name: 'mirrorplane_ingress_requests_dropped_total', help: 'Requests not accepted, by reason', labelNames: ['reason'], registers: [this.#registry] });
    const append = new Histogram({
      name: 'mirrorplane_ingress_append_seconds',
      help: 'Time from the end of the request body to Redis accepting the entry',
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 2.5],
      registers: [this.#registry],
    });
    const inFlight = () => this.#inFlight;
    new Gauge({
      name: 'mirrorplane_ingress_in_flight',
      help: 'Requests being read or appended',
      registers: [this.#registry],
      collect() {
        this.set(inFlight());
      },
    });
    // Label children are bound once: looking them up per request is measurably slower.
    this.#received = received.labels();
    this.#accepted = accepted.labels();
    this.#acceptedBytes = bytes.labels();
    this.#appendSeconds = append.labels();
    const reasons: DropReason[] = ['too_large', 'redis_unavailable', 'redis_timeout', 'redis_error', 'bad_request', 'headers_too_large', 'body_timeout', 'aborted', 'shutting_down', 'unauthorized', 'backlog_full'];
    this.#dropped = Object.fromEntries(reasons.map((r) => [r, dropped.labels(r)])) as Record<DropReason, Counter.Internal>;
    // Every reason is exported from the start, so rate() sees the first drop of a kind.
    for (const child of Object.values(this.#dropped)) child.inc(0);

    this.#server = createServer(
      {
        keepAlive: true,
        // Longer than the mirror proxy's idle timeout, so the proxy closes idle connections first.
        keepAliveTimeout: 75_000,
        requestTimeout: config.bodyTimeoutMs,
        // node checks these timeouts on this interval (30 s by default), so a slow body would
        // otherwise hold its connection for up to BODY_TIMEOUT_MS + 30 s.
        connectionsCheckingInterval: Math.min(1000, config.bodyTimeoutMs),
        headersTimeout: Math.min(config.bodyTimeoutMs, 60_000),
        noDelay: true,
      },
      (req, res) => this.#onRequest(req, res),
    );
    this.#server.on('clientError', (error: NodeJS.ErrnoException, socket: Socket) => this.#onClientError(error, socket));
    this.#admin = adminServerFor(config, {
      ready: () => this.ready,
      metrics: this.#registry,
      logger,
      routes: { 'POST /production-responses': createProductionIntake(config, this.#redis, logger, this.#registry) },
    });
  }

  /** True when the ingress can accept traffic: listening, Redis connected, not closing. */
  get ready(): boolean {
    return !this.#closing && this.#server.listening && this.#redis.status === 'ready';
  }

  get metrics(): Registry {
    return this.#registry;
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
    // Taking traffic before Redis is connected would only answer 503: give the connection a
    // bounded moment first (Redis down at start still ends in listening and answering 503).
    if (this.#redis.status !== 'ready') {
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([
        new Promise((resolve) => this.#redis.once('ready', resolve)),
        new Promise((resolve) => { timer = setTimeout(resolve, REDIS_START_WAIT_MS); }),
      ]);
      clearTimeout(timer);
    }
    await new Promise<void>((resolve, reject) => {
      this.#server.once('error', reject);
      this.#server.listen(this.#config.ingressPort, this.#config.ingressHost, () => {
        this.#server.off('error', reject);
        resolve();
      });
    });
    const port = (this.#server.address() as AddressInfo).port;
    const adminPort = this.#admin ? await this.#admin.listen() : null;
    if (this.#config.maxBacklog > 0 || this.#config.maxBacklogBytes > 0) {
      this.#backlogTimer = setInterval(() => void this.#checkBacklog(), BACKLOG_CHECK_MS).unref();
    }
    this.#logger.info({ port, adminPort, stream: this.#stream }, 'ingress listening');
    return { port, adminPort };
  }

  #onRequest(req: IncomingMessage, res: ServerResponse): void {
    this.#received.inc();
    if (this.#closing) {
      this.#drop(res, 503, 'shutting_down');
      return;
    }
    if (this.#token !== null && !this.#token(req.headers[INGRESS_TOKEN_HEADER] as string | undefined)) {
      this.#drop(res, 401, 'unauthorized');
      return;
    }
    if (this.#shedding) {
      this.#drop(res, 503, 'backlog_full');
      return;
    }
    const max = this.#config.maxBodyBytes;
    const declared = req.headers['content-length'];
    if (declared !== undefined && Number(declared) > max) {
      this.#drop(res, 413, 'too_large');
      return;
    }
    this.#inFlight += 1;
    const chunks: Buffer[] = [];
    let size = 0;
    let done = false;
    req.on('data', (chunk: Buffer) => {
      if (done) return;
      size += chunk.length;
      if (size > max) {
        done = true;
        this.#drop(res, 413, 'too_large');
        this.#release();
        return;
      }
      chunks.push(chunk);
    });
    req.on('end', () => {
      if (done) return;
      done = true;
      const body = chunks.length === 1 ? (chunks[0] as Buffer) : Buffer.concat(chunks, size);
      this.#append(req, res, body);
    });
    req.on('error', () => {
      if (done) return;
      done = true;
      // Counted by clientError already when that is why the request was cut (a body timeout).
      if (!this.#clientErrored.has(req.socket)) this.#dropped.aborted.inc();
      this.#release();
    });
    req.on('close', () => {
      // The client went away before the body ended (or the body timeout fired).
      if (done) return;
      done = true;
      // A body timeout is a clientError too, counted there; counting it here again would double it.
      if (this.#clientErrored.has(req.socket)) {
        this.#release();
        return;
      }
      this.#dropped[req.socket.destroyed && !req.complete && req.readableAborted ? 'aborted' : 'body_timeout'].inc();
      this.#release();
    });
  }

  #append(req: IncomingMessage, res: ServerResponse, body: Buffer): void {
    const started = performance.now();
    const requestId = req.headers['x-request-id'];
    const stream = this.#partitionOf === null ? this.#stream : this.#streams[this.#partitionOf(req.headers)] as string;
    const args = pushEntryFields(
      [stream, '*'],
      req.method as string,
      req.url as string,
      this.#token === null ? req.rawHeaders : withoutHeaders(req.rawHeaders, TOKEN_HEADERS),
      body,
      Date.now(),
      typeof requestId === 'string' ? requestId : null,
      req.socket.remoteAddress,
    );
    const fields = this.#cipher === null ? args : [stream, '*', ...this.#cipher.sealFields(args.slice(2))];
    this.#batchWrites();
    (this.#redis.xadd as (...a: (string | Buffer)[]) => Promise<string | null>)(...fields).then(
      () => {
        if (this.#config.maxBacklog > 0 && this.#backlog + ++this.#appendedSinceCheck >= this.#config.maxBacklog) this.#shedding = true;
        this.#appendSeconds.observe((performance.now() - started) / 1000);
        this.#accepted.inc();
        this.#acceptedBytes.inc(body.length);
        // While shutting down, close each connection after its answer.
        if (this.#closing) res.shouldKeepAlive = false;
        res.writeHead(200, ACK_HEADERS).end();
        this.#release();
      },
      (error: Error) => {
        const reason: DropReason = /timed out/i.test(error.message)
          ? 'redis_timeout'
          : this.#redis.status !== 'ready' ? 'redis_unavailable' : 'redis_error';
        this.#drop(res, 503, reason);
        this.#logDropped(reason, error);
        this.#release();
      },
    );
  }

  /**
   * Holds the Redis socket's writes until the end of this event-loop turn. Each request
   * arrives in its own socket callback, so a per-tick batch holds a single XADD; corked
   * until `setImmediate`, every append of the turn leaves in one write: one syscall, and one
   * read for Redis, for all the requests that arrived together.
   */
  #batchWrites(): void {
    if (this.#corked !== null) return;
    const socket = (this.#redis as { stream?: Socket }).stream;
    if (socket === undefined || typeof socket.cork !== 'function') return;
    socket.cork();
    this.#corked = socket;
    setImmediate(this.#uncork);
  }

  #lastDropLog = 0;
  #logDropped(reason: DropReason, error: Error): void {
    // One line a second at most: an outage must not flood the logs.
    const now = Date.now();
    if (now - this.#lastDropLog < 1000) return;
    this.#lastDropLog = now;
    this.#logger.warn({ reason, err: errorMessage(error) }, 'answering 503: redis did not accept the entry');
  }

  #drop(res: ServerResponse, status: number, reason: DropReason): void {
    this.#dropped[reason].inc();
    if (res.headersSent) return;
    if (status === 413 || status === 503 || status === 401) {
      // Unread body bytes would be taken as the next request: close the connection.
      res.shouldKeepAlive = false;
    }
    res.writeHead(status, { 'content-type': 'text/plain', 'x-mirrorplane-drop': reason });
    res.end(`${reason}\n`);
  }

  #onClientError(error: NodeJS.ErrnoException, socket: Socket): void {
    if (this.#clientErrored.has(socket)) {
      // The aftermath of an error already answered and counted (the client closing mid-body
      // after our 408 is a parse error too): one bad request, one count.
      socket.destroy();
      return;
    }
    const timeout = error.code === 'ERR_HTTP_REQUEST_TIMEOUT';
    this.#received.inc();
    const overflow = error.code === 'HPE_HEADER_OVERFLOW';
    this.#dropped[timeout ? 'body_timeout' : overflow ? 'headers_too_large' : 'bad_request'].inc();
    this.#clientErrored.add(socket);
    if (!socket.writable || (error.code === 'ECONNRESET')) {
      socket.destroy();
      return;
    }
    const status = timeout ? '408 Request Timeout' : overflow ? '431 Request Header Fields Too Large' : '400 Bad Request';
    socket.end(`HTTP/1.1 ${status}\r\nconnection: close\r\ncontent-length: 0\r\n\r\n`);
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
    if (this.#redis.status !== 'ready') return;
    try {
      const [length, memory] = await Promise.all([
        // Every partition's stream: the cap is on the deployment's backlog, not one stream's.
        this.#config.maxBacklog > 0 ? Promise.all(this.#streams.map((stream) => this.#unfinished(stream))).then((lengths) => lengths.reduce((a, b) => a + b, 0)) : Promise.resolve(0),
        this.#config.maxBacklogBytes > 0 ? this.#redis.info('memory') : Promise.resolve(''),
      ]);
      this.#backlog = length;
      this.#appendedSinceCheck = 0;
      const used = this.#config.maxBacklogBytes > 0 ? Number(/used_memory:(\d+)/.exec(memory)?.[1] ?? 0) : 0;
      const shedding = (this.#config.maxBacklog > 0 && length >= this.#config.maxBacklog) || (this.#config.maxBacklogBytes > 0 && used >= this.#config.maxBacklogBytes);
      if (shedding !== this.#shedding) {
        this.#logger.warn({ backlog: length, usedMemory: used || undefined, shedding }, shedding ? 'backlog over its cap: answering 503 backlog_full' : 'backlog under its cap again: accepting');
      }
      this.#shedding = shedding;
    } catch {
      // Redis is away: appends fail with their own 503 reasons; the last verdict stands.
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
    this.#logger.info({ inFlight: this.#inFlight }, 'ingress shutting down');
    let closed = false;
    const serverClosed = new Promise<void>((resolve) => this.#server.close(() => { closed = true; resolve(); }));
    this.#server.closeIdleConnections();
    const deadline = Date.now() + this.#config.shutdownTimeoutMs;
    if (this.#inFlight > 0) {
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([
        new Promise<void>((resolve) => { this.#idle = resolve; }),
        new Promise<void>((resolve) => { timer = setTimeout(resolve, this.#config.shutdownTimeoutMs); }),
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
    await serverClosed;
    await closeRedis(this.#redis).catch(() => undefined);
    await this.#admin?.close().catch(() => undefined);
    this.#logger.info({ unfinished: this.#inFlight }, 'ingress stopped');
  }
}

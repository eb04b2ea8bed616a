import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Queue } from 'bullmq';
import { createBullBoard } from '@bull-board/api';
import { BullMQAdapter } from '@bull-board/api/bullMQAdapter';
import { ExpressAdapter } from '@bull-board/express';
import { errorMessage, keysFor, partitionKeys, type Config } from '@mirrorplane/core';
import { closeRedis, createRedis, maskRedisUrl, readDeploymentStatus, type Logger, type RetryJobData } from '@mirrorplane/runtime';
import { RateWindow, type StatusFrame } from './status-watch.js';
import { DASHBOARD_PAGE } from './dashboard-page.js';

export interface DashboardOptions {
  config: Config;
  logger: Logger;
  /** Address to bind; loopback unless the operator says otherwise. */
  host: string;
  port: number;
}

/** Where bull-board is mounted. */
const QUEUES_PATH = '/queues';
const LOOPBACK = new Set(['127.0.0.1', 'localhost', '::1', '[::1]']);

/**
 * `mirrorplane dashboard`: bull-board for the retry queue and the failed set (inspect, retry,
 * remove) under /queues, next to a page of our own at / (stream backlog, consumer group
 * members and their pending counts, rates) fed by /api/status.
 *
 * The dashboard can retry and remove jobs, so it binds loopback by default and answers only
 * requests whose Host names the address it was asked to bind (no DNS rebinding from a page
 * on another site).
 */
export class Dashboard {
  readonly #o: DashboardOptions;
  readonly #redis;
  readonly #bull;
  readonly #queue: Queue<RetryJobData>;
  readonly #server: Server;
  readonly #board: (req: IncomingMessage, res: ServerResponse, next: (error?: unknown) => void) => void;
  readonly #window = new RateWindow();
  #frame: StatusFrame | { error: string; stale?: true; lastGoodAt?: string | null } = { error: 'not read yet' };
  /** The reading under way; a new one starts only when it settles (reads wait for Redis, never pile up). */
  #inflight: Promise<void> | null = null;
  #lastGoodAt: string | null = null;
  #timer: NodeJS.Timeout | null = null;
  #reading: Promise<void> | null = null;
  #port = 0;

  constructor(options: DashboardOptions) {
    this.#o = options;
    const keys = keysFor(options.config.prefix);
    // Long-lived connections that wait for Redis to come back, like a worker's.
    this.#redis = createRedis(options.config, 'commands', options.logger);
    this.#bull = createRedis(options.config, 'bullmq', options.logger);
    this.#queue = new Queue<RetryJobData>(keys.retryQueue, { connection: this.#bull, prefix: keys.bullPrefix });
    this.#queue.on('error', (error) => options.logger.warn({ err: errorMessage(error) }, 'retry queue error'));

    const adapter = new ExpressAdapter();
    adapter.setBasePath(QUEUES_PATH);
    createBullBoard({
      queues: [new BullMQAdapter(this.#queue, { displayName: `retry queue and failed set (${options.config.prefix})`, allowRetries: true })],
      serverAdapter: adapter,
      options: { uiConfig: { boardTitle: 'Mirrorplane' } },
    });
    this.#board = adapter.getRouter();
    this.#server = createServer((req, res) => this.#handle(req, res));
  }

  get url(): string {
    const host = this.#o.host.includes(':') ? `[${this.#o.host}]` : this.#o.host;
    return `http://${host}:${this.#port}/`;
  }

  async listen(): Promise<string> {
    await new Promise<void>((resolve, reject) => {
      this.#server.once('error', reject);
      this.#server.listen(this.#o.port, this.#o.host, () => {
        this.#server.off('error', reject);
        resolve();
      });
    });
    this.#port = (this.#server.address() as AddressInfo).port;
    // The first reading is there before anyone is told the dashboard is up.
    await this.#read();
    const tick = () => {
      this.#reading ??= this.#read().finally(() => { this.#reading = null; });
    };
    tick();
    this.#timer = setInterval(tick, 1000);
    return this.url;
  }

  /**
   * Reads the status; a reading that fails or takes longer than REDIS_CONNECT_TIMEOUT_MS
   * (the connection waits for Redis to come back) turns the figures stale: /api/status
   * answers 503 with the cause and the time of the last good reading, and the page shows it
   * above the old figures, until a reading succeeds again.
   */
  async #read(): Promise<void> {
    const stale = (cause: string) => {
      this.#frame = { error: `${cause}; the figures shown are from ${this.#lastGoodAt ?? 'no reading yet'}`, stale: true, lastGoodAt: this.#lastGoodAt };
    };
    this.#inflight ??= readDeploymentStatus(this.#redis, this.#queue, partitionKeys(this.#o.config.prefix, this.#o.config.partitions)).then(
      (status) => {
        const t = Date.now();
        this.#frame = { at: new Date(t).toISOString(), ...status, ...this.#window.add(status, t) };
        this.#lastGoodAt = this.#frame.at;
      },
      (error: unknown) => stale(`cannot read from Redis at ${maskRedisUrl(this.#o.config.redisUrl)}: ${errorMessage(error)}`),
    ).finally(() => { this.#inflight = null; });
    let timer: NodeJS.Timeout | undefined;
    const limit = this.#o.config.redisConnectTimeoutMs;
    await Promise.race([
      this.#inflight,
      new Promise<void>((resolve) => {
        timer = setTimeout(() => {
          stale(`cannot reach Redis at ${maskRedisUrl(this.#o.config.redisUrl)}: no answer within ${limit / 1000} s`);
          resolve();
        }, limit);
      }),
    ]).finally(() => clearTimeout(timer));
  }

  #allowedHost(header: string | undefined): boolean {
    if (!header) return false;
    const name = header.replace(/:\d+$/, '');
    const bound = this.#o.host;
    if (LOOPBACK.has(bound)) return LOOPBACK.has(name);
    // Bound to every address: the operator chose to expose it (behind their own proxy).
    if (bound === '0.0.0.0' || bound === '::') return true;
    return name === bound || name === `[${bound}]`;
  }

  #handle(req: IncomingMessage, res: ServerResponse): void {
    if (!this.#allowedHost(req.headers.host)) {
      res.writeHead(421, { 'content-type': 'text/plain' }).end('misdirected request: unexpected Host\n');
      return;
    }
    const url = req.url ?? '/';
    const path = url.split('?')[0] as string;
    if (path === QUEUES_PATH || path.startsWith(`${QUEUES_PATH}/`)) {
      // Mounted like express's app.use('/queues', board): the board sees paths relative to it.
      (req as IncomingMessage & { originalUrl?: string }).originalUrl = url;
      req.url = url.slice(QUEUES_PATH.length) || '/';
      this.#board(req, res, (error) => {
        if (!res.headersSent) res.writeHead(error ? 500 : 404, { 'content-type': 'text/plain' }).end(error ? 'error\n' : 'not found\n');
      });
      return;
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD' }).end();
      return;
    }
    if (path === '/') {
      res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' }).end(DASHBOARD_PAGE);
    } else if (path === '/api/status') {
      const failed = 'error' in this.#frame;
      res.writeHead(failed ? 503 : 200, { 'content-type': 'application/json', 'cache-control': 'no-store' }).end(JSON.stringify(this.#frame));
    } else {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found: try / or /queues\n');
    }
  }

  /** Stops serving and closes every connection; every step runs even when one fails. */
  async close(): Promise<void> {
    if (this.#timer) clearInterval(this.#timer);
    await this.#reading?.catch(() => undefined);
    await new Promise<void>((resolve) => {
      this.#server.close(() => resolve());
      this.#server.closeAllConnections();
    });
    await this.#queue.close().catch(() => undefined);
    await Promise.all([closeRedis(this.#redis), closeRedis(this.#bull)]);
  }
}

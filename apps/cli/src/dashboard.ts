import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Queue } from 'bullmq';
import { createBullBoard } from '@bull-board/api';
import { BullMQAdapter } from '@bull-board/api/bullMQAdapter';
import { ExpressAdapter } from '@bull-board/express';
import { ConfigError, DeploymentMismatchError, Redactor, errorMessage, keysFor, partitionKeys, type Config } from '@mirrorplane/core';
import { checkDeployment, closeRedis, createRedis, describeRedisError, listWorkers, maskRedisUrl, readDeploymentStatus, type Logger, type RetryJobData, type WorkerHeartbeat } from '@mirrorplane/runtime';
import { VERSION } from './version.js';
import { RateWindow, type StatusFrame } from './status-watch.js';
import { DASHBOARD_PAGE } from './dashboard-page.js';
import { DashboardAuth, checkDashboardBind, loginPage } from './dashboard-auth.js';

export interface DashboardOptions {
  config: Config;
  logger: Logger;
  /** Address to bind; loopback unless the operator says otherwise. */
  host: string;
  port: number;
  /** Hide every mutating button and refuse every mutating call. */
  readOnly?: boolean;
  /** Host names accepted besides the bound address (see DashboardAuth). */
  allowedHosts?: readonly string[];
  /**
   * Called when a reading finds that the deployment at this prefix disagrees with this
   * process's settings (`DeploymentMismatchError`): the figures would be read wrongly. The
   * command ends the process with exit 2, as when the check fails at start.
   */
  onMisconfigured?: (error: DeploymentMismatchError) => void;
}

/** What /api/status answers when the status was read. */
export type DashboardFrame = StatusFrame & {
  /** Whether a deployment is recorded at this prefix (false: nothing ran here; a typo in --prefix?). */
  deploymentFound: boolean;
  /** Said when there is something the operator should know about the figures. */
  warning?: string;
  /** Live workers by heartbeat. */
  workers: WorkerHeartbeat[];
};

/** Where bull-board is mounted. */
const QUEUES_PATH = '/queues';
/** Largest login form accepted. */
const MAX_LOGIN_BYTES = 4096;
/** Job states whose removal loses nothing that was accepted and is still to be replayed. */
const FINISHED_STATES = new Set(['failed', 'completed']);

/**
 * What a mutating bull-board call does, and whether the dashboard lets it through. Deleting
 * entries that are accepted and not finished (waiting, delayed, active: retries still to
 * come) is never allowed from the dashboard: that is `mirrorplane purge`, an explicit command.
 * Every other change not listed here (add, edit, pause, empty, obliterate…) is refused too.
 */
export type DashboardAction =
  | { kind: 'retry-all-failed' }
  | { kind: 'clean'; status: 'failed' | 'completed' }
  | { kind: 'promote-all' }
  | { kind: 'retry-job'; jobId: string }
  | { kind: 'promote-job'; jobId: string }
  | { kind: 'remove-job'; jobId: string }
  | { kind: 'refused'; why: string };

/** Classifies a mutating call to bull-board's API by its path below /queues. */
export function classifyDashboardAction(method: string, path: string): DashboardAction {
  const m = /^\/api\/queues\/([^/]+)\/(.+)$/.exec(path);
  if (method !== 'PUT' || !m) return { kind: 'refused', why: 'not a change the dashboard makes (use the CLI)' };
  const rest = m[2] as string;
  if (rest === 'retry/failed') return { kind: 'retry-all-failed' };
  if (rest === 'clean/failed' || rest === 'clean/completed') return { kind: 'clean', status: rest.slice(6) as 'failed' | 'completed' };
  if (rest.startsWith('clean/')) return { kind: 'refused', why: 'deleting entries that are accepted and not finished is not done from the dashboard (mirrorplane purge)' };
  if (rest === 'promote') return { kind: 'promote-all' };
  const job = /^([^/]+)\/(retry|promote|clean)$/.exec(rest);
  if (job) {
    const jobId = decodeURIComponent(job[1] as string);
    return job[2] === 'retry' ? { kind: 'retry-job', jobId } : job[2] === 'promote' ? { kind: 'promote-job', jobId } : { kind: 'remove-job', jobId };
  }
  if (rest === 'empty' || rest === 'obliterate') return { kind: 'refused', why: 'deleting entries that are accepted and not finished is not done from the dashboard (mirrorplane purge)' };
  return { kind: 'refused', why: 'not a change the dashboard makes (use the CLI)' };
}

type RedactedJob = { toJSON(): Record<string, unknown> };

/**
 * bull-board's adapter over the retry queue, showing every job redacted: headers and query
 * parameters by the redaction lists, bodies by their size only, names and failure reasons
 * through the same text redaction. The job itself (retry, remove) is untouched.
 */
class RedactedBullMQAdapter extends BullMQAdapter {
  readonly #redactor: Redactor;

  constructor(queue: Queue, redactor: Redactor, options: ConstructorParameters<typeof BullMQAdapter>[1]) {
    super(queue, options);
    this.#redactor = redactor;
  }

  override async getJob(id: string) {
    const job = await super.getJob(id);
    if (job) this.#wrap(job as unknown as RedactedJob);
    return job;
  }

  override async getJobs(...args: Parameters<BullMQAdapter['getJobs']>) {
    const jobs = await super.getJobs(...args);
    for (const job of jobs) this.#wrap(job as unknown as RedactedJob);
    return jobs;
  }

  #wrap(job: RedactedJob): void {
    const original = job.toJSON.bind(job);
    job.toJSON = () => redactJobJson(original(), this.#redactor);
  }
}

/** A job as bull-board shows it, with secrets and bodies hidden. */
export function redactJobJson(json: Record<string, unknown>, redactor: Redactor): Record<string, unknown> {
  const text = (v: unknown) => (typeof v === 'string' ? redactor.text(v) : v);
  const data = json.data as Partial<RetryJobData> | undefined;
  let shown: unknown = data;
  if (data && typeof data === 'object') {
    const entry = data.entry;
    shown = {
      ...data,
      entry: entry && typeof entry === 'object' ? {
        ...entry,
        target: typeof entry.target === 'string' ? redactor.target(entry.target) : entry.target,
        headers: Array.isArray(entry.headers) ? redactor.headers(entry.headers) : entry.headers,
        body: typeof entry.body === 'string' ? `[${Buffer.byteLength(entry.body, 'base64')} bytes, not shown]` : entry.body,
      } : entry,
      raw: data.raw ? Object.fromEntries(Object.entries(data.raw).map(([k, v]) => [k, `[${Buffer.byteLength(String(v), 'base64')} bytes, not shown]`])) : data.raw,
      failReason: text(data.failReason),
    };
  }
  return {
    ...json,
    name: text(json.name),
    data: shown,
    failedReason: text(json.failedReason),
    stacktrace: Array.isArray(json.stacktrace) ? json.stacktrace.map(text) : json.stacktrace,
    returnvalue: undefined,
  };
}

/**
 * `mirrorplane dashboard`: bull-board for the retry queue and the failed set (inspect, retry,
 * remove) under /queues, next to a page of our own at / (stream backlog, consumer group
 * members and their pending counts, rates) fed by /api/status.
 *
 * Access follows the admin port's rule: loopback by default; bound elsewhere it needs
 * ADMIN_TOKEN (the constructor throws otherwise), and with a token every page and call needs
 * a login (see DashboardAuth). Host is checked on every request; changes need a same-origin
 * request; `readOnly` refuses every change. Job data is shown redacted.
 *
 * @throws DashboardBindError when bound beyond loopback without ADMIN_TOKEN.
 */
export class Dashboard {
  readonly #o: DashboardOptions;
  readonly #auth: DashboardAuth;
  readonly #readOnly: boolean;
  readonly #redis;
  readonly #bull;
  readonly #queue: Queue<RetryJobData>;
  readonly #server: Server;
  readonly #board: (req: IncomingMessage, res: ServerResponse, next: (error?: unknown) => void) => void;
  readonly #window = new RateWindow();
  #frame: DashboardFrame | { error: string; stale?: true; lastGoodAt?: string | null } = { error: 'not read yet' };
  /** Whether the last reading found a deployment (null: not read yet); a change is logged once. */
  #deploymentFound: boolean | null = null;
  /** The reading under way; a new one starts only when it settles (reads wait for Redis, never pile up). */
  #inflight: Promise<void> | null = null;
  #lastGoodAt: string | null = null;
  #timer: NodeJS.Timeout | null = null;
  #reading: Promise<void> | null = null;
  #port = 0;

  constructor(options: DashboardOptions) {
    const problem = checkDashboardBind(options.host, options.config.adminToken);
    if (problem !== null) throw new DashboardBindError(problem);
    this.#o = options;
    this.#readOnly = options.readOnly === true;
    this.#auth = new DashboardAuth({ host: options.host, token: options.config.adminToken, allowedHosts: options.allowedHosts ?? [] });
    const keys = keysFor(options.config.prefix);
    // Long-lived connections that wait for Redis to come back, like a worker's.
    this.#redis = createRedis(options.config, 'commands', options.logger);
    this.#bull = createRedis(options.config, 'bullmq', options.logger);
    // Opened without writing BullMQ's meta key, like the operator commands: looking writes nothing.
    this.#queue = new Queue<RetryJobData>(keys.retryQueue, { connection: this.#bull, prefix: keys.bullPrefix, skipMetasUpdate: true });
    this.#queue.on('error', (error) => options.logger.warn({ err: errorMessage(error) }, 'retry queue error'));

    const adapter = new ExpressAdapter();
    adapter.setBasePath(QUEUES_PATH);
    createBullBoard({
      queues: [new RedactedBullMQAdapter(this.#queue, new Redactor(options.config.redaction), {
        displayName: `retry queue and failed set (${options.config.prefix})`,
        readOnlyMode: this.#readOnly,
        allowRetries: !this.#readOnly,
      })],
      serverAdapter: adapter,
      options: { uiConfig: { boardTitle: this.#readOnly ? 'Mirrorplane (read-only)' : 'Mirrorplane' } },
    });
    this.#board = adapter.getRouter();
    this.#server = createServer((req, res) => void this.#handle(req, res).catch((error: unknown) => {
      options.logger.warn({ err: errorMessage(error) }, 'dashboard request failed');
      if (!res.headersSent) res.writeHead(500, { 'content-type': 'text/plain' }).end('error\n');
      else res.destroy();
    }));
  }

  get url(): string {
    const host = this.#o.host.includes(':') ? `[${this.#o.host}]` : this.#o.host;
    return `http://${host}:${this.#port}/`;
  }

  /** Whether the dashboard asks for a login (ADMIN_TOKEN is set). */
  get loginRequired(): boolean {
    return this.#auth.loginRequired;
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
    const { config, logger } = this.#o;
    this.#inflight ??= (async () => {
      // The deployment is checked at every reading: a dashboard started while Redis was down
      // checks it as soon as Redis answers, before it shows a single figure.
      const { exists } = await checkDeployment(this.#redis, config, 'read', VERSION);
      const status = await readDeploymentStatus(this.#redis, this.#queue, partitionKeys(config.prefix, config.partitions));
      const workers = await listWorkers(this.#redis, config.prefix, { prune: false });
      return { exists, status, workers };
    })().then(
      ({ exists, status, workers }) => {
        if (exists !== this.#deploymentFound && !exists) logger.warn({ prefix: config.prefix, redis: maskRedisUrl(config.redisUrl) }, `no deployment at prefix ${config.prefix}: no ingress or worker has run here; check --prefix and the database in the URL`);
        if (exists !== this.#deploymentFound && exists && this.#deploymentFound === false) logger.info({ prefix: config.prefix }, 'deployment found at this prefix');
        this.#deploymentFound = exists;
        const t = Date.now();
        this.#frame = {
          at: new Date(t).toISOString(),
          ...status,
          ...this.#window.add(status, t),
          deploymentFound: exists,
          ...(exists ? {} : { warning: `no deployment at prefix ${config.prefix} on ${maskRedisUrl(config.redisUrl)}: no ingress or worker has run here; check --prefix and the database in the URL` }),
          workers,
        };
        this.#lastGoodAt = this.#frame.at;
      },
      (error: unknown) => {
        if (error instanceof DeploymentMismatchError) {
          this.#frame = { error: `${error.code}: ${error.message}`, stale: true, lastGoodAt: this.#lastGoodAt };
          logger.fatal({ err: error.message }, 'misconfigured deployment; exiting');
          this.#o.onMisconfigured?.(error);
          return;
        }
        stale(`cannot read from Redis at ${maskRedisUrl(config.redisUrl)}: ${describeRedisError(error)}`);
      },
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

  #refuse(req: IncomingMessage, res: ServerResponse, status: number, reason: string, message: string): void {
    this.#o.logger.warn({ reason, method: req.method, path: (req.url ?? '/').split('?')[0], remote: req.socket.remoteAddress }, 'dashboard request refused');
    const headers: Record<string, string> = { 'content-type': 'application/json', 'cache-control': 'no-store', 'x-mirrorplane-refused': reason };
    if (status === 401) headers['www-authenticate'] = 'Bearer realm="mirrorplane-dashboard"';
    res.writeHead(status, headers).end(JSON.stringify({ error: message, reason }));
  }

  async #handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = req.url ?? '/';
    const path = url.split('?')[0] as string;
    if (!this.#auth.allowedHost(req.headers.host)) {
      this.#refuse(req, res, 421, 'unexpected_host', 'misdirected request: unexpected Host');
      return;
    }
    if (path === '/login' || path === '/logout') {
      await this.#login(req, res, path);
      return;
    }
    const verdict = this.#auth.check(req);
    if (!verdict.ok) {
      // A person navigating gets the login form; a script gets a 401 it can read.
      if (verdict.reason === 'unauthenticated' && req.method === 'GET' && (req.headers.accept ?? '').includes('text/html')) {
        res.writeHead(303, { location: '/login', 'cache-control': 'no-store' }).end();
        return;
      }
      this.#refuse(req, res, verdict.status, verdict.reason, verdict.reason === 'cross_site' ? 'a change must come from the dashboard\'s own pages' : verdict.reason === 'unauthenticated' ? 'log in at /login, or send authorization: Bearer <ADMIN_TOKEN>' : 'unexpected Host');
      return;
    }
    const mutating = req.method !== 'GET' && req.method !== 'HEAD';
    if (path === QUEUES_PATH || path.startsWith(`${QUEUES_PATH}/`)) {
      const below = path.slice(QUEUES_PATH.length) || '/';
      if (mutating && !(await this.#allowChange(req, res, below, verdict.session))) return;
      // Mounted like express's app.use('/queues', board): the board sees paths relative to it.
      (req as IncomingMessage & { originalUrl?: string }).originalUrl = url;
      req.url = url.slice(QUEUES_PATH.length) || '/';
      this.#board(req, res, (error) => {
        if (!res.headersSent) res.writeHead(error ? 500 : 404, { 'content-type': 'text/plain' }).end(error ? 'error\n' : 'not found\n');
      });
      return;
    }
    if (mutating) {
      res.writeHead(405, { allow: 'GET, HEAD' }).end();
      return;
    }
    const html = { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store', 'x-frame-options': 'DENY', 'content-security-policy': "frame-ancestors 'none'" };
    if (path === '/') {
      res.writeHead(200, html).end(DASHBOARD_PAGE);
    } else if (path === '/api/status') {
      const failed = 'error' in this.#frame;
      res.writeHead(failed ? 503 : 200, { 'content-type': 'application/json', 'cache-control': 'no-store' }).end(JSON.stringify(this.#frame));
    } else {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found: try / or /queues\n');
    }
  }

  /** Read-only mode, then the action's own rule; allowed changes are logged. */
  async #allowChange(req: IncomingMessage, res: ServerResponse, below: string, session: string | null): Promise<boolean> {
    if (this.#readOnly) {
      this.#refuse(req, res, 403, 'read_only', 'the dashboard is read-only (--read-only)');
      return false;
    }
    const action = classifyDashboardAction(req.method ?? '', below);
    if (action.kind === 'refused') {
      this.#refuse(req, res, 403, 'not_allowed', action.why);
      return false;
    }
    if (action.kind === 'remove-job') {
      const state = await this.#queue.getJobState(action.jobId);
      if (!FINISHED_STATES.has(state)) {
        this.#refuse(req, res, 403, 'unfinished_entry', `job ${action.jobId} is ${state}: an accepted entry still to be replayed is not deleted from the dashboard (mirrorplane purge)`);
        return false;
      }
    }
    this.#o.logger.info({ action: action.kind, ...('jobId' in action ? { jobId: action.jobId } : {}), ...('status' in action ? { status: action.status } : {}), session: DashboardAuth.sessionLabel(session), remote: req.socket.remoteAddress }, 'dashboard change');
    return true;
  }

  async #login(req: IncomingMessage, res: ServerResponse, path: string): Promise<void> {
    const page = { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store', 'x-frame-options': 'DENY', 'content-security-policy': "frame-ancestors 'none'" };
    if (path === '/logout') {
      if (req.method !== 'POST' || !this.#auth.sameOrigin(req)) {
        this.#refuse(req, res, 403, 'cross_site', 'log out with a POST from the dashboard');
        return;
      }
      res.writeHead(303, { location: '/login', 'set-cookie': this.#auth.endSession(req) }).end();
      return;
    }
    if (!this.#auth.loginRequired) {
      res.writeHead(303, { location: '/' }).end();
      return;
    }
    if (req.method === 'GET' || req.method === 'HEAD') {
      res.writeHead(200, page).end(loginPage(null));
      return;
    }
    if (req.method !== 'POST') {
      res.writeHead(405, { allow: 'GET, POST' }).end();
      return;
    }
    // Login CSRF: another site must not log a browser in with a token of its choosing.
    if (!this.#auth.sameOrigin(req)) {
      this.#refuse(req, res, 403, 'cross_site', 'log in from the dashboard\'s own page');
      return;
    }
    const body = await readBounded(req, MAX_LOGIN_BYTES);
    const token = body === null ? null : new URLSearchParams(body).get('token');
    if (token === null || !this.#auth.tokenMatches(token)) {
      this.#o.logger.warn({ reason: body === null ? 'too_large' : 'wrong_token', remote: req.socket.remoteAddress }, 'dashboard login refused');
      res.writeHead(401, page).end(loginPage('That is not the token.'));
      return;
    }
    const session = this.#auth.startSession();
    this.#o.logger.info({ session: DashboardAuth.sessionLabel(session.id), remote: req.socket.remoteAddress }, 'dashboard login');
    res.writeHead(303, { location: '/', 'set-cookie': session.cookie, 'cache-control': 'no-store' }).end();
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

/** Thrown when the dashboard would bind beyond loopback without ADMIN_TOKEN. */
export class DashboardBindError extends ConfigError {
  constructor(message: string) {
    const colon = message.indexOf(': ');
    super([{ key: message.slice(0, colon), message: message.slice(colon + 2) }]);
  }
}

/** The request body as text, or null past `limit` bytes (the rest is not read). */
function readBounded(req: IncomingMessage, limit: number): Promise<string | null> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > limit) {
        resolve(null);
        req.destroy();
        return;
      }
      chunks.push(chunk);
    });
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

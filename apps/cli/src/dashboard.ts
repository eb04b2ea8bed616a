import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Queue } from 'bullmq';
import { createBullBoard } from '@bull-board/api';
import { BullMQAdapter } from '@bull-board/api/bullMQAdapter';
import { ExpressAdapter } from '@bull-board/express';
import {
  DashboardBindError,
  DeploymentMismatchError,
  Redactor,
  drainSeconds,
  errorMessage,
  isJsonMediaType,
  keysFor,
  partitionKeys,
  type Config,
} from '@mirrorplane/core';
import {
  checkDeployment,
  closeRedis,
  createRedis,
  createRetryQueue,
  describeRedisError,
  listWorkers,
  maskRedisUrl,
  readDeploymentStatus,
  readRateCaps,
  type RateCap,
  ServerTls,
  closeHttp,
  listenHttp,
  type Logger,
  type RetryJobData,
  type WorkerHeartbeat,
} from '@mirrorplane/runtime';
import { VERSION } from './version.js';
import { RateWindow, type StatusFrame } from './status-watch.js';
import { DASHBOARD_PAGE } from './dashboard-page.js';
import { DashboardAuth, SESSION_KEY_FRAGMENT, SESSION_KEY_HEADER, checkDashboardBind, loginPage, withSessionKeyScript } from './dashboard-auth.js';

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

/** Our own page, with the session key script. */
const PAGE = withSessionKeyScript(DASHBOARD_PAGE);

/** What /api/status answers when the status was read. */
export type DashboardFrame = StatusFrame & {
  /** Whether a deployment is recorded at this prefix (false: nothing ran here; a typo in --prefix?). */
  deploymentFound: boolean;
  /** Said when there is something the operator should know about the figures. */
  warning?: string;
  /** Live workers by heartbeat. */
  workers: WorkerHeartbeat[];
  /** Rate caps on the staging origins (config as the dashboard loaded it, and live overrides). */
  rateCaps?: RateCap[];
  /** Seconds to drain the backlog and retry queue at the default origin's cap; null when uncapped. */
  capDrainSeconds?: number | null;
};

/** Where bull-board is mounted. */
const QUEUES_PATH = '/queues';
/** Largest login form accepted. */
const MAX_LOGIN_BYTES = 4096;
/**
 * Headers on every answer the dashboard gives: no framing by another site (clickjacking of
 * bull-board's buttons), no content sniffing, no Referer carrying a URL out, nothing cached.
 * Referrer-Policy is `same-origin`, not `no-referrer`: under `no-referrer` Chromium sends
 * `Origin: null` on a same-origin form POST, which the login's cross-site check must refuse.
 */
export const SECURITY_HEADERS: Readonly<Record<string, string>> = Object.freeze({
  'x-frame-options': 'DENY',
  'content-security-policy': "frame-ancestors 'none'",
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'same-origin',
  'cache-control': 'no-store',
});
/** Job states whose removal loses nothing that was accepted and is still to be replayed. */
const FINISHED_STATES = new Set(['failed', 'completed']);

/**
 * What a mutating bull-board call does, and whether the dashboard lets it through. Deleting
 * entries that are accepted and not finished (waiting, delayed, active: retries still to
 * come) is never allowed from the dashboard, nor by any command: an accepted entry leaves Redis only once
 * it was replayed, dropped by a rule, or moved to the failed set (which `failed purge` empties).
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

/**
 * Classifies a mutating call to bull-board's API by its path below /queues, as bull-board's
 * router (express: routes tried in order, literal segments matched case-insensitively, one
 * trailing slash ignored, parameters percent-decoded) would route it. The path must have
 * passed `dashboardTarget` first (no fragment, no encoded `/` or `.`), so what is classified
 * here is what the router runs.
 */
export function classifyDashboardAction(method: string, path: string): DashboardAction {
  const notOurs: DashboardAction = { kind: 'refused', why: 'not a change the dashboard makes (use the CLI)' };
  const unfinished: DashboardAction = {
    kind: 'refused',
    why: 'deleting entries that are accepted and not finished is not done: it leaves Redis once replayed, dropped by a rule, or failed (then "failed purge")',
  };
  if (method !== 'PUT') return notOurs;
  const trimmed = path.length > 1 && path.endsWith('/') ? path.slice(0, -1) : path;
  const seg = trimmed.split('/').slice(1);
  if (seg.length < 4 || seg[0]?.toLowerCase() !== 'api' || seg[1]?.toLowerCase() !== 'queues' || seg.some((s) => s === '')) return notOurs;
  const [a, b, ...more] = seg.slice(3) as [string, string | undefined, ...string[]];
  const la = a.toLowerCase();
  const lb = b?.toLowerCase();
  let param: string;
  try {
    param = decodeURIComponent(b ?? a);
  } catch {
    return notOurs;
  }
  if (more.length > 0) return notOurs;
  if (b === undefined) {
    if (la === 'promote') return { kind: 'promote-all' };
    if (la === 'empty' || la === 'obliterate') return unfinished;
    return notOurs;
  }
  if (la === 'retry') return param === 'failed' ? { kind: 'retry-all-failed' } : notOurs;
  if (la === 'clean') return param === 'failed' || param === 'completed' ? { kind: 'clean', status: param } : unfinished;
  if (la === 'rate-limit' || la === 'job-schedulers') return notOurs;
  let jobId: string;
  try {
    jobId = decodeURIComponent(a);
  } catch {
    return notOurs;
  }
  if (lb === 'retry') return { kind: 'retry-job', jobId };
  if (lb === 'promote') return { kind: 'promote-job', jobId };
  if (lb === 'clean') return { kind: 'remove-job', jobId };
  return notOurs;
}

/**
 * The request-target the dashboard serves, checked before anything reads it: origin-form
 * (`/path?query`), no fragment (`#`), no backslash, no control or space characters, no empty,
 * `.` or `..` segment, and no percent-encoding of `/`, `\`, `.`, `#`, `?` or of a character that
 * needs none (`%63lean`). What passes routes the same in bull-board's router (express, which
 * matches literal segments raw and decodes parameters) as in `classifyDashboardAction`, which
 * reads the same path: the check and the router cannot disagree on what a target does.
 * Returns the path and the target to hand on, or the reason it is refused (answered 400).
 */
export function dashboardTarget(raw: string): { ok: true; path: string; url: string } | { ok: false; why: string } {
  if (raw.length === 0 || raw[0] !== '/') return { ok: false, why: 'the request-target must be origin-form (/path?query)' };
  if (raw.length > 8192) return { ok: false, why: 'the request-target is too long' };
  // eslint-disable-next-line no-control-regex -- control bytes are exactly what is refused here
  if (/[#\\\x00-\x20\x7f-\uffff]/.test(raw)) return { ok: false, why: 'the request-target holds a fragment, a backslash, or a space or control character' };
  const q = raw.indexOf('?');
  const path = q < 0 ? raw : raw.slice(0, q);
  for (const m of path.matchAll(/%([0-9A-Fa-f]{2})?/g)) {
    if (m[1] === undefined) return { ok: false, why: 'the path holds a malformed percent-encoding' };
    const c = String.fromCharCode(parseInt(m[1], 16));
    if (/[A-Za-z0-9\-._~/\\#?]/.test(c)) return { ok: false, why: `the path percent-encodes ${JSON.stringify(c)}, which routers read differently` };
  }
  const segments = path.split('/').slice(1);
  if (segments.some((s, i) => s === '.' || s === '..' || (s === '' && i < segments.length - 1))) {
    return { ok: false, why: 'the path holds an empty, "." or ".." segment' };
  }
  return { ok: true, path, url: raw };
}

/**
 * Makes every answer bull-board writes on `res` go out through the dashboard: JSON redacted
 * (see `redactAnswer`), whatever route reads jobs (list, job, flow, logs, schedulers, and
 * routes a later version adds); HTML with the session key script (see DashboardAuth). Other
 * answers (scripts, styles, images) go out unchanged.
 */
export function redactJsonAnswers(res: ServerResponse, redactor: Redactor): void {
  transformAnswers(res, (type) => {
    if (isJsonMediaType(type)) {
      return (raw) => {
        try {
          return JSON.stringify(redactAnswer(JSON.parse(raw.toString('utf8')), redactor));
        } catch {
          return JSON.stringify({ error: 'answer not shown: it could not be redacted' });
        }
      };
    }
    if (/^text\/html/i.test(type)) return (raw) => withSessionKeyScript(raw.toString('utf8'));
    return null;
  });
}

/** Buffers an answer whose Content-Type `pick` chooses, and writes `pick(type)(body)` instead (Content-Length fixed). */
function transformAnswers(res: ServerResponse, pick: (contentType: string) => ((body: Buffer) => string) | null): void {
  const write = res.write.bind(res) as (chunk: unknown, ...rest: unknown[]) => boolean;
  const end = res.end.bind(res) as (...args: unknown[]) => ServerResponse;
  let chosen: ((body: Buffer) => string) | null | undefined;
  const choose = () => (chosen === undefined ? (chosen = pick(String(res.getHeader('content-type') ?? ''))) : chosen);
  const chunks: Buffer[] = [];
  const toBuffer = (chunk: unknown, encoding?: unknown) =>
    Buffer.isBuffer(chunk)
      ? chunk
      : typeof chunk === 'string'
        ? Buffer.from(chunk, typeof encoding === 'string' ? (encoding as BufferEncoding) : 'utf8')
        : Buffer.from(chunk as Uint8Array);
  res.write = ((chunk: unknown, ...rest: unknown[]) => {
    if (choose() === null) return write(chunk, ...rest);
    chunks.push(toBuffer(chunk, rest[0]));
    const cb = rest.find((r) => typeof r === 'function') as (() => void) | undefined;
    cb?.();
    return true;
  }) as ServerResponse['write'];
  res.end = ((...args: unknown[]) => {
    const f = choose();
    if (f === null || res.statusCode === 304 || res.statusCode === 204) return end(...args);
    const [chunk, encoding] = args;
    if (chunk !== undefined && chunk !== null && typeof chunk !== 'function') chunks.push(toBuffer(chunk, encoding));
    const body = f(Buffer.concat(chunks));
    if (!res.headersSent) {
      res.removeHeader('etag');
      res.setHeader('content-length', Buffer.byteLength(body));
    }
    return end(body);
  }) as ServerResponse['end'];
}

/**
 * A bull-board answer with what is secret hidden: every job's data by `redactJobData`
 * (headers and trailers by name, target by query name and userinfo, bodies by size only),
 * return values dropped, and every other string (names, failure reasons, stack traces, logs)
 * through `Redactor.text`.
 */
export function redactAnswer(value: unknown, redactor: Redactor): unknown {
  if (typeof value === 'string') return redactor.text(value);
  if (Array.isArray(value)) return value.map((v) => redactAnswer(v, redactor));
  if (value === null || typeof value !== 'object') return value;
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(value)) {
    if (k === 'returnValue' || k === 'returnvalue') out[k] = v === null || v === undefined ? v : '[not shown]';
    else if (k === 'data' && isJobData(v)) out[k] = redactAnswer(redactJobData(v, redactor), redactor);
    else out[k] = redactAnswer(v, redactor);
  }
  return out;
}

function isJobData(v: unknown): v is Partial<RetryJobData> {
  return v !== null && typeof v === 'object' && !Array.isArray(v) && ('entry' in v || 'raw' in v);
}

/** A retry job's data as shown: secret headers and trailers hidden, bodies by their size. */
export function redactJobData(data: Partial<RetryJobData>, redactor: Redactor): Record<string, unknown> {
  const entry = data.entry;
  return {
    ...data,
    entry:
      entry && typeof entry === 'object'
        ? {
            ...entry,
            target: typeof entry.target === 'string' ? redactor.target(entry.target) : entry.target,
            headers: Array.isArray(entry.headers) ? redactor.headers(entry.headers) : entry.headers,
            ...(entry.trailers !== undefined ? { trailers: Array.isArray(entry.trailers) ? redactor.headers(entry.trailers) : '[not shown]' } : {}),
            body: typeof entry.body === 'string' ? `[${Buffer.byteLength(entry.body, 'base64')} bytes, not shown]` : entry.body,
          }
        : entry,
    raw:
      data.raw && typeof data.raw === 'object'
        ? Object.fromEntries(Object.entries(data.raw).map(([k, v]) => [k, `[${Buffer.byteLength(String(v), 'base64')} bytes, not shown]`]))
        : data.raw,
  };
}

/** A BullMQ job's JSON as the dashboard may show it (see `redactAnswer`). */
export function redactJobJson(json: Record<string, unknown>, redactor: Redactor): Record<string, unknown> {
  return { ...(redactAnswer(json, redactor) as Record<string, unknown>), returnvalue: undefined };
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
  readonly #redactor: Redactor;
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
  /** HTTPS (ADMIN_TLS_*), or null for plain HTTP. */
  readonly #tls: ServerTls | null;

  constructor(options: DashboardOptions) {
    const problem = checkDashboardBind(options.host, options.config.adminToken);
    if (problem !== null) throw new DashboardBindError(problem);
    this.#o = options;
    this.#redactor = new Redactor(options.config.redaction);
    this.#readOnly = options.readOnly === true;
    // Read now: a missing or unusable file fails the start with the setting's name (TlsFileError).
    this.#tls = options.config.adminTls === null ? null : new ServerTls(options.config.adminTls, options.logger);
    this.#auth = new DashboardAuth({
      host: options.host,
      token: options.config.adminToken,
      allowedHosts: options.allowedHosts ?? [],
      secure: this.#tls !== null,
    });
    const keys = keysFor(options.config.prefix);
    // Long-lived connections that wait for Redis to come back, like a worker's.
    this.#redis = createRedis(options.config, 'commands', options.logger);
    this.#bull = createRedis(options.config, 'bullmq', options.logger);
    // Opened without writing BullMQ's meta key, like the operator commands: looking writes nothing.
    this.#queue = createRetryQueue(keys, this.#bull, { skipMetasUpdate: true });
    this.#queue.on('error', (error) => options.logger.warn({ err: errorMessage(error) }, 'retry queue error'));

    const adapter = new ExpressAdapter();
    adapter.setBasePath(QUEUES_PATH);
    createBullBoard({
      queues: [
        new BullMQAdapter(this.#queue, {
          displayName: `retry queue and failed set (${options.config.prefix})`,
          readOnlyMode: this.#readOnly,
          allowRetries: !this.#readOnly,
        }),
      ],
      serverAdapter: adapter,
      options: { uiConfig: { boardTitle: this.#readOnly ? 'Mirrorplane (read-only)' : 'Mirrorplane' } },
    });
    this.#board = adapter.getRouter();
    this.#server = createServer(
      (req, res) =>
        void this.#handle(req, res).catch((error: unknown) => {
          options.logger.warn({ err: errorMessage(error) }, 'dashboard request failed');
          if (!res.headersSent) res.writeHead(500, { 'content-type': 'text/plain' }).end('error\n');
          else res.destroy();
        }),
    );
  }

  get url(): string {
    const host = this.#o.host.includes(':') ? `[${this.#o.host}]` : this.#o.host;
    return `${this.#tls ? 'https' : 'http'}://${host}:${this.#port}/`;
  }

  /** Whether the dashboard asks for a login (ADMIN_TOKEN is set). */
  get loginRequired(): boolean {
    return this.#auth.loginRequired;
  }

  async listen(): Promise<string> {
    this.#port = await listenHttp(this.#server, this.#o.port, this.#o.host, this.#tls);
    // The first reading is there before anyone is told the dashboard is up.
    await this.#read();
    const tick = () => {
      this.#reading ??= this.#read().finally(() => {
        this.#reading = null;
      });
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
      const rateCaps = await readRateCaps(this.#redis, config.prefix, config.rateLimits);
      return { exists, status, workers, rateCaps };
    })()
      .then(
        ({ exists, status, workers, rateCaps }) => {
          if (exists !== this.#deploymentFound && !exists)
            logger.warn(
              { prefix: config.prefix, redis: maskRedisUrl(config.redisUrl) },
              `no deployment at prefix ${config.prefix}: no ingress or worker has run here; check --prefix and the database in the URL`,
            );
          if (exists !== this.#deploymentFound && exists && this.#deploymentFound === false)
            logger.info({ prefix: config.prefix }, 'deployment found at this prefix');
          this.#deploymentFound = exists;
          const t = Date.now();
          this.#frame = {
            at: new Date(t).toISOString(),
            ...status,
            ...this.#window.add(status, t),
            deploymentFound: exists,
            ...(exists
              ? {}
              : {
                  warning: `no deployment at prefix ${config.prefix} on ${maskRedisUrl(config.redisUrl)}: no ingress or worker has run here; check --prefix and the database in the URL`,
                }),
            workers,
            rateCaps,
            capDrainSeconds: drainSeconds(status.backlog + status.retrying, rateCaps.find((c) => c.origin === 'default')?.limit ?? null),
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
      )
      .finally(() => {
        this.#inflight = null;
      });
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

  /** 429 for an address past its wrong-token budget (see GuessThrottle); logged and counted. */
  #throttled(req: IncomingMessage, res: ServerResponse, retryAfterS: number): void {
    res.setHeader('retry-after', String(retryAfterS));
    this.#o.logger.warn(
      { reason: 'throttled', remote: req.socket.remoteAddress, retryAfterS, throttled: this.#auth.throttle.throttled },
      'dashboard credentials throttled',
    );
    res
      .writeHead(429, { 'content-type': 'application/json', 'x-mirrorplane-refused': 'throttled' })
      .end(JSON.stringify({ error: `too many wrong tokens from this address: try again in ${retryAfterS} s`, reason: 'throttled' }));
  }

  async #handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    // On every answer, bull-board's included (its own headers may add to these, not drop them).
    for (const [name, value] of Object.entries(SECURITY_HEADERS)) res.setHeader(name, value);
    const target = dashboardTarget(req.url ?? '/');
    if (!target.ok) {
      this.#refuse(req, res, 400, 'bad_target', target.why);
      return;
    }
    const { url, path } = target;
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
      if (verdict.reason === 'throttled') {
        this.#throttled(req, res, verdict.retryAfterS);
        return;
      }
      this.#refuse(
        req,
        res,
        verdict.status,
        verdict.reason,
        verdict.reason === 'cross_site'
          ? "a change must come from the dashboard's own pages"
          : verdict.reason === 'unauthenticated'
            ? 'log in at /login, or send authorization: Bearer <ADMIN_TOKEN>'
            : 'unexpected Host',
      );
      return;
    }
    const mutating = req.method !== 'GET' && req.method !== 'HEAD';
    if (path === QUEUES_PATH || path.startsWith(`${QUEUES_PATH}/`)) {
      const below = path.slice(QUEUES_PATH.length) || '/';
      if (mutating && !(await this.#allowChange(req, res, below, verdict.session))) return;
      // Mounted like express's app.use('/queues', board): the board sees paths relative to it.
      (req as IncomingMessage & { originalUrl?: string }).originalUrl = url;
      req.url = url.slice(QUEUES_PATH.length) || '/';
      redactJsonAnswers(res, this.#redactor);
      this.#board(req, res, (error) => {
        if (!res.headersSent) res.writeHead(error ? 500 : 404, { 'content-type': 'text/plain' }).end(error ? 'error\n' : 'not found\n');
      });
      return;
    }
    if (mutating) {
      res.writeHead(405, { allow: 'GET, HEAD' }).end();
      return;
    }
    const html = {
      'content-type': 'text/html; charset=utf-8',
      'cache-control': 'no-store',
      'x-frame-options': 'DENY',
      'content-security-policy': "frame-ancestors 'none'",
    };
    if (path === '/') {
      res.writeHead(200, html).end(PAGE);
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
        this.#refuse(
          req,
          res,
          403,
          'unfinished_entry',
          `job ${action.jobId} is ${state}: an accepted entry still to be replayed is not deleted: it leaves Redis once replayed, dropped by a rule, or failed (then "failed purge")`,
        );
        return false;
      }
    }
    this.#o.logger.info(
      {
        action: action.kind,
        ...('jobId' in action ? { jobId: action.jobId } : {}),
        ...('status' in action ? { status: action.status } : {}),
        session: DashboardAuth.sessionLabel(session),
        remote: req.socket.remoteAddress,
      },
      'dashboard change',
    );
    return true;
  }

  async #login(req: IncomingMessage, res: ServerResponse, path: string): Promise<void> {
    const page = {
      'content-type': 'text/html; charset=utf-8',
      'cache-control': 'no-store',
      'x-frame-options': 'DENY',
      'content-security-policy': "frame-ancestors 'none'",
    };
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
      this.#refuse(req, res, 403, 'cross_site', "log in from the dashboard's own page");
      return;
    }
    const address = req.socket.remoteAddress ?? '';
    const wait = this.#auth.throttle.take(address);
    if (wait > 0) {
      this.#throttled(req, res, wait);
      return;
    }
    const body = await readBounded(req, MAX_LOGIN_BYTES);
    const token = body === null ? null : new URLSearchParams(body).get('token');
    if (token === null || !this.#auth.tokenMatches(token)) {
      this.#auth.throttle.failed(address);
      this.#o.logger.warn(
        { reason: body === null ? 'too_large' : 'wrong_token', remote: req.socket.remoteAddress, failures: this.#auth.throttle.failures },
        'dashboard login refused',
      );
      res.writeHead(401, page).end(loginPage('That is not the token.'));
      return;
    }
    this.#auth.throttle.succeeded(address);
    const session = this.#auth.startSession();
    this.#o.logger.info({ session: DashboardAuth.sessionLabel(session.id), remote: req.socket.remoteAddress }, 'dashboard login');
    // The key rides in the fragment (never sent to a server, nor in a Referer) to the page, which keeps it in localStorage.
    res.writeHead(303, { location: `/#${SESSION_KEY_FRAGMENT}=${session.key}`, 'set-cookie': session.cookie, [SESSION_KEY_HEADER]: session.key }).end();
  }

  /** Stops serving and closes every connection; every step runs even when one fails. */
  async close(): Promise<void> {
    if (this.#timer) clearInterval(this.#timer);
    await this.#reading?.catch(() => undefined);
    await closeHttp(this.#server);
    await this.#queue.close().catch(() => undefined);
    await Promise.all([closeRedis(this.#redis), closeRedis(this.#bull)]);
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

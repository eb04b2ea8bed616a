import { Pool, errors as undiciErrors, type Dispatcher } from 'undici';
import { DeadlineQueue } from './deadline-queue.js';
import {
  compileRetryPolicy,
  forEachHeader,
  HookError,
  ReplayLaterError,
  stagingHeaders,
  StagingStatusError,
  StagingTransportError,
  UnreplayableRequestError,
  type CompiledPipeline,
  type Config,
  type Entry,
  type OutgoingRequest,
  type PipelineContext,
  type ReplayResponse,
} from '@mirrorplane/core';

/** What became of one replay attempt that did not throw. */
export type ReplayOutcome =
  | { kind: 'replayed'; status: number; ms: number }
  | { kind: 'dropped' };

/**
 * The path staging receives: origin-form only. An absolute-form target (`http://elsewhere/x`)
 * keeps its path and query and loses its authority, so nothing in a mirrored request can
 * point the replay at another host.
 */
export function originFormPath(target: string): string {
  if (target.startsWith('/')) return target;
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(target)) {
    const rest = target.slice(target.indexOf('//') + 2);
    const slash = rest.search(/[/?#]/);
    if (slash === -1) return '/';
    const path = rest.slice(slash);
    return path.startsWith('/') ? path : `/${path}`;
  }
  throw new UnreplayableRequestError(`request-target ${JSON.stringify(target.slice(0, 100))} is not a path`);
}

/** One configured staging origin and its connection pool. */
interface StagingOrigin {
  readonly name: string;
  readonly pool: Pool;
  /** The Host staging receives, or null to keep the mirrored Host. */
  readonly host: string | null;
  /** The origin URL's path without its trailing slash, prefixed to every request path. */
  readonly basePath: string;
}

/**
 * Sends entries to the configured staging origins, one keep-alive undici Pool each. The set
 * of origins is fixed at construction from the config: a request (or a rule or hook) can
 * choose among them by name, and can never name a URL, so nothing in a mirrored request
 * can point a replay at another host. STAGING_URL is the origin named `default`.
 */
export class StagingClient {
  readonly #origins = new Map<string, StagingOrigin>();
  readonly #default: StagingOrigin;
  readonly #timeoutMs: number;
  readonly #deadlines: DeadlineQueue;
  readonly #bodyLimit: number;
  readonly #isRetryable: (status: number) => boolean;
  readonly #pipeline: CompiledPipeline;

  constructor(config: Config, pipeline: CompiledPipeline) {
    const urls: Record<string, string> = { ...config.origins };
    if (config.stagingUrl) urls.default = config.stagingUrl;
    for (const [name, url] of Object.entries(urls)) {
      const staging = new URL(url);
      const pool = new Pool(staging.origin, {
        connections: config.workerConcurrency,
        keepAliveTimeout: 30_000,
        connectTimeout: Math.min(config.replayTimeoutMs, 10_000),
        headersTimeout: config.replayTimeoutMs,
        bodyTimeout: config.replayTimeoutMs,
        pipelining: 1,
      });
      this.#origins.set(name, {
        name,
        pool,
        host: config.preserveHost ? null : staging.host,
        basePath: staging.pathname === '/' ? '' : staging.pathname.replace(/\/$/, ''),
      });
    }
    const fallback = this.#origins.get('default');
    if (!fallback) throw new UnreplayableRequestError('no default staging origin: set STAGING_URL or origins.default');
    this.#default = fallback;
    this.#timeoutMs = config.replayTimeoutMs;
    this.#deadlines = new DeadlineQueue(config.replayTimeoutMs);
    this.#bodyLimit = config.responseBodyLimit;
    this.#isRetryable = compileRetryPolicy(config.retryStatuses);
    this.#pipeline = pipeline;
  }

  /**
   * One attempt. Resolves when staging answered with a status that completes the replay (or a
   * `pre` stage dropped the request); throws a `MirrorplaneError` whose `retryable` says
   * whether another attempt may succeed.
   */
  async replay(entry: Entry, attempt: number): Promise<ReplayOutcome> {
    const r = entry.request;
    let request: OutgoingRequest | null = {
      method: r.method,
      path: originFormPath(r.target),
      headers: stagingHeaders(r.rawHeaders, { host: this.#default.host, entryId: entry.id, attempt }),
      body: r.body,
      origin: 'default',
    };
    // Only stages read the context; without any, a replay allocates none.
    const ctx: PipelineContext | null = this.#pipeline.hasPre || this.#pipeline.hasPost
      ? { entryId: entry.id, attempt, requestId: r.requestId, mirrored: r, rules: [], tags: {} }
      : null;
    let origin = this.#default;
    if (this.#pipeline.hasPre) {
      try {
        request = await this.#pipeline.pre(request, ctx as PipelineContext);
      } catch (error) {
        // A stage asking to replay later is not a failure: the worker schedules the entry again.
        if (error instanceof ReplayLaterError) throw error;
        throw new HookError('pre', { cause: error });
      }
      if (request === null) return { kind: 'dropped' };
      request.path = originFormPath(request.path);
      origin = this.#origin(request);
    }

    const started = performance.now();
    // A deadline for the whole exchange, on top of undici's per-phase timeouts, so that a
    // staging server trickling bytes cannot hold a worker slot for ever.
    const deadline = this.#deadlines.start();
    const signal = deadline.signal;
    let data: Dispatcher.ResponseData;
    let body: Buffer;
    let truncated = false;
    try {
      data = await origin.pool.request({
        method: request.method,
        path: origin.basePath + request.path,
        headers: request.headers,
        body: request.body.length === 0 ? null : request.body,
        signal,
      });
      if (this.#pipeline.needsResponseBody && this.#pipeline.hasPost) {
        const chunks: Buffer[] = [];
        let size = 0;
        for await (const chunk of data.body as AsyncIterable<Buffer>) {
          if (size < this.#bodyLimit) {
            const room = this.#bodyLimit - size;
            chunks.push(chunk.length > room ? chunk.subarray(0, room) : chunk);
            if (chunk.length > room) truncated = true;
          } else truncated = true;
          size += chunk.length;
        }
        body = Buffer.concat(chunks);
      } else {
        // Read to the end so the connection goes back to the pool.
        for await (const _ of data.body) void _;
        body = Buffer.alloc(0);
      }
    } catch (error) {
      throw this.#transportError(error, signal);
    } finally {
      // On every path, or the queue would keep a failed exchange's deadline until it fires.
      deadline.finish();
    }
    const status = data.statusCode;
    const ms = performance.now() - started;
    if (this.#isRetryable(status)) throw new StagingStatusError(status);
    if (this.#pipeline.hasPost) {
      const headers: string[] = [];
      const h = data.headers;
      for (const name of Object.keys(h)) {
        const value = h[name];
        if (Array.isArray(value)) for (const v of value) headers.push(name, v);
        else if (value !== undefined) headers.push(name, value);
      }
      const response: ReplayResponse = { status, headers, body, truncated, ms };
      try {
        await this.#pipeline.post(response, request, ctx as PipelineContext);
      } catch (error) {
        // A failing post handler does not undo a replay that staging completed.
        throw Object.assign(new HookError('post', { cause: error }), { completed: true, status, ms });
      }
    }
    return { kind: 'replayed', status, ms };
  }

  /**
   * The origin a shaped request goes to. A name that is not configured fails the entry (no
   * retry can fix it): a replay never leaves the configured origins.
   */
  #origin(request: OutgoingRequest): StagingOrigin {
    const name = request.origin ?? 'default';
    const origin = typeof name === 'string' ? this.#origins.get(name) : undefined;
    if (!origin) {
      throw new UnreplayableRequestError(
        `origin ${JSON.stringify(String(name).slice(0, 100))} is not configured; configured origins: ${[...this.#origins.keys()].join(', ')}`,
      );
    }
    if (origin !== this.#default && origin.host !== null) {
      // The Host was set for the default origin before the stages ran; a stage that routed the
      // request elsewhere without choosing a Host of its own gets the routed origin's.
      const { headers } = request;
      const [from, to] = [this.#default.host, origin.host];
      forEachHeader(headers, (name, value, i) => {
        if (name.toLowerCase() === 'host' && value === from) headers[i + 1] = to;
      });
    }
    return origin;
  }

  #transportError(error: unknown, signal: AbortSignal): Error {
    if (signal.aborted) return new StagingTransportError(`staging did not answer within ${this.#timeoutMs} ms`, { cause: error });
    if (error instanceof undiciErrors.InvalidArgumentError || error instanceof undiciErrors.NotSupportedError) {
      return new UnreplayableRequestError(`undici refused the request: ${(error as Error).message}`);
    }
    const code = (error as { code?: string }).code;
    const message = (error as Error).message ?? String(error);
    return new StagingTransportError(code && !message.includes(code) ? `${code}: ${message}` : message, { cause: error });
  }

  async close(): Promise<void> {
    this.#deadlines.close();
    await Promise.all([...this.#origins.values()].map(({ pool }) => pool.close().catch(() => pool.destroy())));
  }
}

import { WireRequestError } from '@mirrorplane/core';
import { originTlsOptions } from '@mirrorplane/runtime';
import { Http1Origin, type WireResponse } from './http1-client.js';
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
export type ReplayOutcome = { kind: 'replayed'; status: number; ms: number } | { kind: 'dropped' };

/**
 * The request-target staging receives: origin-form as received, `*` (of `OPTIONS *`) as
 * received. An absolute-form target (`http://elsewhere/x`) keeps its path and query and loses
 * its authority, so nothing in a mirrored request can point the replay at another host.
 */
export function originFormPath(target: string): string {
  if (target.startsWith('/') || target === '*') return target;
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
  readonly pool: Http1Origin;
  /** The Host staging receives, or null to keep the mirrored Host. */
  readonly host: string | null;
  /** The origin's own host (`host:port`), sent when a request had no Host. */
  readonly authority: string;
  /** The origin URL's path without its trailing slash, prefixed to every request path. */
  readonly basePath: string;
}

/**
 * Sends entries to the configured staging origins, one set of kept-alive connections each. The set
 * of origins is fixed at construction from the config: a request (or a rule or hook) can
 * choose among them by name, and can never name a URL, so nothing in a mirrored request
 * can point a replay at another host. STAGING_URL is the origin named `default`.
 */
export class StagingClient {
  readonly #origins = new Map<string, StagingOrigin>();
  readonly #default: StagingOrigin;
  readonly #timeoutMs: number;
  readonly #deadlines: DeadlineQueue;
  readonly #isRetryable: (status: number) => boolean;
  readonly #pipeline: CompiledPipeline;
  /** Origins whose certificate is not verified (`insecure: true`), for the start-up log. */
  readonly insecureOrigins: readonly string[];

  constructor(config: Config, pipeline: CompiledPipeline) {
    this.insecureOrigins = Object.entries(config.originTls)
      .filter(([, tls]) => tls.insecure)
      .map(([name]) => name);
    const urls: Record<string, string> = { ...config.origins };
    if (config.stagingUrl) urls.default = config.stagingUrl;
    for (const [name, url] of Object.entries(urls)) {
      const staging = new URL(url);
      // Connects, headers and body all run under the replay's deadline (REPLAY_TIMEOUT_MS).
      const pool = new Http1Origin(staging.origin, {
        bodyLimit: pipeline.needsResponseBody && pipeline.hasPost ? config.responseBodyLimit : 0,
        maxIdle: config.workerConcurrency,
        idleMs: 30_000,
        // Read now: a missing file fails the start naming origins.<name>.ca (TlsFileError).
        tls: originTlsOptions(config.originTls[name]),
      });
      this.#origins.set(name, {
        name,
        pool,
        host: config.preserveHost ? null : staging.host,
        authority: staging.host,
        basePath: staging.pathname === '/' ? '' : staging.pathname.replace(/\/$/, ''),
      });
    }
    const fallback = this.#origins.get('default');
    if (!fallback) throw new UnreplayableRequestError('no default staging origin: set STAGING_URL or origins.default');
    this.#default = fallback;
    this.#timeoutMs = config.replayTimeoutMs;
    this.#deadlines = new DeadlineQueue(config.replayTimeoutMs);
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
      headers: stagingHeaders(r.rawHeaders, { host: this.#default.host, fallbackHost: this.#default.authority, entryId: entry.id, attempt }),
      body: r.body,
      origin: 'default',
    };
    // Only stages read the context; without any, a replay allocates none.
    const ctx: PipelineContext | null =
      this.#pipeline.hasPre || this.#pipeline.hasPost ? { entryId: entry.id, attempt, requestId: r.requestId, mirrored: r, rules: [], tags: {} } : null;
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
    // A deadline for the whole exchange (connect, headers, body), so that a
    // staging server trickling bytes cannot hold a worker slot for ever.
    const deadline = this.#deadlines.start();
    const signal = deadline.signal;
    let data: WireResponse;
    try {
      data = await origin.pool.request(
        {
          method: request.method,
          path: request.path === '*' ? '*' : origin.basePath + request.path,
          headers: request.headers,
          body: request.body,
          trailers: r.trailers ?? [],
        },
        signal,
      );
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
      const response: ReplayResponse = { status, headers: data.headers, body: data.body, truncated: data.truncated, ms };
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
    if (error instanceof WireRequestError) {
      return new UnreplayableRequestError(`the request cannot be written as HTTP/1.1: ${error.message}`);
    }
    if (error instanceof StagingTransportError) return error;
    const code = (error as { code?: string }).code;
    const message = (error as Error).message ?? String(error);
    return new StagingTransportError(code && !message.includes(code) ? `${code}: ${message}` : message, { cause: error });
  }

  async close(): Promise<void> {
    this.#deadlines.close();
    await Promise.all([...this.#origins.values()].map(({ pool }) => pool.close()));
  }
}

import { Pool, errors as undiciErrors, type Dispatcher } from 'undici';
import {
  StagingStatusError,
  StagingTransportError,
  UnreplayableRequestError,
  HookError,
  stagingHeaders,
  type CompiledPipeline,
  type Config,
  type Entry,
  type OutgoingRequest,
  type PipelineContext,
  type ReplayResponse,
  compileRetryPolicy,
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

/**
 * Sends entries to the one staging origin, through one keep-alive undici Pool. The origin is
 * fixed at construction: no request field, header or hook can change where a replay goes.
 */
export class StagingClient {
  readonly #pool: Pool;
  readonly #host: string | null;
  readonly #basePath: string;
  readonly #timeoutMs: number;
  readonly #bodyLimit: number;
  readonly #isRetryable: (status: number) => boolean;
  readonly #pipeline: CompiledPipeline;

  constructor(config: Config, pipeline: CompiledPipeline) {
    const staging = new URL(config.stagingUrl as string);
    this.#pool = new Pool(staging.origin, {
      connections: config.workerConcurrency,
      keepAliveTimeout: 30_000,
      connectTimeout: Math.min(config.replayTimeoutMs, 10_000),
      headersTimeout: config.replayTimeoutMs,
      bodyTimeout: config.replayTimeoutMs,
      pipelining: 1,
    });
    this.#host = config.preserveHost ? null : staging.host;
    this.#basePath = staging.pathname === '/' ? '' : staging.pathname.replace(/\/$/, '');
    this.#timeoutMs = config.replayTimeoutMs;
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
      headers: stagingHeaders(r.rawHeaders, { host: this.#host, entryId: entry.id, attempt }),
      body: r.body,
    };
    const ctx: PipelineContext = { entryId: entry.id, attempt, requestId: r.requestId };
    if (this.#pipeline.hasPre) {
      try {
        request = await this.#pipeline.pre(request, ctx);
      } catch (error) {
        throw new HookError('pre', { cause: error });
      }
      if (request === null) return { kind: 'dropped' };
      request.path = originFormPath(request.path);
    }

    const started = performance.now();
    // A deadline for the whole exchange, on top of undici's per-phase timeouts, so that a
    // staging server trickling bytes cannot hold a worker slot for ever.
    const signal = AbortSignal.timeout(this.#timeoutMs);
    let data: Dispatcher.ResponseData;
    try {
      data = await this.#pool.request({
        method: request.method,
        path: this.#basePath + request.path,
        headers: request.headers,
        body: request.body.length === 0 ? null : request.body,
        signal,
      });
    } catch (error) {
      throw this.#transportError(error, signal);
    }
    const status = data.statusCode;
    let body: Buffer;
    let truncated = false;
    try {
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
    }
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
        await this.#pipeline.post(response, request, ctx);
      } catch (error) {
        // A failing post handler does not undo a replay that staging completed.
        throw Object.assign(new HookError('post', { cause: error }), { completed: true, status, ms });
      }
    }
    return { kind: 'replayed', status, ms };
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
    await this.#pool.close().catch(() => this.#pool.destroy());
  }
}

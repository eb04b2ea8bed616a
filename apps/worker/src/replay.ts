import { performance } from 'node:perf_hooks';
import { WireRequestError } from '@mirrorplane/core';
import { originTlsOptions, type OriginGate } from '@mirrorplane/runtime';
import { Http1Origin, type WireResponse } from './http1-client.js';
import { Http2Origin, type Http2Response } from './http2-client.js';
import { DeadlineQueue, type Cancellation } from './deadline-queue.js';
import {
  compileRetryPolicy,
  copiesFor,
  MIRRORPLANE_COPY_HEADER,
  forEachHeader,
  GrpcStatusError,
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
  grpcStatusOf,
  headerValue,
  http2RequestFields,
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

/** How one attempt is made, beyond the entry and the attempt number. */
export interface ReplayOptions {
  /**
   * The origin a rate token was already taken for (the read loop takes the default origin's
   * before it reads): used when the request goes there, given back when it goes elsewhere or
   * nowhere. Absent: the attempt takes its own token.
   */
  prepaid?: string;
  /**
   * Whether an amplified request sends its extra copies (2…N) on this attempt; default true.
   * Retries of copy 1 send no extra copies (they were sent on the first try).
   */
  copies?: boolean;
  /** A factor every request is amplified by, on top of a rule's `amplify` (`replay --amplify`); default 1. */
  amplify?: number;
  /** Told how each extra copy (2…N) went; they are tried once, never retried. */
  onCopy?: (outcome: CopyOutcome) => void;
}

/** How an extra copy (2…N) of an amplified request went: staging's status, or the error. */
export type CopyOutcome = { copy: number; status: number } | { copy: number; error: Error };

/**
 * What a failed verification of a staging origin's certificate means, and the setting that
 * fixes it (`origins.<name>.ca`, `.servername`), by node's code (or, for a key under the
 * floor, which node reports as UNSPECIFIED, by OpenSSL's words); undefined for other errors.
 */
export function originTlsHint(code: string, name: string, message = ''): string | undefined {
  if (/key too (weak|small)|md too weak/i.test(message)) code = 'EE_KEY_TOO_SMALL';
  switch (code) {
    case 'UNABLE_TO_VERIFY_LEAF_SIGNATURE':
    case 'UNABLE_TO_GET_ISSUER_CERT':
    case 'UNABLE_TO_GET_ISSUER_CERT_LOCALLY':
    case 'SELF_SIGNED_CERT_IN_CHAIN':
    case 'DEPTH_ZERO_SELF_SIGNED_CERT':
      return `the origin's certificate chains to no CA we trust: put its CA in origins.${name}.ca`;
    case 'CERT_HAS_EXPIRED':
      return `the origin's certificate has expired: renew it on the staging server`;
    case 'CERT_NOT_YET_VALID':
      return `the origin's certificate is not valid yet: check the staging server's certificate and clocks`;
    case 'ERR_TLS_CERT_ALTNAME_INVALID':
      return `the origin's certificate does not name the URL's host: fix the host, or set origins.${name}.servername to a name it has`;
    case 'EE_KEY_TOO_SMALL':
    case 'CA_KEY_TOO_SMALL':
    case 'CA_MD_TOO_WEAK':
      return `the origin's certificate uses a key or signature weaker than the TLS floor (RSA 2048 bits, SHA-256): reissue it`;
    default:
      return undefined;
  }
}

/** One configured staging origin and its connection pool. */
interface StagingOrigin {
  readonly name: string;
  readonly pool: Http1Origin;
  /** Its HTTP/2 session, for entries that arrived over HTTP/2. */
  readonly h2: Http2Origin;
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
  readonly #grpcRetryable: ReadonlySet<number>;
  readonly #pipeline: CompiledPipeline;
  /** The deployment's rate caps by origin, or null when this client sends uncapped. */
  readonly #gate: OriginGate | null;
  /** Origins whose certificate is not verified (`insecure: true`), for the start-up log. */
  readonly insecureOrigins: readonly string[];

  /** @param gate the rate caps every request waits on before it is sent (`RateLimiter`); none: uncapped. */
  constructor(config: Config, pipeline: CompiledPipeline, gate: OriginGate | null = null) {
    this.#gate = gate;
    this.insecureOrigins = Object.entries(config.originTls)
      .filter(([, tls]) => tls.insecure)
      .map(([name]) => name);
    const urls: Record<string, string> = { ...config.origins };
    if (config.stagingUrl) urls.default = config.stagingUrl;
    for (const [name, url] of Object.entries(urls)) {
      const staging = new URL(url);
      // Connects, headers and body all run under the replay's deadline (REPLAY_TIMEOUT_MS).
      // Read now: a missing file fails the start naming origins.<name>.ca (TlsFileError).
      const tls = originTlsOptions(config.originTls[name]);
      const bodyLimit = pipeline.needsResponseBody && pipeline.hasPost ? config.responseBodyLimit : 0;
      const pool = new Http1Origin(staging.origin, { bodyLimit, maxIdle: config.workerConcurrency, idleMs: 30_000, tls });
      this.#origins.set(name, {
        name,
        pool,
        h2: new Http2Origin(staging.origin, { bodyLimit, tls }),
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
    this.#grpcRetryable = new Set(config.grpcRetryStatuses);
    this.#pipeline = pipeline;
  }

  /**
   * One attempt. Resolves when staging answered with a status that completes the replay (or a
   * `pre` stage dropped the request); throws a `MirrorplaneError` whose `retryable` says
   * whether another attempt may succeed.
   */
  replay(entry: Entry, attempt: number, options: ReplayOptions = {}): Promise<ReplayOutcome> {
    const prepaid = options.prepaid;
    // Not an async function: #replay's promise is returned as is (async never throws synchronously).
    if (this.#gate === null || prepaid === undefined) return this.#replay(entry, attempt, undefined, options);
    return this.#replayPrepaid(this.#gate, entry, attempt, prepaid, options);
  }

  async #replayPrepaid(gate: OriginGate, entry: Entry, attempt: number, prepaid: string, options: ReplayOptions): Promise<ReplayOutcome> {
    // The prepaid token is used by the one send to its origin, or given back.
    const state = { used: false };
    try {
      return await this.#replay(entry, attempt, { origin: prepaid, state }, options);
    } finally {
      if (!state.used) gate.refund(prepaid, 1);
    }
  }

  async #replay(
    entry: Entry,
    attempt: number,
    prepaid: { origin: string; state: { used: boolean } } | undefined,
    options: ReplayOptions,
  ): Promise<ReplayOutcome> {
    const r = entry.request;
    const http2 = r.protocol === 'HTTP/2';
    let request: OutgoingRequest | null = {
      method: r.method,
      path: originFormPath(r.target),
      headers: stagingHeaders(http2 ? http2RequestFields(r.rawHeaders) : r.rawHeaders, {
        host: this.#default.host,
        fallbackHost: this.#default.authority,
        entryId: entry.id,
        attempt,
        keepTeTrailers: http2,
      }),
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
      // Routed elsewhere: the token taken for the default origin goes back now, not when this
      // replay ends, so that requests to another origin never wait behind the default's cap.
      if (prepaid !== undefined && !prepaid.state.used && prepaid.origin !== origin.name && this.#gate !== null) {
        prepaid.state.used = true;
        this.#gate.refund(prepaid.origin, 1);
      }
    }

    // Amplified: copies 2…N go at once beside copy 1, each with its own token and deadline; the
    // attempt ends only when every copy has (so the entry is acknowledged after all of them).
    // A retry (copies: false) re-sends copy 1 alone, still marked as copy 1 of an amplified request.
    const copies = copiesFor((request.copies ?? 1) * (options.amplify ?? 1), entry.id);
    const extra: Promise<void>[] = [];
    if (copies > 1) {
      const base = request.headers;
      request.headers = [...base, MIRRORPLANE_COPY_HEADER, '1'];
      if (options.copies !== false)
        for (let k = 2; k <= copies; k++)
          extra.push(this.#sendCopy(origin, request, [...base, MIRRORPLANE_COPY_HEADER, String(k)], r.trailers ?? [], http2, k, options.onCopy));
    }
    try {
      return await this.#sendFirst(origin, request, r.trailers ?? [], http2, prepaid, ctx);
    } finally {
      if (extra.length > 0) await Promise.all(extra);
    }
  }

  /** Copy 1 (the only one without amplification): its answer is classified and reaches `post`. */
  async #sendFirst(
    origin: StagingOrigin,
    request: OutgoingRequest,
    trailers: string[],
    http2: boolean,
    prepaid: { origin: string; state: { used: boolean } } | undefined,
    ctx: PipelineContext | null,
  ): Promise<ReplayOutcome> {
    if (this.#gate !== null) {
      if (prepaid !== undefined && prepaid.origin === origin.name) prepaid.state.used = true;
      // Uncapped (the usual case): no token to wait for, and no promise to await per request.
      else if (this.#gate.limitOf(origin.name) !== null) await this.#gate.take(origin.name);
    }
    const started = performance.now();
    // A deadline for the whole exchange (connect, headers, body), so that a
    // staging server trickling bytes cannot hold a worker slot for ever.
    const deadline = this.#deadlines.start();
    const signal = deadline.signal;
    let data: WireResponse | Http2Response;
    try {
      data = await this.#send(origin, request.method, request.path, request.headers, request.body, trailers, http2, signal);
    } catch (error) {
      throw this.#transportError(error, signal, origin);
    } finally {
      // On every path, or the queue would keep a failed exchange's deadline until it fires.
      deadline.finish();
    }
    const status = data.statusCode;
    const ms = performance.now() - started;
    if (this.#isRetryable(status)) throw new StagingStatusError(status);
    const responseTrailers = (data as Partial<Http2Response>).trailers;
    if (http2) {
      // A gRPC error is an answer: the replay completed, unless the policy names that status.
      const grpc = grpcStatusOf({ headers: data.headers, trailers: responseTrailers });
      if (grpc !== null && this.#grpcRetryable.has(grpc.status)) throw new GrpcStatusError(grpc.status, grpc.message);
    }
    if (this.#pipeline.hasPost) {
      const response: ReplayResponse = { status, headers: data.headers, body: data.body, truncated: data.truncated, ms };
      if (http2) {
        response.protocol = 'HTTP/2';
        response.trailers = responseTrailers ?? [];
      }
      try {
        await this.#pipeline.post(response, request, ctx as PipelineContext);
      } catch (error) {
        // A failing post handler does not undo a replay that staging completed.
        throw Object.assign(new HookError('post', { cause: error }), { completed: true, status, ms });
      }
    }
    return { kind: 'replayed', status, ms };
  }

  /** An extra copy: one try, its own token and deadline, told to `onCopy`; never throws. */
  async #sendCopy(
    origin: StagingOrigin,
    request: OutgoingRequest,
    headers: string[],
    trailers: string[],
    http2: boolean,
    copy: number,
    onCopy: ((outcome: CopyOutcome) => void) | undefined,
  ): Promise<void> {
    let signal: Cancellation | null = null;
    try {
      if (this.#gate !== null) await this.#gate.take(origin.name);
      const deadline = this.#deadlines.start();
      signal = deadline.signal;
      try {
        const data = await this.#send(origin, request.method, request.path, headers, request.body, trailers, http2, signal);
        onCopy?.({ copy, status: data.statusCode });
      } finally {
        deadline.finish();
      }
    } catch (error) {
      onCopy?.({ copy, error: signal === null ? (error as Error) : this.#transportError(error, signal, origin) });
    }
  }

  /** One exchange with `origin`, over HTTP/2 for an HTTP/2 entry (`:authority` from the `host` field), else HTTP/1.1. */
  #send(
    origin: StagingOrigin,
    method: string,
    path: string,
    headers: string[],
    body: Buffer,
    trailers: string[],
    http2: boolean,
    signal: Cancellation,
  ): Promise<WireResponse | Http2Response> {
    const wire = { method, path: path === '*' ? '*' : origin.basePath + path, headers, body, trailers };
    return http2 ? origin.h2.request(wire, headerValue(headers, 'host') ?? origin.authority, signal) : origin.pool.request(wire, signal);
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

  #transportError(error: unknown, signal: Cancellation, origin: StagingOrigin): Error {
    if (signal.aborted) return new StagingTransportError(`staging did not answer within ${this.#timeoutMs} ms`, { cause: error });
    if (error instanceof WireRequestError) {
      return new UnreplayableRequestError(`the request cannot be written as HTTP/1.1 or HTTP/2: ${error.message}`);
    }
    if (error instanceof StagingTransportError) return error;
    const code = (error as { code?: string }).code;
    const message = (error as Error).message ?? String(error);
    const hint = code === undefined ? undefined : originTlsHint(code, origin.name, message);
    const text = code && !message.includes(code) ? `${code}: ${message}` : message;
    return new StagingTransportError(hint === undefined ? text : `${text}: ${hint}`, { cause: error });
  }

  async close(): Promise<void> {
    this.#deadlines.close();
    await Promise.all([...this.#origins.values()].flatMap(({ pool, h2 }) => [pool.close(), h2.close()]));
  }
}

import type { MirroredRequest } from './entry.js';
import { PipelineStageError, ReplayLaterError } from './errors.js';

/**
 * The pipeline a worker runs around each replay: `pre` shapes the request before it is
 * sent to staging (or drops it), `post` sees staging's response. Both are composed once
 * at start-up into one `CompiledPipeline`; nothing is looked up per request.
 */

/** The request as it will be sent to staging; `pre` may change any field. */
export interface OutgoingRequest {
  method: string;
  /** Origin-form path and query (`/orders/7?x=1`). */
  path: string;
  /** Flat `[name, value, …]`, order and duplicates kept. */
  headers: string[];
  body: Buffer;
  /**
   * Name of the configured staging origin the request goes to (`default` is STAGING_URL).
   * Only names listed in the config are ever contacted; any other name fails the entry.
   */
  origin: string;
  /**
   * Amplification: copies of the request to send (≥ 1; a fraction sends the whole part or one
   * more, decided by the entry id, see `copiesFor`). Absent: one. Each copy carries
   * `x-mirrorplane-copy: <n>`; only copy 1 reaches `post` stages.
   */
  copies?: number;
}

/** What staging answered. */
export interface ReplayResponse {
  status: number;
  /** Flat `[name, value, …]` as staging sent them. */
  headers: string[];
  /** Up to `RESPONSE_BODY_LIMIT` bytes of the body. */
  body: Buffer;
  /** True when the body was longer than the limit and was cut. */
  truncated: boolean;
  /** Milliseconds from sending the request to the end of the response body. */
  ms: number;
  /** Set for a replay over HTTP/2 (the entry arrived over HTTP/2); absent: HTTP/1.1. */
  protocol?: 'HTTP/2';
  /** HTTP/2: the response's trailer fields (`grpc-status`, `grpc-message` for gRPC), `[name, value, …]`. */
  trailers?: string[];
}

/** What a stage can see of the replay it runs in. One per attempt. */
export interface PipelineContext {
  readonly entryId: string;
  readonly attempt: number;
  readonly requestId: string | null;
  /** The request as the mirror sent it, before any stage changed it. */
  readonly mirrored: MirroredRequest;
  /** Names of the rules applied so far, in order (recordings keep them). */
  readonly rules: string[];
  /** Annotations for recordings and logs: `ctx.tags.tenant = 'acme'`. */
  readonly tags: Record<string, string>;
}

/** The logger a hook receives (a pino child bound to the entry id); header values it is given are redacted. */
export interface HookLogger {
  debug(msg: string): void;
  debug(obj: object, msg?: string): void;
  info(msg: string): void;
  info(obj: object, msg?: string): void;
  warn(msg: string): void;
  warn(obj: object, msg?: string): void;
  error(msg: string): void;
  error(obj: object, msg?: string): void;
}

/**
 * A small key/value store shared by every worker of a deployment (in Redis, under the
 * deployment's prefix), for state hooks must share: a session map, a counter. Every key
 * expires: `ttlMs` defaults to 24 hours.
 */
export interface KeyValueStore {
  get(key: string): Promise<string | null>;
  set(key: string, value: string, options?: { ttlMs?: number }): Promise<void>;
  /** Adds 1 (or `by`) and returns the new value; the TTL is set when the key is created. */
  incr(key: string, options?: { by?: number; ttlMs?: number }): Promise<number>;
  delete(key: string): Promise<void>;
}

/** What a user hook receives: the replay's context, a logger and the shared store. */
export interface HookContext extends PipelineContext {
  readonly log: HookLogger;
  readonly store: KeyValueStore;
}

/** What `setup` receives, once, when the worker starts. */
export interface HookSetupContext {
  readonly log: HookLogger;
  readonly store: KeyValueStore;
  /** Names of the configured staging origins. */
  readonly origins: readonly string[];
}

export type PreHook = (
  request: OutgoingRequest,
  ctx: PipelineContext,
) => OutgoingRequest | null | undefined | void | Promise<OutgoingRequest | null | undefined | void>;

export type PostHook = (response: ReplayResponse, request: OutgoingRequest, ctx: PipelineContext) => void | Promise<void>;

/** A source of hooks: config rules, a user module, a built-in handler. */
export interface Pipeline {
  name?: string;
  pre?: PreHook;
  post?: PostHook;
  /** Whether `post` needs the response body; when no stage does, the worker discards it unread. */
  needsResponseBody?: boolean;
  close?: () => void | Promise<void>;
}

/**
 * What a hooks module exports (as its default export, or as named exports). `pre` may
 * change the request in place, return a new one, or return null to drop it; `post` sees
 * staging's answer. Both may be async. A `pre` that throws fails the entry (no retry); a
 * `post` that throws is logged and counted, and the replay still counts as done.
 */
export interface HookModule {
  setup?(ctx: HookSetupContext): void | Promise<void>;
  pre?(request: OutgoingRequest, ctx: HookContext): OutgoingRequest | null | undefined | void | Promise<OutgoingRequest | null | undefined | void>;
  post?(response: ReplayResponse, request: OutgoingRequest, ctx: HookContext): void | Promise<void>;
  close?(): void | Promise<void>;
  /** False when `post` never reads `response.body` (the worker then discards it unread). */
  needsResponseBody?: boolean;
}

/** Types a hooks module: `export default definePipeline({ pre(req, ctx) { … } })`. */
export function definePipeline<T extends HookModule>(hooks: T): T {
  return hooks;
}

/** Why a stage dropped a request. */
export type PipelineDropReason = 'rule' | 'sample' | 'hook';

/** Receives what the stages decided, for metrics; implemented by the runtime with prom-client. */
export interface PipelineObserver {
  /** A rule matched and ran its actions. */
  applied?(rule: string): void;
  /** A request was dropped, by a rule's name (or `hooks`) and why. */
  dropped?(by: string, reason: PipelineDropReason): void;
  /** A rule left part of its work undone because the input passed a bound; the request goes on unedited. */
  limited?(rule: string, reason: RuleLimitReason): void;
}

/** Why a rule skipped an edit: its cost would grow with the request beyond a fixed bound. */
export type RuleLimitReason = 'json_too_large' | 'json_too_deep';

export interface CompiledPipeline {
  /** Runs every `pre` in order; null means a stage dropped the request. */
  pre(request: OutgoingRequest, ctx: PipelineContext): Promise<OutgoingRequest | null>;
  /** Runs every `post` in order; the first error is thrown after all ran. */
  post(response: ReplayResponse, request: OutgoingRequest, ctx: PipelineContext): Promise<void>;
  readonly hasPre: boolean;
  readonly hasPost: boolean;
  readonly needsResponseBody: boolean;
  close(): Promise<void>;
}

/** Composes pipelines once; stages run in the order given. */
export function composePipeline(pipelines: readonly Pipeline[]): CompiledPipeline {
  const pres = pipelines.flatMap((p) => (p.pre ? [{ stage: p.name ?? 'hooks', run: p.pre }] : []));
  const posts = pipelines.flatMap((p) => (p.post ? [{ stage: p.name ?? 'hooks', run: p.post }] : []));
  // An error names the stage it came from; a request to replay later is not an error.
  const named = (stage: string, error: unknown) =>
    error instanceof ReplayLaterError || error instanceof PipelineStageError ? error : new PipelineStageError(stage, error);
  return {
    hasPre: pres.length > 0,
    hasPost: posts.length > 0,
    needsResponseBody: pipelines.some((p) => p.post && p.needsResponseBody !== false),
    async pre(request, ctx) {
      let current = request;
      for (const pre of pres) {
        let result: Awaited<ReturnType<PreHook>>;
        try {
          result = await pre.run(current, ctx);
        } catch (error) {
          throw named(pre.stage, error);
        }
        if (result === null) return null;
        if (result !== undefined) current = result;
      }
      return current;
    },
    async post(response, request, ctx) {
      // A flag, not `first !== undefined`: a hook that throws `undefined` (or null) still failed.
      let failed: { error: unknown } | null = null;
      for (const post of posts) {
        try {
          await post.run(response, request, ctx);
        } catch (error) {
          failed ??= { error: named(post.stage, error) };
        }
      }
      if (failed) throw failed.error;
    },
    async close() {
      for (const p of pipelines) {
        try {
          await p.close?.();
        } catch {
          // Every close runs even when one fails; a close error has nowhere useful to go.
        }
      }
    },
  };
}

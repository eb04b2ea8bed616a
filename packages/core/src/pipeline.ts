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
}

/** What a hook can see of the replay it runs in. */
export interface PipelineContext {
  readonly entryId: string;
  readonly attempt: number;
  readonly requestId: string | null;
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

/** Types a hook module: `export default definePipeline({ pre(req) { … } })`. */
export function definePipeline(pipeline: Pipeline): Pipeline {
  return pipeline;
}

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
  const pres = pipelines.flatMap((p) => (p.pre ? [p.pre] : []));
  const posts = pipelines.flatMap((p) => (p.post ? [p.post] : []));
  return {
    hasPre: pres.length > 0,
    hasPost: posts.length > 0,
    needsResponseBody: pipelines.some((p) => p.post && p.needsResponseBody !== false),
    async pre(request, ctx) {
      let current = request;
      for (const pre of pres) {
        const result = await pre(current, ctx);
        if (result === null) return null;
        if (result !== undefined) current = result;
      }
      return current;
    },
    async post(response, request, ctx) {
      let first: unknown;
      for (const post of posts) {
        try {
          await post(response, request, ctx);
        } catch (error) {
          first ??= error;
        }
      }
      if (first !== undefined) throw first;
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

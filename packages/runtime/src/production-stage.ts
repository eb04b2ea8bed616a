import type { Redis } from 'ioredis';
import type { Logger } from './logger.js';
import { Counter, Histogram, type Metric } from 'prom-client';
import {
  compileComparison,
  compileIdMapping,
  MappingPendingError,
  parseJsonBody,
  productionKeys,
  type CompareSettings,
  type CompiledIdMapping,
  type Config,
  type OutgoingRequest,
  type Pipeline,
  type PipelineContext,
  type ProductionKeys,
  type ReplayResponse,
} from '@mirrorplane/core';
import {
  decodeProductionResponse,
  keepStagingAnswer,
  pendingTtl,
  recordComparison,
  type ComparisonContext,
  type ProductionResponse,
} from './production-responses.js';
import { closeRedis, createRedis } from './redis.js';


/** What the stage decided, for metrics. */
export interface ProductionStageObserver {
  /** An ID was replaced (`waitedMs` > 0 when the entry waited for it first). */
  mapped(kind: string, waitedMs: number): void;
  /** The entry waits for a pending mapping. */
  waiting(kind: string): void;
  /** The wait limit passed: replayed with the production ID. */
  unmappedAfterTimeout(kind: string, waitedMs: number): void;
  /** Staging answered a learning request and the mapping was stored (or staging's half, until production's arrives). */
  learned(kind: string): void;
  compared(route: string, equal: boolean): void;
  /** Production's answer was not there yet: staging's is kept, and the intake compares when it comes. */
  comparisonDeferred(): void;
  /** Comparison wanted, but the request carries no request id to correlate. */
  noProductionResponse(): void;
}

export interface ProductionStageOptions {
  redis: Redis;
  keys: ProductionKeys;
  mapping: CompiledIdMapping | null;
  compare: CompareSettings | null;
  redact: ReadonlySet<string>;
  /** How long staging's answer is kept waiting for production's. */
  productionTtlMs: number;
  observer: ProductionStageObserver;
}

interface ReplayState {
  learner: number;
  /** production ID → staging ID, for the comparison. */
  ids: Map<string, string>;
}


/**
 * The pipeline stage for production responses: before the replay it substitutes known ID
 * mappings (or makes the entry wait for a pending one); after it, it learns new mappings from
 * staging's answer and compares staging's answer with production's.
 * It runs first, so ID patterns are written against production's paths.
 */
export function createProductionStage(options: ProductionStageOptions): Pipeline {
  const { redis, keys, mapping, observer } = options;
  const comparison: ComparisonContext | null = options.compare
    ? { settings: options.compare, comparison: compileComparison(options.compare), redact: options.redact, onCompared: (route, equal) => observer.compared(route, equal) }
    : null;
  // One state per attempt; the context object is the attempt's identity.
  const states = new WeakMap<PipelineContext, ReplayState>();

  async function pre(request: OutgoingRequest, ctx: PipelineContext): Promise<OutgoingRequest> {
    if (!mapping) return request;
    const state: ReplayState = { learner: mapping.learners.findIndex((l) => l.matches(request.method, request.path)), ids: new Map() };
    states.set(ctx, state);
    const json = mapping.usesJson ? parseJsonBody(request.headers, request.body) : undefined;
    const found: { use: (typeof mapping.uses)[number]; id: string }[] = [];
    for (const use of mapping.uses) for (const id of use.find(request, json)) found.push({ use, id });
    if (found.length === 0) return request;
    const mapKeys = [...new Set(found.map((f) => keys.idmap(f.use.kind, f.id)))];
    const values = await redis.mget(...mapKeys);
    const byKey = new Map(mapKeys.map((k, i) => [k, values[i] ?? null]));
    let jsonChanged = false;
    let waitedMs: number | null = null;
    const waited = async (): Promise<number> => {
      if (waitedMs !== null) return waitedMs;
      const now = Date.now();
      const key = keys.wait(ctx.entryId);
      // SET NX keeps the first wait's time; GET reads whichever time won.
      const replies = (await redis.multi().set(key, String(now), 'PX', mapping.settings.waitLimitMs + 600_000, 'NX').get(key).exec()) as [unknown, unknown][] | null;
      const first = Number(replies?.[1]?.[1] ?? now);
      waitedMs = Number.isFinite(first) ? Math.max(0, now - first) : 0;
      return waitedMs;
    };
    const decisions: string[] = [];
    for (const { use, id } of found) {
      const value = byKey.get(keys.idmap(use.kind, id));
      if (!value) continue; // Never seen in a production response: data that predates mirroring.
      if (value.startsWith('=')) {
        const stagingId = value.slice(1);
        if (use.replace(request, json, id, stagingId) && use.json) jsonChanged = true;
        state.ids.set(id, stagingId);
        decisions.push(`${use.kind}:${id}=${stagingId}`);
        observer.mapped(use.kind, waitedMs ?? 0);
        continue;
      }
      const ms = await waited();
      if (ms < mapping.settings.waitLimitMs) {
        observer.waiting(use.kind);
        throw new MappingPendingError(mapping.settings.waitDelayMs, use.kind, id);
      }
      decisions.push(`${use.kind}:${id} unmapped after ${ms} ms`);
      observer.unmappedAfterTimeout(use.kind, ms);
    }
    if (waitedMs !== null && waitedMs > 0) ctx.tags.idWaitedMs = String(waitedMs);
    if (decisions.length > 0) ctx.tags.idMapping = decisions.join(' ');
    // Only a body whose ID was replaced is serialized again; every other body stays byte-identical.
    if (jsonChanged && json !== undefined) request.body = Buffer.from(JSON.stringify(json), 'utf8');
    return request;
  }

  async function post(response: ReplayResponse, request: OutgoingRequest, ctx: PipelineContext): Promise<void> {
    const state = states.get(ctx);
    const requestId = ctx.requestId;
    if (!requestId) {
      // Without a request id nothing correlates this replay with production's answer.
      if (comparison) observer.noProductionResponse();
      return;
    }
    const learner = state && state.learner >= 0 && mapping ? mapping.learners[state.learner] : undefined;
    const stagingId = learner?.extract(response) ?? null;
    const multi = redis.multi().hgetallBuffer(keys.response(requestId));
    if (learner && stagingId && mapping) {
      multi.set(keys.learned(requestId), `${state!.learner}\n${stagingId}`, 'PX', pendingTtl(mapping));
    }
    const results = await multi.exec();
    const production: ProductionResponse | null = decodeProductionResponse(requestId, (results?.[0]?.[1] as Record<string, Buffer> | null) ?? null);
    if (learner && mapping) {
      const productionId = production ? learner.extract(production) : null;
      if (productionId && stagingId) {
        await redis.set(keys.idmap(learner.kind, productionId), `=${stagingId}`, 'PX', mapping.settings.ttlMs);
        state!.ids.set(productionId, stagingId);
        ctx.tags.idLearned = `${learner.kind}:${productionId}=${stagingId}`;
        observer.learned(learner.kind);
      } else if (stagingId) {
        // Production's answer is not here yet; the intake completes the mapping when it comes.
        ctx.tags.idLearned = `${learner.kind}:?=${stagingId}`;
        observer.learned(learner.kind);
      } else if (productionId) {
        // Staging did not create its twin: stop making others wait for it.
        const key = keys.idmap(learner.kind, productionId);
        if ((await redis.get(key)) === `?${requestId}`) await redis.del(key);
      }
    }
    if (!comparison) return;
    const meta = { entryId: ctx.entryId, method: request.method, path: request.path, ids: state?.ids ?? new Map<string, string>() };
    let answer = production;
    if (!answer) {
      // Production's answer usually arrives after the mirror copy: keep staging's until it does.
      answer = await keepStagingAnswer(redis, keys, options.productionTtlMs, requestId, { ...meta, staging: response });
      if (!answer) {
        observer.comparisonDeferred();
        return;
      }
    }
    const result = await recordComparison(redis, keys, comparison, answer, response, meta);
    ctx.tags.compare = result.equal ? 'match' : `mismatch ${result.paths.join(' ')}`.slice(0, 500);
  }

  return { name: 'production', pre, post, needsResponseBody: true };
}

/** The production stage with its Redis connection and metrics, for the pipeline builder. */
export function buildProductionStage(config: Config, logger: Logger): { pipeline: Pipeline; metrics: Metric[] } {
  const redis = createRedis(config, 'commands', logger);
  const ids = new Counter({ name: 'mirrorplane_worker_id_mappings_total', help: 'ID mapping decisions, by ID kind and outcome (mapped, waiting, unmapped_after_timeout, learned)', labelNames: ['kind', 'outcome'], registers: [] });
  const waited = new Histogram({ name: 'mirrorplane_worker_id_wait_seconds', help: 'How long entries waited for a pending ID mapping, by outcome', labelNames: ['outcome'], buckets: [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60], registers: [] });
  const compared = new Counter({ name: 'mirrorplane_worker_comparisons_total', help: 'Staging answers compared with production, by route and result (match, mismatch)', labelNames: ['route', 'result'], registers: [] });
  const missing = new Counter({ name: 'mirrorplane_worker_comparisons_skipped_total', help: 'Replays not compared: the request carries no request id', registers: [] });
  const deferred = new Counter({ name: 'mirrorplane_worker_comparisons_deferred_total', help: 'Replays whose comparison waits for production’s answer (the ingress compares when it arrives)', registers: [] });
  const stage = createProductionStage({
    redis,
    keys: productionKeys(config.prefix),
    mapping: config.idMapping ? compileIdMapping(config.idMapping) : null,
    compare: config.compare,
    redact: new Set(config.redactHeaders),
    productionTtlMs: config.productionResponses.ttlMs,
    observer: {
      mapped: (kind, ms) => {
        ids.inc({ kind, outcome: 'mapped' });
        if (ms > 0) waited.observe({ outcome: 'mapped' }, ms / 1000);
      },
      waiting: (kind) => ids.inc({ kind, outcome: 'waiting' }),
      unmappedAfterTimeout: (kind, ms) => {
        ids.inc({ kind, outcome: 'unmapped_after_timeout' });
        waited.observe({ outcome: 'unmapped_after_timeout' }, ms / 1000);
      },
      learned: (kind) => ids.inc({ kind, outcome: 'learned' }),
      compared: (route, equal) => compared.inc({ route, result: equal ? 'match' : 'mismatch' }),
      comparisonDeferred: () => deferred.inc(),
      noProductionResponse: () => missing.inc(),
    },
  });
  return {
    pipeline: { ...stage, close: () => closeRedis(redis) },
    metrics: [ids, waited, compared, missing, deferred],
  };
}

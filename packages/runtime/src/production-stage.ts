import type { Redis } from 'ioredis';
import type { Logger } from './logger.js';
import { Counter, Histogram, type Metric } from 'prom-client';
import {
  EntryCipher,
  compileComparison,
  errorMessage,
  compileIdMapping,
  contentCodings,
  MappingPendingError,
  MappingUnavailableError,
  productionKeys,
  RedisUnavailableError,
  parseJsonDocument,
  splitId,
  streamIdTime,
  withoutContentCoding,
  type BodyDecodingOutcome,
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
  sameRequest,
  keepStagingAnswer,
  openValue,
  pendingTtl,
  sealValue,
  recordComparison,
  type ComparisonContext,
  type ProductionResponse,
} from './production-responses.js';
import { closeRedis, createRedis } from './redis.js';

/** Errors of Redis or of the connection to it, as ioredis reports them (not our own bugs). */
function isRedisTrouble(error: unknown): boolean {
  if (error instanceof RedisUnavailableError) return true;
  if (!(error instanceof Error)) return false;
  const code = (error as { code?: unknown }).code;
  return (
    ['ReplyError', 'MaxRetriesPerRequestError', 'AbortError'].includes(error.name) ||
    (typeof code === 'string' && /^E[A-Z]+$/.test(code)) ||
    /^Connection is closed|Stream isn't writeable|Command timed out/.test(error.message)
  );
}

/**
 * Registers a create a worker starts as in flight, unless production's answer is already at
 * the intake (atomic with the intake's transaction, which removes it): requests received after
 * it that name an unknown ID of its kind wait for that answer. Old members are pruned here.
 * KEYS: production answer, in-flight set. ARGV: score, request id, prune-below score, TTL ms.
 */
const REGISTER_CREATE = `
if redis.call('exists', KEYS[1]) == 1 then return 0 end
redis.call('zadd', KEYS[2], ARGV[1], ARGV[2])
redis.call('zremrangebyscore', KEYS[2], '-inf', '(' .. ARGV[3])
redis.call('pexpire', KEYS[2], ARGV[4])
return 1`;

/**
 * An entry's receive time as a sorted-set score: the stream id's milliseconds, its sequence as
 * thousandths (a double keeps ~1e-4 at today's epoch), so entries of one millisecond keep order.
 */
export function entryScore(entryId: string): number {
  const id = splitId(entryId).id;
  const dash = id.indexOf('-');
  const seq = dash === -1 ? 0 : Number(id.slice(dash + 1));
  return streamIdTime(id) + Math.min(Number.isFinite(seq) ? seq : 0, 999) / 1000;
}

/** How long an entry stays marked as counted in `idmap:outcomes` (longer than any retry schedule). */
const COUNTED_TTL_MS = 86_400_000;

/** What the stage decided, for metrics. */
export interface ProductionStageObserver {
  /** An ID was replaced (`waitedMs` > 0 when the entry waited for it first). */
  mapped(kind: string, waitedMs: number): void;
  /** The entry waits for a pending mapping. */
  waiting(kind: string): void;
  /** The wait limit passed: replayed with the production ID. */
  unmappedAfterTimeout(kind: string, waitedMs: number, detail: { entryId: string; productionId: string; reason: 'pending' | 'create in flight' }): void;
  /** An ID never seen in a production answer, no create in flight before it: sent on as it is. */
  unknown(kind: string): void;
  /** A body whose Content-Encoding was undone (`decoded`) or could not be (`unsupported`, `too_large`, `corrupt`). */
  decoded(side: 'production' | 'staging' | 'request', outcome: BodyDecodingOutcome): void;
  /** Staging answered a learning request and the mapping was stored (or staging's half, until production's arrives). */
  learned(kind: string): void;
  compared(route: string, equal: boolean): void;
  /** Production's answer was not there yet: staging's is kept, and the intake compares when it comes. */
  comparisonDeferred(): void;
  /** Comparison wanted, but the request carries no request id to correlate. */
  noProductionResponse(): void;
  /** Production's answer under this request id is for another method or path (a reused x-request-id): not learned from, not compared. */
  uncorrelated(): void;
}

export interface ProductionStageOptions {
  redis: Redis;
  keys: ProductionKeys;
  mapping: CompiledIdMapping | null;
  compare: CompareSettings | null;
  redact: ReadonlySet<string>;
  /** How long staging's answer is kept waiting for production's. */
  productionTtlMs: number;
  /** Bound on a decoded body (`productionResponses.maxDecodedBytes`). */
  maxDecodedBytes: number;
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
    ? {
        settings: options.compare,
        comparison: compileComparison(options.compare, { maxDecodedBytes: options.maxDecodedBytes }),
        redact: options.redact,
        maxDecodedBytes: options.maxDecodedBytes,
        idKinds: mapping ? [...new Set(mapping.learners.map((l) => l.kind))] : [],
        onCompared: (route, equal) => observer.compared(route, equal),
        onDecoded: (side, outcome) => observer.decoded(side, outcome),
      }
    : null;
  const awaitCreatesMs = mapping?.settings.awaitCreatesMs ?? 0;
  const learnerKinds = mapping ? new Set(mapping.learners.map((l) => l.kind)) : new Set<string>();
  /** A mapping value opened; one that cannot be opened (another key) counts as unknown. */
  const openMapping = (key: string, value: string | null): string | null => {
    try {
      return openValue(keys, key, value);
    } catch {
      return null;
    }
  };
  // One state per attempt; the context object is the attempt's identity.
  const states = new WeakMap<PipelineContext, ReplayState>();

  async function pre(request: OutgoingRequest, ctx: PipelineContext): Promise<OutgoingRequest> {
    if (!mapping) return request;
    try {
      return await mapIds(mapping, request, ctx);
    } catch (error) {
      // A Redis hiccup is not the entry's fault: look again later, with nothing sent.
      if (isRedisTrouble(error)) throw new MappingUnavailableError(mapping.settings.waitDelayMs, error);
      throw error;
    }
  }

  async function mapIds(mapping: CompiledIdMapping, request: OutgoingRequest, ctx: PipelineContext): Promise<OutgoingRequest> {
    const state: ReplayState = { learner: mapping.learners.findIndex((l) => l.matches(request.method, request.path)), ids: new Map() };
    states.set(ctx, state);
    const score = entryScore(ctx.entryId);
    // Only entries with a stream id's time take part in the in-flight ordering.
    const ordered = awaitCreatesMs > 0 && Number.isFinite(score);
    // A create registers as in flight before anything else of this replay touches Redis: the
    // worker starts entries in stream order and one connection runs commands in order, so a
    // later entry's lookup on this worker sees it.
    const learner = mapping.learners[state.learner];
    const registered =
      learner && ctx.requestId && ordered
        ? redis.eval(
            REGISTER_CREATE,
            2,
            keys.response(ctx.requestId),
            keys.inflight(learner.kind),
            score,
            ctx.requestId,
            score - Math.max(awaitCreatesMs, pendingTtl(mapping)),
            pendingTtl(mapping),
          )
        : null;
    const json = mapping.usesJson ? parseJsonDocument(request.headers, request.body, options.maxDecodedBytes) : undefined;
    const found: { use: (typeof mapping.uses)[number]; id: string }[] = [];
    for (const use of mapping.uses) for (const id of use.find(request, json)) found.push({ use, id });
    if (found.length === 0) {
      await registered;
      return request;
    }
    const mapKeys = [...new Set(found.map((f) => keys.idmap(f.use.kind, f.id)))];
    const kinds = ordered ? [...new Set(found.map((f) => f.use.kind))].filter((k) => learnerKinds.has(k)) : [];
    const lookup = redis.multi().mget(...mapKeys);
    // Creates received before this entry (strictly), within the window, still without production's answer.
    for (const kind of kinds) lookup.zrangebyscore(keys.inflight(kind), `(${score - awaitCreatesMs}`, `(${score}`, 'LIMIT', 0, 1);
    const [replies] = await Promise.all([lookup.exec(), registered]);
    const failed = replies?.find(([error]) => error);
    if (!replies || failed)
      throw new RedisUnavailableError(`the ID lookup failed: ${failed ? errorMessage(failed[0]) : 'the transaction was discarded'}`, { cause: failed?.[0] });
    const values = replies[0]?.[1] as (string | null)[];
    const byKey = new Map(mapKeys.map((k, i) => [k, openMapping(k, values[i] ?? null)]));
    const inFlight = new Set(kinds.filter((_, i) => ((replies[i + 1]?.[1] as string[] | undefined) ?? []).length > 0));
    let jsonChanged = false;
    let waitedMs: number | null = null;
    const waited = async (): Promise<number> => {
      if (waitedMs !== null) return waitedMs;
      const now = Date.now();
      const key = keys.wait(ctx.entryId);
      // SET NX keeps the first wait's time; GET reads whichever time won.
      const replies = (await redis
        .multi()
        .set(key, String(now), 'PX', mapping.settings.waitLimitMs + 600_000, 'NX')
        .get(key)
        .exec()) as [unknown, unknown][] | null;
      const first = Number(replies?.[1]?.[1] ?? now);
      waitedMs = Number.isFinite(first) ? Math.max(0, now - first) : 0;
      return waitedMs;
    };
    const decisions: string[] = [];
    const unmapped: string[] = [];
    for (const { use, id } of found) {
      const value = byKey.get(keys.idmap(use.kind, id));
      if (!value && !inFlight.has(use.kind)) {
        // Never seen in a production response, and no create before it outstanding: data that
        // predates mirroring. Counted (once the entry goes), sent as it is.
        unmapped.push(`${use.kind}\tunknown`);
        continue;
      }
      const why = value ? 'pending' : 'create in flight';
      if (value?.startsWith('=')) {
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
        throw new MappingPendingError(mapping.settings.waitDelayMs, use.kind, id, why);
      }
      decisions.push(`${use.kind}:${id} unmapped after ${ms} ms`);
      unmapped.push(`${use.kind}\tunmapped`);
      observer.unmappedAfterTimeout(use.kind, ms, { entryId: ctx.entryId, productionId: id, reason: why });
    }
    // Counted once per request (entry), however many attempts reach this decision: SET NX
    // marks the entry counted, across workers and retries.
    if (unmapped.length > 0 && (await redis.set(keys.counted(ctx.entryId), '1', 'PX', COUNTED_TTL_MS, 'NX')) === 'OK') {
      for (const field of unmapped) if (field.endsWith('\tunknown')) observer.unknown(field.slice(0, field.indexOf('\t')));
      // Kept in Redis for `diff summary`, across workers.
      const count = redis.multi();
      for (const field of unmapped) count.hincrby(keys.idOutcomes, field, 1);
      await count.exec();
    }
    if (waitedMs !== null && waitedMs > 0) ctx.tags.idWaitedMs = String(waitedMs);
    if (decisions.length > 0) ctx.tags.idMapping = decisions.join(' ');
    // Only a body whose ID was replaced changes, and only in the ID's token (spliced in the text).
    if (jsonChanged && json !== undefined) {
      request.body = Buffer.from(json.text, 'utf8');
      // The body was read decoded; it is sent decoded.
      if (contentCodings(request.headers).length > 0) request.headers = withoutContentCoding(request.headers);
    }
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
    // Learning reads staging's answer decoded (parseJsonBody undoes its Content-Encoding).
    const stagingId = learner?.extract(response) ?? null;
    const multi = redis.multi().hgetallBuffer(keys.response(requestId));
    if (learner && stagingId && mapping) {
      multi.set(keys.learned(requestId), sealValue(keys, keys.learned(requestId), `${state!.learner}\n${stagingId}`), 'PX', pendingTtl(mapping));
    }
    const results = await multi.exec();
    let production: ProductionResponse | null = decodeProductionResponse(requestId, (results?.[0]?.[1] as Record<string, Buffer> | null) ?? null, keys);
    // An answer stored under this request id for another request (a client reusing its
    // x-request-id) teaches nothing and is compared with nothing: this replay waits for its own.
    if (production && !sameRequest(production, ctx.mirrored.method, ctx.mirrored.target)) {
      ctx.tags.uncorrelated = `production answered ${production.method ?? '?'} ${production.path ?? '?'} under this request id`.slice(0, 500);
      observer.uncorrelated();
      production = null;
    }
    /** Staging's new ID paired with production's, whichever way production's answer reached us. */
    const learnFrom = async (answer: ProductionResponse): Promise<void> => {
      if (!learner || !mapping || !stagingId) return;
      const productionId = learner.extract(answer);
      if (!productionId || state!.ids.get(productionId) === stagingId) return;
      const mapKey = keys.idmap(learner.kind, productionId);
      await redis.set(mapKey, sealValue(keys, mapKey, `=${stagingId}`), 'PX', mapping.settings.ttlMs);
      state!.ids.set(productionId, stagingId);
      ctx.tags.idLearned = `${learner.kind}:${productionId}=${stagingId}`;
    };
    if (learner && mapping) {
      const productionId = production ? learner.extract(production) : null;
      if (production && stagingId) {
        await learnFrom(production);
        observer.learned(learner.kind);
      } else if (stagingId) {
        // Production's answer is not here yet; the intake completes the mapping when it comes.
        ctx.tags.idLearned = `${learner.kind}:?=${stagingId}`;
        observer.learned(learner.kind);
      } else if (productionId) {
        // Staging did not create its twin: stop making others wait for it.
        const key = keys.idmap(learner.kind, productionId);
        if (openMapping(key, await redis.get(key)) === `?${requestId}`) await redis.del(key);
      }
    }
    if (!comparison) return;
    // An HTTP/2 answer's trailers (grpc-status, grpc-message) are compared as fields of the answer.
    if (response.trailers !== undefined && response.trailers.length > 0) response = { ...response, headers: [...response.headers, ...response.trailers] };
    const meta = { entryId: ctx.entryId, method: request.method, path: request.path, ids: state?.ids ?? new Map<string, string>() };
    if (!production) {
      // Production's answer usually arrives after the mirror copy: keep staging's until it does.
      production = await keepStagingAnswer(redis, keys, options.productionTtlMs, requestId, { ...meta, target: ctx.mirrored.target, staging: response });
      if (!production) {
        observer.comparisonDeferred();
        return;
      }
      // It arrived between our two looks: the intake completed the mapping from our learned
      // half, and this comparison reads it the same way (whoever compares, one result).
      await learnFrom(production);
    }
    const result = await recordComparison(redis, keys, comparison, production, response, meta);
    ctx.tags.compare = result.equal ? 'match' : `mismatch ${result.paths.join(' ')}`.slice(0, 500);
  }

  return { name: 'production', pre, post, needsResponseBody: true };
}

/** The production stage with its Redis connection and metrics, for the pipeline builder. */
export function buildProductionStage(config: Config, logger: Logger): { pipeline: Pipeline; metrics: Metric[] } {
  const redis = createRedis(config, 'commands', logger);
  const ids = new Counter({
    name: 'mirrorplane_worker_id_mappings_total',
    help: 'ID mapping decisions, by ID kind and outcome (mapped, waiting, unmapped_after_timeout, unknown, learned)',
    labelNames: ['kind', 'outcome'],
    registers: [],
  });
  const waited = new Histogram({
    name: 'mirrorplane_worker_id_wait_seconds',
    help: 'How long entries waited for a pending ID mapping, by outcome',
    labelNames: ['outcome'],
    buckets: [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60],
    registers: [],
  });
  const compared = new Counter({
    name: 'mirrorplane_worker_comparisons_total',
    help: 'Staging answers compared with production, by route and result (match, mismatch)',
    labelNames: ['route', 'result'],
    registers: [],
  });
  const missing = new Counter({
    name: 'mirrorplane_worker_comparisons_skipped_total',
    help: 'Replays not compared: the request carries no request id',
    registers: [],
  });
  const decodings = new Counter({
    name: 'mirrorplane_worker_body_decodings_total',
    help: 'Bodies with a Content-Encoding read by comparison, by side and outcome (decoded, unsupported, too_large, corrupt)',
    labelNames: ['side', 'outcome'],
    registers: [],
  });
  const uncorrelated = new Counter({
    name: 'mirrorplane_worker_comparisons_uncorrelated_total',
    help: 'Replays whose production answer (by request id) is for another method or path: neither learned from nor compared',
    registers: [],
  });
  const deferred = new Counter({
    name: 'mirrorplane_worker_comparisons_deferred_total',
    help: 'Replays whose comparison waits for production’s answer (the ingress compares when it arrives)',
    registers: [],
  });
  const stage = createProductionStage({
    redis,
    keys: productionKeys(config.prefix, EntryCipher.fromSpec(config.dataKey)),
    mapping: config.idMapping ? compileIdMapping(config.idMapping, { maxDecodedBytes: config.productionResponses.maxDecodedBytes }) : null,
    compare: config.compare,
    redact: new Set(config.redactHeaders),
    productionTtlMs: config.productionResponses.ttlMs,
    maxDecodedBytes: config.productionResponses.maxDecodedBytes,
    observer: {
      mapped: (kind, ms) => {
        ids.inc({ kind, outcome: 'mapped' });
        if (ms > 0) waited.observe({ outcome: 'mapped' }, ms / 1000);
      },
      waiting: (kind) => ids.inc({ kind, outcome: 'waiting' }),
      unmappedAfterTimeout: (kind, ms, detail) => {
        ids.inc({ kind, outcome: 'unmapped_after_timeout' });
        waited.observe({ outcome: 'unmapped_after_timeout' }, ms / 1000);
        logger.warn(
          { entryId: detail.entryId, kind, productionId: detail.productionId, reason: detail.reason, ms },
          'replayed with an unmapped production ID: the wait limit passed',
        );
      },
      unknown: (kind) => ids.inc({ kind, outcome: 'unknown' }),
      decoded: (side, outcome) => {
        decodings.inc({ side, outcome });
        if (outcome !== 'decoded') logger.warn({ side, outcome }, 'a body could not be decoded for comparison');
      },
      learned: (kind) => ids.inc({ kind, outcome: 'learned' }),
      compared: (route, equal) => compared.inc({ route, result: equal ? 'match' : 'mismatch' }),
      comparisonDeferred: () => deferred.inc(),
      noProductionResponse: () => missing.inc(),
      uncorrelated: () => {
        uncorrelated.inc();
        logger.warn('production answer under a request id is for another method or path (reused x-request-id): not learned from, not compared');
      },
    },
  });
  return {
    pipeline: { ...stage, close: () => closeRedis(redis) },
    metrics: [ids, waited, compared, missing, deferred, decodings, uncorrelated],
  };
}

import type { Redis } from 'ioredis';
import {
  decodeHeaders,
  encodeHeaders,
  IntakeError,
  parseJsonBody,
  redactHeaders,
  RedisUnavailableError,
  routeOf,
  type CompareSettings,
  type CompiledComparison,
  type CompiledIdMapping,
  type ObservedResponse,
  type ProductionKeys,
  type ProductionResponsesSettings,
} from '@mirrorplane/core';

/**
 * Production responses and ID mappings in Redis, shared by every ingress and worker of a
 * deployment. Their keys are named in core's keys.ts (`productionKeys`).
 */
/** A production response as the intake received it. */
export interface ProductionResponse extends ObservedResponse {
  requestId: string;
  method: string | null;
  path: string | null;
}

export async function readProductionResponse(redis: Redis, keys: ProductionKeys, requestId: string): Promise<ProductionResponse | null> {
  const raw = await redis.hgetallBuffer(keys.response(requestId));
  return decodeProductionResponse(requestId, raw);
}

export function decodeProductionResponse(requestId: string, raw: Record<string, Buffer> | null): ProductionResponse | null {
  if (!raw || raw.s === undefined) return null;
  return {
    requestId,
    status: Number(raw.s.toString()),
    headers: raw.h ? decodeHeaders(raw.h) : [],
    body: raw.b ?? Buffer.alloc(0),
    method: raw.m ? raw.m.toString() : null,
    path: raw.u ? raw.u.toString('latin1') : null,
  };
}

/**
 * How long an ID stays pending: long enough for a slow staging replay (with its retries),
 * short enough that a create staging never completes stops making others wait.
 */
export function pendingTtl(mapping: CompiledIdMapping): number {
  return Math.max(600_000, mapping.settings.waitLimitMs * 10);
}


const STATUS = /^[1-5]\d\d$/;

/**
 * Parses an intake request: the production response body is the request body; the rest comes
 * in headers (`x-mirrorplane-request-id`, `x-mirrorplane-status`, optional
 * `x-mirrorplane-method` / `x-mirrorplane-path` of the production request, optional
 * `x-mirrorplane-headers` with the production response headers as a JSON array of
 * `[name, value, …]`, and `content-type` as production's content type when that array lacks it).
 */
export function parseIntake(rawHeaders: readonly string[], body: Buffer): ProductionResponse {
  const get = (name: string) => {
    for (let i = 0; i < rawHeaders.length; i += 2) if ((rawHeaders[i] as string).toLowerCase() === name) return rawHeaders[i + 1] as string;
    return undefined;
  };
  const requestId = get('x-mirrorplane-request-id') ?? get('x-request-id');
  if (!requestId) throw new IntakeError(400, 'x-mirrorplane-request-id: required (the x-request-id of the production request)');
  if (requestId.length > 256) throw new IntakeError(400, 'x-mirrorplane-request-id: longer than 256 characters');
  const status = get('x-mirrorplane-status');
  if (!status || !STATUS.test(status)) throw new IntakeError(400, `x-mirrorplane-status: expected the production status (100-599), got ${JSON.stringify(status ?? null)}`);
  let headers: string[] = [];
  const encoded = get('x-mirrorplane-headers');
  if (encoded) {
    let parsed: unknown;
    try {
      parsed = JSON.parse(encoded);
    } catch {
      throw new IntakeError(400, 'x-mirrorplane-headers: expected a JSON array of [name, value, …]');
    }
    if (!Array.isArray(parsed) || parsed.length % 2 !== 0 || !parsed.every((v) => typeof v === 'string' && !v.includes('\n'))) {
      throw new IntakeError(400, 'x-mirrorplane-headers: expected a JSON array of [name, value, …] strings');
    }
    headers = parsed as string[];
  }
  const contentType = get('content-type');
  if (contentType && !headers.some((h, i) => i % 2 === 0 && h.toLowerCase() === 'content-type')) headers.push('content-type', contentType);
  return { requestId, status: Number(status), headers, body, method: get('x-mirrorplane-method') ?? null, path: get('x-mirrorplane-path') ?? null };
}

/** What the comparison needs besides the two answers. */
export interface ComparisonContext {
  settings: CompareSettings;
  comparison: CompiledComparison;
  redact: ReadonlySet<string>;
  onCompared?: (route: string, equal: boolean) => void;
}

/** Staging's answer as kept in Redis until production's arrives. */
interface StagingAnswer {
  entryId: string;
  method: string;
  path: string;
  status: number;
  headers: string[];
  body: string;
  ids: [string, string][];
}

const DIFF_BODY_KEPT = 4096;

function bodyForDiff(headers: readonly string[], body: Buffer): string {
  const json = parseJsonBody(headers, body);
  if (json !== undefined) return JSON.stringify(json).slice(0, DIFF_BODY_KEPT);
  return body.subarray(0, DIFF_BODY_KEPT).toString('utf8');
}

/**
 * Compares staging's answer with production's and records the result in Redis: per-route
 * match/mismatch counts, counts per differing path, and for a mismatch a diff record with
 * both sides (headers redacted). Returns the route and whether the answers matched.
 */
export async function recordComparison(
  redis: Redis,
  keys: ProductionKeys,
  ctx: ComparisonContext,
  production: ProductionResponse,
  staging: ObservedResponse,
  meta: { entryId: string; method: string; path: string; ids?: ReadonlyMap<string, string> },
): Promise<{ route: string; equal: boolean; paths: string[] }> {
  const result = ctx.comparison.compare(production, staging, meta.ids);
  const route = routeOf(production.method ?? meta.method, production.path ?? meta.path);
  const multi = redis.multi().hincrby(keys.diffRoutes, `${route}\t${result.equal ? 'match' : 'mismatch'}`, 1);
  if (!result.equal) {
    for (const d of result.differences) multi.hincrby(keys.diffPaths, `${route}\t${d.path}`, 1);
    const record = {
      at: new Date().toISOString(),
      entryId: meta.entryId,
      requestId: production.requestId,
      route,
      differences: result.differences,
      production: { status: production.status, headers: redactHeaders(production.headers, ctx.redact), body: bodyForDiff(production.headers, production.body) },
      staging: { status: staging.status, headers: redactHeaders(staging.headers, ctx.redact), body: bodyForDiff(staging.headers, staging.body) },
    };
    multi.lpush(keys.diffs, JSON.stringify(record)).ltrim(keys.diffs, 0, Math.max(0, ctx.settings.keepDiffs - 1));
  }
  await multi.exec();
  ctx.onCompared?.(route, result.equal);
  return { route, equal: result.equal, paths: result.differences.map((d) => d.path) };
}

/**
 * Keeps staging's answer until production's arrives (the usual order: the mirror copy leaves
 * the proxy before production has answered). Whoever deletes the kept answer — the intake
 * when production's arrives, or this worker when it already has — compares, exactly once.
 * Returns production's answer when it turned out to be there already and this caller won.
 */
export async function keepStagingAnswer(
  redis: Redis,
  keys: ProductionKeys,
  ttlMs: number,
  requestId: string,
  answer: { entryId: string; method: string; path: string; staging: ObservedResponse; ids: ReadonlyMap<string, string> },
): Promise<ProductionResponse | null> {
  const key = keys.stagingAnswer(requestId);
  const kept: StagingAnswer = {
    entryId: answer.entryId,
    method: answer.method,
    path: answer.path,
    status: answer.staging.status,
    headers: [...answer.staging.headers],
    body: answer.staging.body.toString('base64'),
    ids: [...answer.ids],
  };
  const replies = await redis.multi().set(key, JSON.stringify(kept), 'PX', ttlMs).hgetallBuffer(keys.response(requestId)).exec();
  const production = decodeProductionResponse(requestId, (replies?.[1]?.[1] as Record<string, Buffer> | null) ?? null);
  if (!production) return null;
  return (await redis.del(key)) === 1 ? production : null;
}

/**
 * Stores a production response with its TTL and does the intake's part of ID mapping: a
 * response to a learning request marks its new ID as pending (so requests that use it wait
 * for staging's ID), or completes the mapping when staging already answered.
 */
export async function storeProductionResponse(
  redis: Redis,
  keys: ProductionKeys,
  settings: ProductionResponsesSettings,
  mapping: CompiledIdMapping | null,
  response: ProductionResponse,
  compare: ComparisonContext | null = null,
): Promise<void> {
  const key = keys.response(response.requestId);
  const fields: (string | Buffer)[] = ['s', String(response.status), 'h', encodeHeaders(response.headers), 'b', response.body];
  if (response.method) fields.push('m', response.method);
  if (response.path) fields.push('u', Buffer.from(response.path, 'latin1'));
  const multi = redis.multi().del(key).hset(key, ...(fields as [string, string])).pexpire(key, settings.ttlMs);
  if (mapping) multi.get(keys.learned(response.requestId));
  const results = await multi.exec();
  const failed = results?.find(([error]) => error);
  if (!results || failed) throw new RedisUnavailableError('storing the production response failed: the transaction was discarded', { cause: failed?.[0] });
  if (compare) await compareKeptAnswer(redis, keys, compare, response);
  if (!mapping) return;
  const learned = results[3]?.[1] as string | null;
  const ttl = mapping.settings.ttlMs;
  if (learned) {
    const [index, stagingId] = learned.split('\n') as [string, string];
    const learner = mapping.learners[Number(index)];
    const productionId = learner?.extract(response);
    if (learner && productionId) await redis.set(keys.idmap(learner.kind, productionId), `=${stagingId}`, 'PX', ttl);
    return;
  }
  if (response.method && response.path) {
    for (const learner of mapping.learners) {
      if (!learner.matches(response.method, response.path)) continue;
      const productionId = learner.extract(response);
      // NX: a mapping staging already completed is never turned back into pending.
      if (productionId) await redis.set(keys.idmap(learner.kind, productionId), `?${response.requestId}`, 'PX', pendingTtl(mapping), 'NX');
      break;
    }
  }
}

/** The intake's half of `keepStagingAnswer`: staging answered first; compare now, once. */
async function compareKeptAnswer(redis: Redis, keys: ProductionKeys, ctx: ComparisonContext, production: ProductionResponse): Promise<void> {
  const key = keys.stagingAnswer(production.requestId);
  const text = await redis.get(key);
  if (text === null || (await redis.del(key)) !== 1) return;
  let kept: StagingAnswer;
  try {
    kept = JSON.parse(text) as StagingAnswer;
  } catch {
    return;
  }
  await recordComparison(redis, keys, ctx, production, { status: kept.status, headers: kept.headers, body: Buffer.from(kept.body, 'base64') }, {
    entryId: kept.entryId,
    method: kept.method,
    path: kept.path,
    ids: new Map(kept.ids),
  });
}

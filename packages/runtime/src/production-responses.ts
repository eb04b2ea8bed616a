import { isUtf8 } from 'node:buffer';
import type { Redis } from 'ioredis';
import {
  DEFAULT_MAX_DECODED_BYTES,
  decodeBody,
  withoutContentCoding,
  type BodyDecodingOutcome,
  decodeHeaders,
  headerValue,
  encodeHeaders,
  errorMessage,
  IntakeError,
  parseJsonBody,
  redactHeaders,
  RedisUnavailableError,
  routeOf,
  OTHER_ROUTE,
  type CompareSettings,
  type CompiledComparison,
  type CompiledIdMapping,
  type ObservedResponse,
  type ProductionKeys,
  type ProductionResponsesSettings,
} from '@mirrorplane/core';

/**
 * Production responses and ID mappings in Redis, shared by every ingress and worker of a
 * deployment. Their keys are named in core's keys.ts (`productionKeys`): with
 * MIRRORPLANE_DATA_KEY (`keys.cipher`) every payload is sealed, bound to its key name.
 */

/** A production response as the intake received it. */
export interface ProductionResponse extends ObservedResponse {
  requestId: string;
  method: string | null;
  path: string | null;
  /**
   * The sender says the answer did not go out whole (`x-mirrorplane-cut: 1`: closed early, or
   * cut at its size limit): it only marks the request answered; nothing is learned or compared.
   */
  cut?: boolean;
}

/** A string value as stored under `key`: sealed when the keys carry a cipher. */
export function sealValue(keys: ProductionKeys, key: string, value: string): string {
  return keys.cipher ? keys.cipher.sealText(value, key) : value;
}

/** A string value read from `key`, opened when sealed. */
export function openValue(keys: ProductionKeys, key: string, value: string | null): string | null {
  return value === null || !keys.cipher ? value : keys.cipher.openText(value, key);
}

export async function readProductionResponse(redis: Redis, keys: ProductionKeys, requestId: string): Promise<ProductionResponse | null> {
  const raw = await redis.hgetallBuffer(keys.response(requestId));
  return decodeProductionResponse(requestId, raw, keys);
}

/** Length-prefixed parts, for the sealed `e` field of a production response. */
function joinParts(parts: readonly Buffer[]): Buffer {
  const out: Buffer[] = [];
  for (const p of parts) {
    const n = Buffer.allocUnsafe(4);
    n.writeUInt32BE(p.length);
    out.push(n, p);
  }
  return Buffer.concat(out);
}

function splitParts(buffer: Buffer, count: number): Buffer[] {
  const out: Buffer[] = [];
  let at = 0;
  for (let i = 0; i < count && at + 4 <= buffer.length; i++) {
    const n = buffer.readUInt32BE(at);
    out.push(buffer.subarray(at + 4, at + 4 + n));
    at += 4 + n;
  }
  return out;
}

/**
 * A stored production response (the hash's fields), or null when there is none. A sealed one
 * (field `e`) is opened with `keys.cipher`; one this process cannot open (no key, another key,
 * altered) is treated as absent: the comparison and the mapping wait or skip, as for a late answer.
 */
export function decodeProductionResponse(requestId: string, raw: Record<string, Buffer> | null, keys?: ProductionKeys): ProductionResponse | null {
  if (!raw || raw.s === undefined) return null;
  const status = raw.s;
  if (raw.e !== undefined) {
    if (!keys?.cipher) return null;
    let parts: Buffer[];
    try {
      parts = splitParts(keys.cipher.openBlob(raw.e, keys.response(requestId)), 3);
    } catch {
      return null;
    }
    const [h, b, u] = parts;
    raw = { ...raw, h: h ?? Buffer.alloc(0), b: b ?? Buffer.alloc(0), ...(u && u.length > 0 ? { u } : {}) };
  }
  return {
    requestId,
    status: Number(status.toString()),
    headers: raw.h ? decodeHeaders(raw.h) : [],
    body: raw.b ?? Buffer.alloc(0),
    method: raw.m ? raw.m.toString() : null,
    path: raw.u ? raw.u.toString('latin1') : null,
  };
}

/** The path of a request target, without its query. */
function pathOf(target: string): string {
  const q = target.indexOf('?');
  return q === -1 ? target : target.slice(0, q);
}

/**
 * Whether production's answer is to the request `method target` (the mirrored request): its
 * method and path (query aside) agree, where the intake was told them. An answer that does not
 * is another request's under a reused request id.
 */
export function sameRequest(answer: { method: string | null; path: string | null }, method: string, target: string): boolean {
  if (answer.method !== null && answer.method.toUpperCase() !== method.toUpperCase()) return false;
  if (answer.path !== null && pathOf(answer.path) !== pathOf(target)) return false;
  return true;
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
export function parseIntake(rawHeaders: readonly string[], body: Buffer, maxDecodedBytes: number = DEFAULT_MAX_DECODED_BYTES): ProductionResponse {
  const get = (name: string): string | undefined => headerValue(rawHeaders, name) ?? undefined;
  const requestId = get('x-mirrorplane-request-id') ?? get('x-request-id');
  if (!requestId) throw new IntakeError(400, 'x-mirrorplane-request-id: required (the x-request-id of the production request)');
  if (requestId.length > 256) throw new IntakeError(400, 'x-mirrorplane-request-id: longer than 256 characters');
  const status = get('x-mirrorplane-status');
  if (!status || !STATUS.test(status))
    throw new IntakeError(400, `x-mirrorplane-status: expected the production status (100-599), got ${JSON.stringify(status ?? null)}`);
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
  // The intake request's own Content-Encoding (a sender compressing its uploads) is undone
  // here; one that cannot be is refused, naming it (never stored as if plain).
  const ownCoding = get('content-encoding');
  if (ownCoding) {
    const decoded = decodeBody(['content-encoding', ownCoding], body, maxDecodedBytes);
    if (!decoded.ok) {
      const status = decoded.kind === 'unsupported' ? 415 : decoded.kind === 'too_large' ? 413 : 400;
      throw new IntakeError(status, `content-encoding: ${decoded.message}${decoded.kind === 'unsupported' ? '; send gzip, deflate, br or no coding' : ''}`);
    }
    body = decoded.body;
  }
  const cut = get('x-mirrorplane-cut');
  if (cut !== undefined && cut !== '1' && cut !== '0') throw new IntakeError(400, `x-mirrorplane-cut: expected 1 or 0, got ${JSON.stringify(cut)}`);
  const contentType = get('content-type');
  if (contentType && headerValue(headers, 'content-type') === null) headers.push('content-type', contentType);
  return {
    requestId,
    status: Number(status),
    headers,
    body,
    method: get('x-mirrorplane-method') || null,
    path: get('x-mirrorplane-path') || null,
    ...(cut === '1' && { cut: true }),
  };
}

/** What the comparison needs besides the two answers. */
export interface ComparisonContext {
  settings: CompareSettings;
  comparison: CompiledComparison;
  redact: ReadonlySet<string>;
  /** Bound on a decoded body (`productionResponses.maxDecodedBytes`). */
  maxDecodedBytes: number;
  onCompared?: (route: string, equal: boolean) => void;
  /** A body whose Content-Encoding could not be undone (`unsupported`, `too_large`, `corrupt`), or was (`decoded`). */
  onDecoded?: (side: 'production' | 'staging', outcome: BodyDecodingOutcome) => void;
  /**
   * The ID kinds of `idMapping`: string values of production's JSON answer that Redis maps to
   * a staging ID (any kind) compare equal to it, also when the request did not name them.
   */
  idKinds?: readonly string[];
}

/** At most this many distinct string values of one answer are looked up as production IDs. */
export const MAX_LOOKED_UP_IDS = 256;

/** Distinct string (and integer) leaves of a JSON value, at most `max`. */
function jsonLeaves(value: unknown, max: number, out = new Set<string>()): Set<string> {
  if (out.size >= max) return out;
  if (typeof value === 'string' && value !== '') out.add(value);
  else if (typeof value === 'number' && Number.isSafeInteger(value)) out.add(String(value));
  else if (Array.isArray(value)) for (const v of value) jsonLeaves(v, max, out);
  else if (value !== null && typeof value === 'object') for (const v of Object.values(value)) jsonLeaves(v, max, out);
  return out;
}

/**
 * `ids` plus the mappings Redis holds for values of production's answer (lists, embedded
 * objects: IDs the request did not name). One MGET; only for JSON answers with ID kinds.
 */
async function withMappedValues(
  redis: Redis,
  keys: ProductionKeys,
  ctx: ComparisonContext,
  production: ObservedResponse,
  ids: ReadonlyMap<string, string>,
): Promise<ReadonlyMap<string, string>> {
  const kinds = ctx.idKinds ?? [];
  if (kinds.length === 0) return ids;
  const json = parseJsonBody(production.headers, production.body, ctx.maxDecodedBytes);
  if (json === undefined) return ids;
  const values = [...jsonLeaves(json, MAX_LOOKED_UP_IDS)].filter((v) => !ids.has(v));
  if (values.length === 0) return ids;
  const lookups = values.flatMap((v) => kinds.map((k) => [v, keys.idmap(k, v)] as const));
  const found = await redis.mget(...lookups.map(([, key]) => key));
  const out = new Map(ids);
  lookups.forEach(([v, key], i) => {
    let value: string | null;
    try {
      value = openValue(keys, key, found[i] ?? null);
    } catch {
      value = null; // sealed under another key: unknown, like a missing mapping
    }
    if (value?.startsWith('=') && !out.has(v)) out.set(v, value.slice(1));
  });
  return out;
}

/**
 * A response as comparison reads it: its body decoded per `Content-Encoding` (bounded), and
 * then without `Content-Encoding`/`Content-Length`. When the body cannot be decoded the
 * response stays as received and `problem` says why.
 */
export function decodedResponse<T extends ObservedResponse>(
  response: T,
  maxBytes: number,
): { response: T; outcome: BodyDecodingOutcome; problem: string | null } {
  // A staging answer cut at RESPONSE_BODY_LIMIT decodes as far as it goes.
  const decoding = decodeBody(response.headers, response.body, maxBytes, { partial: (response as { truncated?: boolean }).truncated === true });
  if (decoding.kind === 'identity') return { response, outcome: 'identity', problem: null };
  if (!decoding.ok) return { response, outcome: decoding.kind, problem: decoding.message };
  return { response: { ...response, headers: withoutContentCoding(response.headers), body: decoding.body }, outcome: 'decoded', problem: null };
}

/** Staging's answer as kept in Redis until production's arrives. */
interface StagingAnswer {
  entryId: string;
  method: string;
  path: string;
  /** The mirrored request's target (before ID mapping), to check production's answer is to it. */
  target?: string;
  status: number;
  headers: string[];
  body: string;
  ids: [string, string][];
  /** Staging's body was cut at RESPONSE_BODY_LIMIT. */
  truncated?: boolean;
}

const DIFF_BODY_KEPT = 4096;

function bodyForDiff(headers: readonly string[], body: Buffer, maxDecodedBytes: number): string {
  const json = parseJsonBody(headers, body, maxDecodedBytes);
  if (json !== undefined) return JSON.stringify(json).slice(0, DIFF_BODY_KEPT);
  const kept = body.subarray(0, DIFF_BODY_KEPT);
  // The cut may split a character: up to 3 bytes less is still text.
  for (let drop = 0; drop <= Math.min(3, kept.length); drop++) {
    const text = kept.subarray(0, kept.length - drop);
    if (isUtf8(text)) return text.toString('utf8');
    if (kept.length < DIFF_BODY_KEPT) break;
  }
  // Bytes that are not text (an undecodable coded body, an image) are shown as base64, not as mojibake.
  return `base64:${kept.toString('base64')}`;
}

/**
 * The route a comparison counts under: its own while fewer than `maxRoutes - 1` distinct routes
 * were seen (kept in a set), `OTHER_ROUTE` after (so at most `maxRoutes` names, the bucket included). KEYS: route set. ARGV: route, cap, other.
 */
const BOUNDED_ROUTE = `
if redis.call('sismember', KEYS[1], ARGV[1]) == 1 then return ARGV[1] end
if redis.call('scard', KEYS[1]) < tonumber(ARGV[2]) - 1 then
  redis.call('sadd', KEYS[1], ARGV[1])
  return ARGV[1]
end
return ARGV[3]`;

/**
 * Compares staging's answer with production's and records the result in Redis: per-route
 * match/mismatch counts, counts per differing path, and for a mismatch a diff record with
 * both sides (headers redacted). Returns the route and whether the answers matched.
 */
export async function recordComparison(
  redis: Redis,
  keys: ProductionKeys,
  ctx: ComparisonContext,
  received: ProductionResponse,
  stagingReceived: ObservedResponse,
  meta: { entryId: string; method: string; path: string; ids?: ReadonlyMap<string, string> },
): Promise<{ route: string; equal: boolean; paths: string[] }> {
  // Both sides are compared decoded: gzip from staging equals plain JSON from production.
  const p = decodedResponse(received, ctx.maxDecodedBytes);
  const s = decodedResponse(stagingReceived, ctx.maxDecodedBytes);
  if (p.outcome !== 'identity') ctx.onDecoded?.('production', p.outcome);
  if (s.outcome !== 'identity') ctx.onDecoded?.('staging', s.outcome);
  const production = p.response;
  const staging = s.response;
  const ids = await withMappedValues(redis, keys, ctx, production, meta.ids ?? new Map());
  const result = ctx.comparison.compare(production, staging, ids);
  const route = (await redis.eval(
    BOUNDED_ROUTE,
    1,
    keys.diffRouteNames,
    routeOf(production.method ?? meta.method, production.path ?? meta.path),
    ctx.settings.maxRoutes,
    OTHER_ROUTE,
  )) as string;
  const multi = redis.multi().hincrby(keys.diffRoutes, `${route}\t${result.equal ? 'match' : 'mismatch'}`, 1);
  if (!result.equal) {
    for (const d of result.differences) multi.hincrby(keys.diffPaths, `${route}\t${d.path}`, 1);
    const record = {
      at: new Date().toISOString(),
      entryId: meta.entryId,
      requestId: production.requestId,
      route,
      differences: result.differences,
      ...((p.problem || s.problem) && { decoding: { ...(p.problem && { production: p.problem }), ...(s.problem && { staging: s.problem }) } }),
      production: {
        status: production.status,
        headers: redactHeaders(production.headers, ctx.redact),
        body: bodyForDiff(production.headers, production.body, ctx.maxDecodedBytes),
      },
      staging: {
        status: staging.status,
        headers: redactHeaders(staging.headers, ctx.redact),
        body: bodyForDiff(staging.headers, staging.body, ctx.maxDecodedBytes),
      },
    };
    multi.lpush(keys.diffs, sealValue(keys, keys.diffs, JSON.stringify(record))).ltrim(keys.diffs, 0, Math.max(0, ctx.settings.keepDiffs - 1));
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
  answer: {
    entryId: string;
    method: string;
    path: string;
    target?: string;
    staging: ObservedResponse & { truncated?: boolean };
    ids: ReadonlyMap<string, string>;
  },
): Promise<ProductionResponse | null> {
  const key = keys.stagingAnswer(requestId);
  const kept: StagingAnswer = {
    entryId: answer.entryId,
    method: answer.method,
    path: answer.path,
    ...(answer.target !== undefined && { target: answer.target }),
    status: answer.staging.status,
    headers: [...answer.staging.headers],
    body: answer.staging.body.toString('base64'),
    ids: [...answer.ids],
    ...(answer.staging.truncated === true && { truncated: true }),
  };
  const replies = await redis
    .multi()
    .set(key, sealValue(keys, key, JSON.stringify(kept)), 'PX', ttlMs)
    .hgetallBuffer(keys.response(requestId))
    .exec();
  const production = decodeProductionResponse(requestId, (replies?.[1]?.[1] as Record<string, Buffer> | null) ?? null, keys);
  // Absent, or another request's answer under a reused request id: keep waiting for ours.
  if (!production || !sameRequest(production, answer.method, answer.target ?? answer.path)) return null;
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
  if (response.cut) {
    // An answer that did not go out whole: the request is answered (its create no longer in
    // flight), but a partial body teaches nothing and compares with nothing.
    if (mapping) {
      const multi = redis.multi();
      for (const kind of new Set(mapping.learners.map((l) => l.kind))) multi.zrem(keys.inflight(kind), response.requestId);
      await multi.exec();
    }
    return;
  }
  const fields: (string | Buffer)[] = ['s', String(response.status)];
  if (keys.cipher) {
    // Headers (Set-Cookie…), body and path (query tokens) sealed together, bound to the key.
    fields.push('e', keys.cipher.sealBlob(joinParts([encodeHeaders(response.headers), response.body, Buffer.from(response.path ?? '', 'latin1')]), key));
  } else {
    fields.push('h', encodeHeaders(response.headers), 'b', response.body);
    if (response.path) fields.push('u', Buffer.from(response.path, 'latin1'));
  }
  if (response.method) fields.push('m', response.method);
  // The new ID of a learning request, known from production's answer alone.
  let pending: { kind: string; productionId: string } | null = null;
  if (mapping && response.method && response.path) {
    for (const learner of mapping.learners) {
      if (!learner.matches(response.method, response.path)) continue;
      const productionId = learner.extract(response);
      if (productionId) pending = { kind: learner.kind, productionId };
      break;
    }
  }
  const multi = redis
    .multi()
    .del(key)
    .hset(key, ...(fields as [string, string]))
    .pexpire(key, settings.ttlMs);
  if (mapping) {
    multi.get(keys.learned(response.requestId));
    // In one transaction: the create stops counting as in flight, and its new ID becomes pending
    // (NX: a mapping staging already completed is never turned back into pending). A request
    // naming the ID sees one or the other, never neither.
    for (const kind of new Set(mapping.learners.map((l) => l.kind))) multi.zrem(keys.inflight(kind), response.requestId);
    if (pending) {
      const mapKey = keys.idmap(pending.kind, pending.productionId);
      multi.set(mapKey, sealValue(keys, mapKey, `?${response.requestId}`), 'PX', pendingTtl(mapping), 'NX');
    }
  }
  const results = await multi.exec();
  const failed = results?.find(([error]) => error);
  if (!results || failed)
    throw new RedisUnavailableError(`storing the production response failed: ${failed ? errorMessage(failed[0]) : 'the transaction was discarded'}`, {
      cause: failed?.[0],
    });
  // Staging answered first: complete the mapping, and let the comparison know it.
  const learnedIds = new Map<string, string>();
  const learned = mapping ? openValue(keys, keys.learned(response.requestId), results[3]?.[1] as string | null) : null;
  if (mapping && learned) {
    const [index, stagingId] = learned.split('\n') as [string, string];
    const learner = mapping.learners[Number(index)];
    // The learned half is of a request this learner matches; an answer to another request
    // under the same request id does not complete it.
    const productionId = learner && (!response.method || !response.path || learner.matches(response.method, response.path)) ? learner.extract(response) : null;
    if (learner && productionId) {
      const mapKey = keys.idmap(learner.kind, productionId);
      await redis.set(mapKey, sealValue(keys, mapKey, `=${stagingId}`), 'PX', mapping.settings.ttlMs);
      learnedIds.set(productionId, stagingId);
    }
  }
  if (compare) await compareKeptAnswer(redis, keys, compare, response, learnedIds);
}

/** The intake's half of `keepStagingAnswer`: staging answered first; compare now, once. */
async function compareKeptAnswer(
  redis: Redis,
  keys: ProductionKeys,
  ctx: ComparisonContext,
  production: ProductionResponse,
  learnedIds: ReadonlyMap<string, string>,
): Promise<void> {
  const key = keys.stagingAnswer(production.requestId);
  const stored = await redis.get(key);
  if (stored === null) return;
  let text: string;
  try {
    text = openValue(keys, key, stored) as string;
  } catch {
    return;
  }
  let kept: StagingAnswer;
  try {
    kept = JSON.parse(text) as StagingAnswer;
  } catch {
    return;
  }
  // Another request's answer under a reused request id is not compared with this replay,
  // which stays kept for its own answer.
  if (!sameRequest(production, kept.method, kept.target ?? kept.path)) return;
  if ((await redis.del(key)) !== 1) return;
  const staging = { status: kept.status, headers: kept.headers, body: Buffer.from(kept.body, 'base64'), truncated: kept.truncated === true };
  await recordComparison(redis, keys, ctx, production, staging, {
    entryId: kept.entryId,
    method: kept.method,
    path: kept.path,
    // The IDs the replay mapped, and the one its answer created (learned only now): comparison
    // then reads the same as when production's answer came first.
    ids: new Map([...kept.ids, ...learnedIds]),
  });
}

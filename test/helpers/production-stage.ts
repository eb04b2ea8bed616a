import * as zlib from 'node:zlib';
import {
  CompareOptions,
  IdMappingOptions,
  ProductionResponsesOptions,
  compileComparison,
  compileIdMapping,
  type CompiledIdMapping,
  type PipelineContext,
} from '@mirrorplane/core';
import { createProductionStage, type ComparisonContext, type ProductionStageObserver } from '@mirrorplane/runtime';

/**
 * Shared pieces for tests of the production stage (the worker's half) and of
 * storeProductionResponse (the intake's half) run in-process against a real Redis.
 */

export const JSON_TYPE = 'application/json';
/** Comparison settings of these tests: bodies and the content-type header. */
export const compareSettings = CompareOptions.parse({ headers: ['content-type'] });
/** productionResponses with every default. */
export const productionSettings = ProductionResponsesOptions.parse({});
/** The content codings staging or production may answer with, and an encoder for each. */
export const CODINGS: readonly [string, (b: Buffer) => Buffer][] = [
  ['gzip', (b) => zlib.gzipSync(b)],
  ['deflate', (b) => zlib.deflateRawSync(b)],
  ['br', (b) => zlib.brotliCompressSync(b)],
];

/**
 * One ID kind, `order`: learned from `POST /orders` (by default from the JSON `id`), used in
 * `/orders/<id>` paths; waits up to 60 s, polling every 10 ms. `extra` overrides the options.
 */
export function orderMapping(
  extra: Record<string, unknown> = {},
  learnFrom: Record<string, unknown> = { json: 'id' },
  use: Record<string, unknown>[] = [{ path: '^/orders/(?<id>[^/]+)$' }],
): CompiledIdMapping {
  return compileIdMapping(
    IdMappingOptions.parse({
      waitLimitMs: 60_000,
      waitDelayMs: 10,
      ...extra,
      kinds: [{ name: 'order', learn: [{ match: { methods: ['POST'], path: '^/orders$' }, from: learnFrom }], use }],
    }),
  );
}

/**
 * An observer that ignores every event, or counts those named in `counts` (each call adds one
 * to `counts[event]`; events not named there are ignored).
 */
export function stageObserver(counts?: Record<string, number>): ProductionStageObserver {
  return new Proxy(
    {},
    {
      get: (_, name) => () => {
        if (counts && typeof name === 'string' && name in counts) counts[name]! += 1;
      },
    },
  ) as ProductionStageObserver;
}

type StageOptions = Parameters<typeof createProductionStage>[0];

/**
 * createProductionStage with the tests' defaults: no mapping, no comparison, nothing redacted,
 * production answers kept 10 minutes, bodies decoded up to 1 MiB, a quiet observer.
 */
export function productionStage(options: Pick<StageOptions, 'redis' | 'keys'> & Partial<StageOptions>): ReturnType<typeof createProductionStage> {
  return createProductionStage({
    mapping: null,
    compare: null,
    redact: new Set(),
    productionTtlMs: 600_000,
    maxDecodedBytes: 1 << 20,
    observer: stageObserver(),
    ...options,
  });
}

/** The comparison the intake's half is given (compareSettings, nothing redacted). */
export function comparisonContext(maxDecodedBytes = 1 << 20): ComparisonContext {
  return { settings: compareSettings, comparison: compileComparison(compareSettings), redact: new Set(), maxDecodedBytes };
}

/** Returns a maker of pipeline contexts for mirrored bodiless requests, each with a fresh entry id unless given. */
export function contexts(): (requestId: string, method: string, path: string, attempt?: number, entryId?: string) => PipelineContext {
  let seq = 0;
  const base = Date.now();
  return (requestId, method, path, attempt = 1, entryId = `${base}-${seq++}`) => ({
    entryId,
    attempt,
    requestId,
    mirrored: { method, target: path, rawHeaders: [], body: Buffer.alloc(0), receivedAt: base, requestId, clientAddress: null },
    rules: [],
    tags: {},
  });
}

import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as zlib from 'node:zlib';
import { Redis } from 'ioredis';
import { productionKeys, ReplayLaterError, type OutgoingRequest, type PipelineContext, type ReplayResponse } from '@mirrorplane/core';
import { storeProductionResponse } from '@mirrorplane/runtime';
import { useStack } from '../helpers/index.js';
import {
  CODINGS as codings,
  JSON_TYPE,
  compareSettings,
  comparisonContext,
  contexts,
  orderMapping,
  productionSettings as settings,
  productionStage,
  stageObserver,
} from '../helpers/production-stage.js';

/**
 * The worker's half (the production stage around a replay) and the intake's half
 * (storeProductionResponse) against a real Redis, in-process, so the order of arrival is the
 * test's to choose: production's answer first, staging's first, or both at once. Every order
 * must give the same comparison and the same mapping, each compared exactly once.
 */

let redis: Redis;
const stack = useStack({}, (s) => {
  redis = s.client();
});

const mapping = orderMapping();

function setup(prefix: string) {
  const keys = productionKeys(prefix);
  const counts = { waiting: 0, unknown: 0, unmappedAfterTimeout: 0, mapped: 0 };
  const observer = stageObserver(counts);
  const stage = productionStage({ redis, keys, mapping, compare: compareSettings, observer });
  const comparison = comparisonContext();
  const ctx = contexts();
  /** The worker's half: pre, staging's (compressed) answer, post. */
  const replay = async (c: PipelineContext, method: string, path: string, stagingBody: unknown, status: number, coding: number) => {
    const request: OutgoingRequest = { method, path, headers: [], body: Buffer.alloc(0), origin: 'default' };
    const shaped = (await stage.pre!(request, c)) as OutgoingRequest;
    const [name, encode] = codings[coding % codings.length]!;
    const response: ReplayResponse = {
      status,
      headers: ['content-type', JSON_TYPE, 'content-encoding', name],
      body: encode(Buffer.from(JSON.stringify(stagingBody))),
      truncated: false,
      ms: 1,
    };
    await stage.post!(response, shaped, c);
    return shaped;
  };
  /** The intake's half: production's answer arrives. */
  const produce = (requestId: string, method: string, path: string, body: unknown, status: number) =>
    storeProductionResponse(
      redis,
      keys,
      settings,
      mapping,
      { requestId, status, headers: ['content-type', JSON_TYPE], body: Buffer.from(JSON.stringify(body)), method, path },
      comparison,
    );
  return { keys, counts, ctx, replay, produce };
}

type Order = 'production-first' | 'staging-first' | 'concurrent';
const ORDERS: Order[] = ['production-first', 'staging-first', 'concurrent'];

async function inOrder(order: Order, production: () => Promise<unknown>, staging: () => Promise<unknown>): Promise<void> {
  if (order === 'production-first') {
    await production();
    await staging();
  } else if (order === 'staging-first') {
    await staging();
    await production();
  } else await Promise.all([staging(), production()]);
}

test('creates and reads compare the same in every order of arrival, each exactly once, with compressed staging answers', async () => {
  const { keys, ctx, replay, produce } = setup('cmp1');
  const per = 12;
  await Promise.all(
    ORDERS.flatMap((order, o) =>
      Array.from({ length: per }, async (_, i) => {
        const n = o * per + i;
        const createId = `c-${n}`;
        const create = ctx(createId, 'POST', '/orders');
        await inOrder(
          order,
          () => produce(createId, 'POST', '/orders', { id: `ord_${n}`, item: n }, 201),
          () => replay(create, 'POST', '/orders', { id: `stg_${n}`, item: n }, 201, n),
        );
        assert.equal(await redis.get(keys.idmap('order', `ord_${n}`)), `=stg_${n}`, `${order}: the mapping is learned`);
        const readId = `r-${n}`;
        const read = ctx(readId, 'GET', `/orders/ord_${n}`);
        await inOrder(
          order,
          () => produce(readId, 'GET', `/orders/ord_${n}`, { id: `ord_${n}`, item: n }, 200),
          async () => {
            const sent = await replay(read, 'GET', `/orders/ord_${n}`, { item: n, id: `stg_${n}` }, 200, n + 1);
            assert.equal(sent.path, `/orders/stg_${n}`);
          },
        );
      }),
    ),
  );
  const routes = await redis.hgetall(keys.diffRoutes);
  assert.deepEqual(routes, { 'POST /orders\tmatch': String(3 * per), 'GET /orders/:id\tmatch': String(3 * per) }, 'every pair compared once, all equal');
  assert.equal(await redis.llen(keys.diffs), 0);
});

test('a read that reaches the worker before its create has a production answer waits; one received before the create does not', async () => {
  const { keys, counts, ctx, replay, produce } = setup('cmp2');
  const early = ctx('early', 'GET', '/orders/ord_500');
  const create = ctx('c-500', 'POST', '/orders');
  const read = ctx('r-500', 'GET', '/orders/ord_500');
  // The create is started (registered in flight) and waits for staging's answer.
  const request: OutgoingRequest = { method: 'POST', path: '/orders', headers: [], body: Buffer.alloc(0), origin: 'default' };
  const otherWorker = createProductionStageFor(keys, counts);
  await otherWorker.pre!(request, create);
  const attempt = (c: PipelineContext) =>
    replay(c, 'GET', '/orders/ord_500', { id: 'stg_500' }, 200, 0).then(
      () => 'sent',
      (e: { code?: string; message: string }) => `${e.code}: ${e.message}`,
    );
  // Received before the create: its unknown ID is not the create's; sent as it came.
  assert.equal(await attempt(early), 'sent');
  assert.equal(counts.unknown, 1);
  // Received after it: waits, though production's answer has not even reached the intake yet.
  assert.match(await attempt(read), /^MP_ERR_MAPPING_PENDING: waiting for the staging ID of order ord_500 \(create in flight\)$/);
  await produce('c-500', 'POST', '/orders', { id: 'ord_500' }, 201);
  assert.match(await attempt(read), /\(pending\)$/);
  const response: ReplayResponse = { status: 201, headers: ['content-type', JSON_TYPE], body: Buffer.from('{"id":"stg_500"}'), truncated: false, ms: 1 };
  await otherWorker.post!(response, request, create);
  assert.equal(await attempt(read), 'sent');
  assert.equal(counts.waiting, 2);
  assert.equal(await redis.zcard(keys.inflight('order')), 0, 'the intake took the create out of flight');
});

/** A second stage instance on the same keys: another worker. */
function createProductionStageFor(keys: ReturnType<typeof productionKeys>, counts: Record<string, number>) {
  const observer = stageObserver(counts);
  return productionStage({ redis, keys, mapping, compare: compareSettings, observer });
}

test('a staging body that does not decode is compared as received, and the diff record says why', async () => {
  const { keys, ctx, produce } = setup('cmp3');
  const stage = productionStage({ redis, keys, compare: compareSettings, maxDecodedBytes: 1024 });
  const cases: [string, Buffer][] = [
    ['gzip', Buffer.from([0x1f, 0x8b, 0x08, 0x00, 0xff, 0xfe, 0x00])],
    ['gzip', zlib.gzipSync(Buffer.alloc(1 << 20, 0x20))],
    ['compress', Buffer.from('whatever')],
  ];
  for (const [i, [coding, body]] of cases.entries()) {
    const c = ctx(`bad-${i}`, 'GET', '/report');
    await produce(`bad-${i}`, 'GET', '/report', { ok: true }, 200);
    const request: OutgoingRequest = { method: 'GET', path: '/report', headers: [], body: Buffer.alloc(0), origin: 'default' };
    await stage.pre?.(request, c);
    await stage.post!({ status: 200, headers: ['content-type', JSON_TYPE, 'content-encoding', coding], body, truncated: false, ms: 1 }, request, c);
  }
  const records = (await redis.lrange(keys.diffs, 0, -1))
    .map((r) => JSON.parse(r) as { decoding?: { staging?: string }; staging: { body: string }; differences: { path: string }[] })
    .reverse();
  assert.equal(records.length, 3);
  assert.match(records[0]!.decoding?.staging ?? '', /^gzip body does not decode/);
  assert.match(records[0]!.staging.body, /^base64:/);
  assert.match(records[1]!.decoding?.staging ?? '', /^gzip body decodes to more than 1024 bytes$/);
  assert.equal(records[2]!.decoding?.staging, 'cannot decode content-coding "compress"');
  for (const r of records)
    assert.deepEqual(
      r.differences.map((d) => d.path),
      ['body'],
    );
});

test('Redis not answering the ID lookup: the entry is replayed later, neither sent unmapped nor failed', async () => {
  const down = new Redis(stack.redis.url, { maxRetriesPerRequest: 0, lazyConnect: true, enableOfflineQueue: false });
  const keys = productionKeys('cmp4');
  const stage = productionStage({ redis: down, keys, mapping, maxDecodedBytes: 1024 });
  const c: PipelineContext = {
    entryId: `${Date.now()}-0`,
    attempt: 1,
    requestId: 'x',
    mirrored: { method: 'GET', target: '/orders/ord_1', rawHeaders: [], body: Buffer.alloc(0), receivedAt: 0, requestId: 'x', clientAddress: null },
    rules: [],
    tags: {},
  };
  const request: OutgoingRequest = { method: 'GET', path: '/orders/ord_1', headers: [], body: Buffer.alloc(0), origin: 'default' };
  await assert.rejects(Promise.resolve(stage.pre!(request, c)), (error: Error & { code?: string; delayMs?: number }) => {
    assert.ok(error instanceof ReplayLaterError, String(error));
    assert.equal(error.code, 'MP_ERR_MAPPING_UNAVAILABLE');
    assert.equal(error.delayMs, 10);
    return true;
  });
  assert.equal(request.path, '/orders/ord_1');
  down.disconnect();
});

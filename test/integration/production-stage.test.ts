import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as zlib from 'node:zlib';
import { Redis } from 'ioredis';
import { OTHER_ROUTE, type OutgoingRequest, type ReplayResponse, productionKeys } from '@mirrorplane/core';
import { storeProductionResponse } from '@mirrorplane/runtime';
import { useStack } from '../helpers/index.js';
import {
  JSON_TYPE,
  compareSettings,
  comparisonContext as comparisonCtx,
  contexts,
  orderMapping,
  productionSettings as settings,
  productionStage,
} from '../helpers/production-stage.js';

/**
 * The production stage (worker half) and the intake half against a real Redis,
 * in-process so the interleaving is the test's to choose.
 */

let redis: Redis;
const stack = useStack({}, (s) => {
  redis = s.client();
});

const base = Date.now();
const ctx = contexts();

test("order of arrival: production answer landing between the worker learning and keeping staging's answer still compares with the learned ID", async () => {
  const keys = productionKeys('race1');
  const mapping = orderMapping();
  // The worker's own connection; its transactions are observed so the intake's half can run in between.
  const workerRedis = new Redis(stack.redis.url, { maxRetriesPerRequest: 2 });
  let between: (() => Promise<void>) | null = null;
  const multi = workerRedis.multi.bind(workerRedis);
  (workerRedis as unknown as { multi: typeof multi }).multi = ((...args: Parameters<typeof multi>) => {
    const m = multi(...args);
    const exec = m.exec.bind(m);
    m.exec = (async (...a: Parameters<typeof exec>) => {
      const result = await exec(...a);
      const hook = between;
      between = null;
      if (hook) await hook();
      return result;
    }) as typeof m.exec;
    return m;
  }) as typeof multi;
  try {
    const stage = productionStage({ redis: workerRedis, keys, mapping, compare: compareSettings });
    const c = ctx('c-race', 'POST', '/orders');
    const request: OutgoingRequest = { method: 'POST', path: '/orders', headers: [], body: Buffer.alloc(0), origin: 'default' };
    const shaped = (await stage.pre!(request, c)) as OutgoingRequest;
    const response: ReplayResponse = {
      status: 201,
      headers: ['content-type', JSON_TYPE],
      body: Buffer.from('{"id":"stg_7","item":"book"}'),
      truncated: false,
      ms: 1,
    };
    // Production's answer reaches the intake right after the worker's learning transaction
    // (production absent then) and before the worker keeps staging's answer.
    between = () =>
      storeProductionResponse(
        redis,
        keys,
        settings,
        mapping,
        {
          requestId: 'c-race',
          status: 201,
          headers: ['content-type', JSON_TYPE],
          body: Buffer.from('{"id":"ord_7","item":"book"}'),
          method: 'POST',
          path: '/orders',
        },
        comparisonCtx(),
      );
    await stage.post!(response, shaped, c);
    assert.equal(await redis.get(keys.idmap('order', 'ord_7')), '=stg_7', 'the mapping is learned');
    const records = (await redis.lrange(keys.diffs, 0, -1)).map(
      (r) => JSON.parse(r) as { differences: { path: string; production?: unknown; staging?: unknown }[] },
    );
    assert.deepEqual(
      await redis.hgetall(keys.diffRoutes),
      { 'POST /orders\tmatch': '1' },
      `compared once, equal; diff records: ${JSON.stringify(records.map((r) => r.differences))}`,
    );
  } finally {
    workerRedis.disconnect();
  }
});

test('URL decoding: an ID learned from Location is percent-decoded like the IDs found in paths, and never encoded twice', async () => {
  const keys = productionKeys('loc1');
  const mapping = orderMapping({}, { location: '/orders/(?<id>[^/]+)$' });
  const stage = productionStage({ redis, keys, mapping });
  // Production and staging both name the new object in Location, percent-encoded as URLs must be.
  await storeProductionResponse(redis, keys, settings, mapping, {
    requestId: 'c-loc',
    status: 201,
    headers: ['location', '/orders/ord%3A1'],
    body: Buffer.alloc(0),
    method: 'POST',
    path: '/orders',
  });
  const c = ctx('c-loc', 'POST', '/orders');
  const create: OutgoingRequest = { method: 'POST', path: '/orders', headers: [], body: Buffer.alloc(0), origin: 'default' };
  await stage.pre!(create, c);
  await stage.post!({ status: 201, headers: ['location', '/orders/stg%3A9'], body: Buffer.alloc(0), truncated: false, ms: 1 }, create, c);
  // The client follows production's Location.
  const read: OutgoingRequest = { method: 'GET', path: '/orders/ord%3A1', headers: [], body: Buffer.alloc(0), origin: 'default' };
  const sent = (await stage.pre!(read, ctx('r-loc', 'GET', '/orders/ord%3A1'))) as OutgoingRequest;
  assert.equal(sent.path, '/orders/stg%3A9', 'staging receives its own Location path');
});

test("URL decoding: a staging ID with a reserved character learned from JSON is not double-encoded when the client's path names the production ID", async () => {
  const keys = productionKeys('loc2');
  const mapping = orderMapping({}, { location: '/orders/(?<id>[^/]+)$' });
  const stage = productionStage({ redis, keys, mapping });
  await storeProductionResponse(redis, keys, settings, mapping, {
    requestId: 'c-loc2',
    status: 201,
    headers: ['location', '/orders/ord_2'],
    body: Buffer.alloc(0),
    method: 'POST',
    path: '/orders',
  });
  const c = ctx('c-loc2', 'POST', '/orders');
  const create: OutgoingRequest = { method: 'POST', path: '/orders', headers: [], body: Buffer.alloc(0), origin: 'default' };
  await stage.pre!(create, c);
  await stage.post!({ status: 201, headers: ['location', '/orders/2026%2F11%2F30-7'], body: Buffer.alloc(0), truncated: false, ms: 1 }, create, c);
  const read: OutgoingRequest = { method: 'GET', path: '/orders/ord_2', headers: [], body: Buffer.alloc(0), origin: 'default' };
  const sent = (await stage.pre!(read, ctx('r-loc2', 'GET', '/orders/ord_2'))) as OutgoingRequest;
  assert.equal(sent.path, '/orders/2026%2F11%2F30-7', 'the path staging itself issued, byte for byte');
});

test('JSON bodies: replacing an ID in a request body keeps every other value exact (large integers, precise decimals)', async () => {
  const keys = productionKeys('json1');
  const mapping = orderMapping({}, { json: 'id' }, [{ json: 'order.id' }]);
  const stage = productionStage({ redis, keys, mapping });
  await redis.set(keys.idmap('order', 'ord_3'), '=stg_3');
  const body = '{"order":{"id":"ord_3"},"amountMinor":12345678901234567890,"rate":0.10000000000000000555,"ref":9007199254740993}';
  const request: OutgoingRequest = { method: 'POST', path: '/payments', headers: ['content-type', JSON_TYPE], body: Buffer.from(body), origin: 'default' };
  const sent = (await stage.pre!(request, ctx('p-3', 'POST', '/payments'))) as OutgoingRequest;
  assert.equal(sent.body.toString('utf8'), body.replace('ord_3', 'stg_3'), 'only the ID changed');
});

test('counting: a follow-up with an unknown ID retried after a 5xx is counted once in diff summary, not once per attempt', async () => {
  const keys = productionKeys('count1');
  const mapping = orderMapping({ awaitCreatesMs: 0 });
  const stage = productionStage({ redis, keys, mapping });
  const entryId = `${base}-900`;
  for (const attempt of [1, 2, 3]) {
    const request: OutgoingRequest = { method: 'GET', path: '/orders/legacy_1', headers: [], body: Buffer.alloc(0), origin: 'default' };
    await stage.pre!(request, ctx('u-1', 'GET', '/orders/legacy_1', attempt, entryId));
  }
  assert.deepEqual(await redis.hgetall(keys.idOutcomes), { 'order\tunknown': '1' }, 'one request, one unknown ID');
});

test('decompression bound: a production body over productionResponses.maxDecodedBytes is not decoded anyway by the comparison', async () => {
  const keys = productionKeys('bomb1');
  const stage = productionStage({ redis, keys, compare: compareSettings, maxDecodedBytes: 64 * 1024 });
  const json = Buffer.from(JSON.stringify({ pad: 'x'.repeat(2 * 1024 * 1024) }));
  await storeProductionResponse(redis, keys, settings, null, {
    requestId: 'b-1',
    status: 200,
    headers: ['content-type', JSON_TYPE, 'content-encoding', 'gzip'],
    body: zlib.gzipSync(json),
    method: 'GET',
    path: '/big',
  });
  const c = ctx('b-1', 'GET', '/big');
  const request: OutgoingRequest = { method: 'GET', path: '/big', headers: [], body: Buffer.alloc(0), origin: 'default' };
  await stage.pre?.(request, c);
  await stage.post!({ status: 200, headers: ['content-type', JSON_TYPE], body: json, truncated: false, ms: 1 }, request, c);
  // Documented: a body that cannot be decoded within the bound is compared as received (so it differs), and the record says why.
  const records = (await redis.lrange(keys.diffs, 0, -1)).map((r) => JSON.parse(r) as { decoding?: { production?: string } });
  assert.equal(records.length, 1, `the too-large production body was compared as received; routes: ${JSON.stringify(await redis.hgetall(keys.diffRoutes))}`);
  assert.match(records[0]!.decoding?.production ?? '', /decodes to more than 65536 bytes/);
});

test('comparison: a production ID in an answer compares equal to the staging ID Redis maps it to, also when the request did not name it (a list)', async () => {
  const keys = productionKeys('list1');
  const mapping = orderMapping();
  const stage = productionStage({ redis, keys, mapping, compare: compareSettings });
  // Learned earlier, as Redis holds it after a create.
  await redis.set(keys.idmap('order', 'ord_1'), '=stg_1');
  await redis.set(keys.idmap('order', 'ord_2'), '=stg_2');
  await storeProductionResponse(redis, keys, settings, mapping, {
    requestId: 'l-1',
    status: 200,
    headers: ['content-type', JSON_TYPE],
    body: Buffer.from('[{"id":"ord_1"},{"id":"ord_2"}]'),
    method: 'GET',
    path: '/orders',
  });
  const c = ctx('l-1', 'GET', '/orders');
  const request: OutgoingRequest = { method: 'GET', path: '/orders', headers: [], body: Buffer.alloc(0), origin: 'default' };
  const shaped = (await stage.pre!(request, c)) as OutgoingRequest;
  await stage.post!(
    { status: 200, headers: ['content-type', JSON_TYPE], body: Buffer.from('[{"id":"stg_1"},{"id":"stg_2"}]'), truncated: false, ms: 1 },
    shaped,
    c,
  );
  const diffs = await redis.lrange(keys.diffs, 0, -1);
  assert.deepEqual(
    await redis.hgetall(keys.diffRoutes),
    { 'GET /orders\tmatch': '1' },
    `docs: "a production ID compares equal to the staging ID it maps to"; diff records: ${diffs.join('\n')}`,
  );
});

test('comparison routes: paths from hostile or long-tail traffic do not make an unbounded number of routes (metric labels, Redis fields)', async () => {
  const keys = productionKeys('card1');
  const stage = productionStage({ redis, keys, compare: compareSettings });
  // A scanner's paths, or slugs: no digits, so none is folded into :id.
  const words = ['wp-admin', 'phpmyadmin', 'env', 'git', 'backup', 'config', 'admin', 'login', 'shell', 'debug'];
  const N = 300;
  await Promise.all(
    Array.from({ length: N }, async (_, i) => {
      const path = `/${words[i % words.length]}/${words[Math.floor(i / words.length) % words.length]}-${words[Math.floor(i / 100) % words.length]}-${'abcdefghijklmnopqrstuvwxyz'[i % 26]}`;
      await storeProductionResponse(redis, keys, settings, null, {
        requestId: `s-${i}`,
        status: 404,
        headers: ['content-type', 'text/plain'],
        body: Buffer.from('no'),
        method: 'GET',
        path,
      });
      const c = ctx(`s-${i}`, 'GET', path);
      const request: OutgoingRequest = { method: 'GET', path, headers: [], body: Buffer.alloc(0), origin: 'default' };
      await stage.post!({ status: 404, headers: ['content-type', 'text/plain'], body: Buffer.from('no'), truncated: false, ms: 1 }, request, c);
    }),
  );
  const fields = await redis.hgetall(keys.diffRoutes);
  const routes = Object.keys(fields).length;
  assert.ok(routes <= compareSettings.maxRoutes, `${N} distinct junk paths gave ${routes} route fields (and as many metric label values); expected a bound`);
  // Nothing is lost: the routes beyond the cap are counted in one bucket.
  assert.equal(Number(fields[`${OTHER_ROUTE}\tmatch`]), N - (compareSettings.maxRoutes - 1));
  assert.equal(
    Object.values(fields).reduce((sum, v) => sum + Number(v), 0),
    N,
  );
});

test('correlation: two requests sharing one x-request-id (a client reusing its id) are never compared or learned across each other', async () => {
  const keys = productionKeys('dup1');
  const mapping = orderMapping();
  const stage = productionStage({ redis, keys, mapping, compare: compareSettings });
  // The client sends a create and then a search with the same x-request-id; production answers both.
  await storeProductionResponse(
    redis,
    keys,
    settings,
    mapping,
    { requestId: 'dup', status: 201, headers: ['content-type', JSON_TYPE], body: Buffer.from('{"id":"ord_5"}'), method: 'POST', path: '/orders' },
    comparisonCtx(),
  );
  await storeProductionResponse(
    redis,
    keys,
    settings,
    mapping,
    {
      requestId: 'dup',
      status: 200,
      headers: ['content-type', JSON_TYPE],
      body: Buffer.from('{"results":[],"id":"srch_1"}'),
      method: 'GET',
      path: '/search?q=x',
    },
    comparisonCtx(),
  );
  // The worker now replays the create.
  const c = ctx('dup', 'POST', '/orders');
  const request: OutgoingRequest = { method: 'POST', path: '/orders', headers: [], body: Buffer.alloc(0), origin: 'default' };
  const shaped = (await stage.pre!(request, c)) as OutgoingRequest;
  await stage.post!({ status: 201, headers: ['content-type', JSON_TYPE], body: Buffer.from('{"id":"stg_5"}'), truncated: false, ms: 1 }, shaped, c);
  assert.equal(await redis.get(keys.idmap('order', 'srch_1')), null, "the search's id is not learned as an order created by POST /orders");
  const routes = await redis.hgetall(keys.diffRoutes);
  const diffs = await redis.lrange(keys.diffs, 0, -1);
  assert.ok(
    !('GET /search\tmismatch' in routes) && !('POST /orders\tmismatch' in routes),
    `the create is not compared with the search's answer: ${JSON.stringify(routes)} ${diffs.join('\n')}`,
  );
});

test("correlation: an answer to another request under the same x-request-id that reaches the intake after staging's is kept is not compared with it", async () => {
  const keys = productionKeys('dup2');
  const mapping = orderMapping();
  const stage = productionStage({ redis, keys, mapping, compare: compareSettings });
  // The worker replays the create first: staging's answer is kept, waiting for production's.
  const c = ctx('dup-late', 'POST', '/orders');
  const request: OutgoingRequest = { method: 'POST', path: '/orders', headers: [], body: Buffer.alloc(0), origin: 'default' };
  const shaped = (await stage.pre!(request, c)) as OutgoingRequest;
  await stage.post!({ status: 201, headers: ['content-type', JSON_TYPE], body: Buffer.from('{"id":"stg_6"}'), truncated: false, ms: 1 }, shaped, c);
  // Then the intake receives the answer to a search the client sent with the same id.
  await storeProductionResponse(
    redis,
    keys,
    settings,
    mapping,
    { requestId: 'dup-late', status: 200, headers: ['content-type', JSON_TYPE], body: Buffer.from('{"id":"srch_2"}'), method: 'GET', path: '/search?q=y' },
    comparisonCtx(),
  );
  assert.equal(await redis.get(keys.idmap('order', 'srch_2')), null, "the search's id does not complete the create's mapping");
  assert.deepEqual(await redis.hgetall(keys.diffRoutes), {}, 'nothing compared across the two requests');
  // The create's own answer, when it comes, is compared and completes the mapping.
  await storeProductionResponse(
    redis,
    keys,
    settings,
    mapping,
    { requestId: 'dup-late', status: 201, headers: ['content-type', JSON_TYPE], body: Buffer.from('{"id":"ord_6"}'), method: 'POST', path: '/orders' },
    comparisonCtx(),
  );
  assert.equal(await redis.get(keys.idmap('order', 'ord_6')), '=stg_6');
  assert.deepEqual(await redis.hgetall(keys.diffRoutes), { 'POST /orders\tmatch': '1' });
});

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { IdMappingOptions, compileIdMapping, type OutgoingRequest, type PipelineContext, productionKeys } from '@mirrorplane/core';
import { createProductionStage, type ProductionStageObserver } from '@mirrorplane/runtime';
import { mirrorplaneResponses } from '../../examples/mirrorplane-middleware.mjs';
import { RedisServer, Stack, freePort, waitFor, useStack } from '../helpers/index.js';

/**
 * A create route with the shipped middleware whose answer does not go out whole (over
 * maxBodyBytes, or the response destroyed before it finished): the middleware still posts it,
 * marked `x-mirrorplane-cut: 1`, so the create stops counting as in flight and a request naming
 * an unknown ID of that kind (data older than the mirroring) is not held behind it. Real ingress (intake), real middleware
 * in node:http, the worker's production stage in-process on the same Redis keys.
 */

let redis: RedisServer;
let client: Redis;
let dir: string;

useStack({ dir: 'mp-mw-cut-' }, (s) => {
  redis = s.redis;
  client = s.client();
  dir = s.dir;
});

const settings = {
  kinds: [{ name: 'order', learn: [{ match: { methods: ['POST'], path: '^/orders$' }, from: { json: 'id' } }], use: [{ path: '^/orders/(?<id>[^/]+)$' }] }],
};

for (const variant of ['answer over maxBodyBytes', 'response destroyed after the head'] as const) {
  test(`middleware, ${variant}: the create does not stay in flight, and a legacy ID is not held behind it`, async () => {
    const config = join(dir, `mirrorplane-${variant.length}.yaml`);
    writeFileSync(config, JSON.stringify({ idMapping: settings }));
    const adminPort = await freePort();
    const stack = await Stack.start({
      redis,
      stagingUrl: 'http://127.0.0.1:9',
      workers: 0,
      env: { MIRRORPLANE_CONFIG: config },
      ingressEnv: { ADMIN_PORT: String(adminPort) },
    });
    const keys = productionKeys(stack.env.MIRRORPLANE_PREFIX!);
    const mapping = compileIdMapping(IdMappingOptions.parse(settings));
    const stage = createProductionStage({
      redis: client,
      keys,
      mapping,
      compare: null,
      redact: new Set(),
      productionTtlMs: 600_000,
      maxDecodedBytes: 1 << 20,
      observer: new Proxy({}, { get: () => () => {} }) as ProductionStageObserver,
    });
    const errors: unknown[] = [];
    const capture = mirrorplaneResponses({
      intake: `http://127.0.0.1:${adminPort}/production-responses`,
      maxBodyBytes: 4096,
      onError: (e: unknown) => errors.push(e),
    });
    let finished = false;
    const production = createServer((req: IncomingMessage, res: ServerResponse) => {
      capture(req, res);
      req.resume();
      req.on('end', () => {
        res.on('close', () => void (finished = true));
        if (variant === 'answer over maxBodyBytes') {
          res.writeHead(201, { 'content-type': 'application/json' }).end(JSON.stringify({ id: 'ord_big', pad: 'x'.repeat(8192) }));
        } else {
          res.writeHead(201, { 'content-type': 'application/json' });
          res.write('{"id":"ord_cut",');
          res.destroy();
        }
      });
    });
    await new Promise<void>((r) => production.listen(0, '127.0.0.1', r));
    try {
      const now = Date.now();
      const ctx = (requestId: string, seq: number, target: string): PipelineContext => ({
        entryId: `${now}-${seq}`,
        attempt: 1,
        requestId,
        mirrored: { method: 'GET', target, rawHeaders: [], body: Buffer.alloc(0), receivedAt: now, requestId, clientAddress: null },
        rules: [],
        tags: {},
      });
      // A worker starts the mirror copy of the create.
      const create: OutgoingRequest = { method: 'POST', path: '/orders', headers: [], body: Buffer.alloc(0), origin: 'default' };
      await stage.pre!(create, ctx('cr-1', 0, '/orders'));
      assert.equal(await client.zcard(keys.inflight('order')), 1, 'registered in flight');
      // Production answers the create (with the middleware installed).
      await fetch(`http://127.0.0.1:${(production.address() as { port: number }).port}/orders`, {
        method: 'POST',
        headers: { 'x-request-id': 'cr-1' },
        body: '{}',
      })
        .then((r) => r.arrayBuffer())
        .catch(() => null);
      await waitFor('production finished with the response', () => finished || null, 10_000);
      await waitFor(
        'the create out of flight (production answered it)',
        async () => ((await client.zcard(keys.inflight('order'))) === 0 ? true : null),
        10_000,
      ).catch((e: Error) => assert.fail(`${e.message}; the middleware reported: ${errors.map(String).join('; ') || 'nothing'}`));
      // Posted marked as cut: nothing of the partial answer is kept, learned or compared.
      assert.equal(await client.exists(keys.response('cr-1')), 0, 'a cut answer is not stored');
      assert.deepEqual(await client.keys(`${keys.idmap('order', '')}*`), [], 'nothing learned from a cut answer');
      assert.ok(
        errors.some((e) => /cr-1 posted cut/.test(String(e))),
        `the middleware reports the cut: ${errors.map(String).join('; ')}`,
      );
      // A request naming an order from before the mirroring goes on at once.
      const legacy: OutgoingRequest = { method: 'GET', path: '/orders/legacy_1', headers: [], body: Buffer.alloc(0), origin: 'default' };
      const sent = (await stage.pre!(legacy, ctx('lg-1', 1, '/orders/legacy_1'))) as OutgoingRequest;
      assert.equal(sent.path, '/orders/legacy_1');
    } finally {
      await new Promise((r) => production.close(r));
      await stack.close();
    }
  });
}

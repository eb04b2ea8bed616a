import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { mirrorplaneResponses } from '../../examples/mirrorplane-middleware.mjs';
import { RecordingServer, RedisServer, Stack, freePort, waitFor, useStack } from '../helpers/index.js';
import { startNginx } from '../helpers/nginx.js';
import { productionKeys } from '@mirrorplane/core';

/**
 * The shipped middleware in a plain node:http app, through real nginx, a real ingress and
 * worker: production and staging run the very same handler, so every comparison must match.
 * Odd-but-ordinary response styles: HEAD answered by the GET code path (node:http drops the
 * body itself), and 204 No Content without a content type.
 */

let redis: RedisServer;
let client: Redis;
let dir: string;

useStack({ dir: 'mp-mw-bodyless-' }, (s) => {
  redis = s.redis;
  client = s.client();
  dir = s.dir;
});

/** One handler for production and staging: a tiny item API in the plain node:http style. */
function handle(method: string, url: string, res: ServerResponse): void {
  if (url === '/items/1' && (method === 'GET' || method === 'HEAD')) {
    // Typical node:http code: HEAD takes the GET path; node:http itself sends no body for HEAD.
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end('{"id":1,"name":"book"}');
    return;
  }
  if (url === '/items/1' && method === 'DELETE') {
    res.writeHead(204);
    res.end();
    return;
  }
  res.writeHead(404, { 'content-type': 'application/json' });
  res.end('{"error":"not found"}');
}

async function setup() {
  const config = join(dir, `mirrorplane-${Date.now()}.yaml`);
  writeFileSync(config, ['compare:', '  headers: [content-type]', ''].join('\n'));
  const staging = await RecordingServer.start((req, res) => handle(req.method, req.url, res));
  const adminPort = await freePort();
  const stack = await Stack.start({
    redis,
    stagingUrl: staging.url,
    workers: 1,
    env: { MIRRORPLANE_CONFIG: config },
    ingressEnv: { ADMIN_PORT: String(adminPort) },
  });
  const keys = productionKeys(stack.env.MIRRORPLANE_PREFIX!);
  const errors: unknown[] = [];
  const capture = mirrorplaneResponses({ intake: `http://127.0.0.1:${adminPort}/production-responses`, onError: (e: unknown) => errors.push(e) });
  const production = createServer((req: IncomingMessage, res: ServerResponse) => {
    capture(req, res);
    req.resume();
    req.on('end', () => handle(req.method!, req.url!, res));
  });
  await new Promise<void>((r) => production.listen(0, '127.0.0.1', r));
  const nginx = await startNginx({ productionPort: (production.address() as { port: number }).port, mirrorPort: stack.ingressPort });
  return {
    keys,
    staging,
    stack,
    nginx,
    errors,
    async compared(n: number): Promise<Record<string, string>> {
      return waitFor(
        `${n} comparisons`,
        async () => {
          const routes = await client.hgetall(keys.diffRoutes);
          return Object.values(routes).reduce((s, v) => s + Number(v), 0) >= n ? routes : null;
        },
        60_000,
      );
    },
    async close() {
      await nginx.stop();
      await new Promise((r) => production.close(r));
      await stack.close();
      await staging.close();
    },
  };
}

test("middleware, node:http: a HEAD answered by the GET code path compares equal with staging's HEAD answer", async () => {
  const s = await setup();
  try {
    const res = await fetch(`${s.nginx.url}/items/1`, { method: 'HEAD', headers: { 'x-request-id': 'head-1' } });
    assert.equal(res.status, 200);
    assert.equal((await res.arrayBuffer()).byteLength, 0, 'the client got no body, as HTTP says');
    const routes = await s.compared(1);
    const diffs = await client.lrange(s.keys.diffs, 0, -1);
    assert.deepEqual(routes, { 'HEAD /items/:id\tmatch': '1' }, `same app, same answer; diff records: ${diffs.join('\n')}`);
  } finally {
    await s.close();
  }
});

test('middleware, node:http: a 204 without a content type compares equal (no content type is invented for production)', async () => {
  const s = await setup();
  try {
    const res = await fetch(`${s.nginx.url}/items/1`, { method: 'DELETE', headers: { 'x-request-id': 'del-1' } });
    assert.equal(res.status, 204);
    const routes = await s.compared(1);
    const diffs = await client.lrange(s.keys.diffs, 0, -1);
    assert.deepEqual(routes, { 'DELETE /items/:id\tmatch': '1' }, `same app, same answer; diff records: ${diffs.join('\n')}`);
  } finally {
    await s.close();
  }
});

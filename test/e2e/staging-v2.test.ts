import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';
import { SampleBackend, type ReceivedRequest } from '@mirrorplane/sample-backend';
import { RedisServer, Stack, header, requestHead, sendRaw, waitFor } from '../helpers/index.js';
import { startNginx, type NginxMirror } from '../helpers/nginx.js';

/**
 * The demo's and docker-compose's staging, for real: staging serves the API under /v2, and the
 * rule in examples/compose/mirrorplane.yaml moves every replay there. Through nginx, an order
 * workflow must get the same answers from staging as from production.
 */

const CONFIG = fileURLToPath(new URL('../../examples/compose/mirrorplane.yaml', import.meta.url));

let redis: RedisServer;
let production: SampleBackend;
let staging: SampleBackend;
const atProduction: ReceivedRequest[] = [];
const atStaging: ReceivedRequest[] = [];
let stack: Stack;
let nginx: NginxMirror;

before(async () => {
  redis = await RedisServer.start();
  production = new SampleBackend({ name: 'production', onRequest: (r) => atProduction.push(r) });
  const productionPort = await production.listen();
  staging = new SampleBackend({ name: 'staging', pathPrefix: '/v2', onRequest: (r) => atStaging.push(r) });
  const stagingPort = await staging.listen();
  // One worker: the workflow's order matters (create before read), and one worker keeps it.
  stack = await Stack.start({ redis, stagingUrl: `http://127.0.0.1:${stagingPort}`, workers: 1, env: { MIRRORPLANE_CONFIG: CONFIG } });
  nginx = await startNginx({ productionPort, mirrorPort: stack.ingressPort });
});

after(async () => {
  await nginx?.stop();
  await stack?.close();
  await staging?.close();
  await production?.close();
  await redis?.close();
});

test('staging under /v2 answers the mirrored workflow as production did, thanks to the compose rule', async () => {
  const json = (v: unknown) => Buffer.from(JSON.stringify(v));
  const steps: [string, string, Buffer?][] = [
    ['POST', '/orders', json({ item: 'book' })],
    ['GET', '/orders/ord_1?fields=item'],
    ['PUT', '/orders/ord_1', json({ item: 'pen' })],
    ['GET', '/orders'],
    ['DELETE', '/orders/ord_1'],
    ['GET', '/orders/ord_1'],
  ];
  for (const [i, [method, target, body]] of steps.entries()) {
    const headers = ['Host', 'shop.example.com', 'X-Request-ID', `v2-${i}`, ...(body ? ['Content-Type', 'application/json'] : [])];
    const res = await sendRaw(nginx.port, requestHead(method, target, headers, body?.length), body);
    assert.ok(res.status < 500, `${method} ${target}: production answered`);
    // Wait for each replay before the next step, so staging sees the workflow in order.
    await waitFor(`the replay of ${method} ${target}`, () => atStaging.some((r) => header(r.rawHeaders, 'x-request-id') === `v2-${i}`), 60_000);
  }
  for (const [i, [method, target, body]] of steps.entries()) {
    const p = atProduction.find((r) => header(r.rawHeaders, 'x-request-id') === `v2-${i}`) as ReceivedRequest;
    const s = atStaging.find((r) => header(r.rawHeaders, 'x-request-id') === `v2-${i}`) as ReceivedRequest;
    assert.equal(p.url, target);
    assert.equal(s.url, `/v2${target}`, 'the rule moved the path under /v2 and kept the query');
    assert.equal(s.method, method);
    assert.ok(s.body.equals(body ?? Buffer.alloc(0)), 'the body is unchanged');
    assert.equal(s.status, p.status, `${method} ${target}: staging answered ${s.status}, production ${p.status}`);
  }
  assert.deepEqual(
    atStaging.map((r) => r.status),
    [201, 200, 200, 200, 200, 404],
  );
});

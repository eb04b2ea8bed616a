import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { SampleBackend, type ReceivedRequest } from '@mirrorplane/sample-backend';
import { RecordingServer, RedisServer, Stack, header, requestHead, sendRaw, waitFor } from '../helpers/index.js';
import { startNginx, type NginxMirror } from '../helpers/nginx.js';

/**
 * INGRESS_TOKEN through a real nginx: only the mirror copy carries the secret, production
 * never sees it (not even one a client forged), staging never sees it, and anything that
 * reaches the ingress without it is refused.
 */

const TOKEN = 'mirror-secret-7f3a';
let redis: RedisServer;
let production: SampleBackend;
const atProduction: ReceivedRequest[] = [];
let staging: RecordingServer;
let stack: Stack;
let nginx: NginxMirror;

before(async () => {
  redis = await RedisServer.start();
  production = new SampleBackend({ name: 'production', onRequest: (r) => atProduction.push(r) });
  const productionPort = await production.listen();
  staging = await RecordingServer.start();
  stack = await Stack.start({ redis, stagingUrl: staging.url, workers: 1, env: { INGRESS_TOKEN: TOKEN } });
  nginx = await startNginx({ productionPort, mirrorPort: stack.ingressPort, ingressToken: TOKEN });
});

after(async () => {
  await nginx?.stop();
  await stack?.close();
  await staging?.close();
  await production?.close();
  await redis?.close();
});

test('the token rides only on the mirror copy and is never stored or replayed', async () => {
  const body = Buffer.from('{"item":"book"}');
  const res = await sendRaw(
    nginx.port,
    requestHead(
      'POST',
      '/orders',
      ['Host', 'shop.example.com', 'X-Request-ID', 'tok-1', 'X-Mirrorplane-Token', 'forged', 'Content-Type', 'application/json'],
      body.length,
    ),
    body,
  );
  assert.equal(res.status, 201);
  await waitFor('the replay', () => staging.received.some((r) => header(r.rawHeaders, 'x-request-id') === 'tok-1'), 60_000);
  const p = atProduction.find((r) => header(r.rawHeaders, 'x-request-id') === 'tok-1')!;
  assert.equal(header(p.rawHeaders, 'x-mirrorplane-token'), undefined, 'production never receives a token header');
  const s = staging.received.find((r) => header(r.rawHeaders, 'x-request-id') === 'tok-1')!;
  assert.equal(header(s.rawHeaders, 'x-mirrorplane-token'), undefined, 'the ingress removed the token before storing the entry');
  assert.ok(s.body.equals(body));
});

test('without the token the ingress refuses with 401', async () => {
  const direct = await sendRaw(stack.ingressPort, requestHead('GET', '/x', ['Host', 'x']));
  assert.equal(direct.status, 401);
  const wrong = await sendRaw(stack.ingressPort, requestHead('GET', '/x', ['Host', 'x', 'X-Mirrorplane-Token', 'nope']));
  assert.equal(wrong.status, 401);
});

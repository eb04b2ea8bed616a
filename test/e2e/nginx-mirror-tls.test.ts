import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { SampleBackend, type ReceivedRequest } from '@mirrorplane/sample-backend';
import { RecordingServer, RedisServer, Stack, TestCerts, assertStagingHeaders, header, requestHead, sendRaw, waitFor } from '../helpers/index.js';
import { startNginx, type NginxMirror } from '../helpers/nginx.js';

/**
 * The mirror hop encrypted and authenticated: a real nginx mirrors to the ingress over TLS,
 * verifying the ingress's certificate against the private CA and presenting its client
 * certificate (`proxy_ssl_certificate`), to an ingress that requires one from that CA and on
 * its allow-list. Staging receives what production received, byte for byte. An nginx with a
 * certificate the ingress does not allow mirrors nothing, and production does not notice.
 */

let certs: TestCerts;
let redis: RedisServer;
let production: SampleBackend;
let productionPort: number;
const served: ReceivedRequest[] = [];
let staging: RecordingServer;
let stack: Stack;
let nginx: NginxMirror;

before(async () => {
  certs = TestCerts.create();
  redis = await RedisServer.start();
  production = new SampleBackend({ name: 'production', onRequest: (r) => served.push(r) });
  productionPort = await production.listen();
  staging = await RecordingServer.start();
  stack = await Stack.start({
    redis,
    stagingUrl: staging.url,
    ingressEnv: {
      INGRESS_TLS_CERT: certs.server.cert,
      INGRESS_TLS_KEY: certs.server.key,
      INGRESS_TLS_CA: certs.ca,
      INGRESS_TLS_ALLOW: 'mirror-proxy',
    },
  });
  nginx = await startNginx({
    productionPort,
    mirrorPort: stack.ingressPort,
    mirrorTls: { ca: certs.ca, cert: certs.client.cert, key: certs.client.key, serverName: 'localhost' },
  });
});

after(async () => {
  await nginx?.stop();
  await stack?.close();
  await staging?.close();
  await production?.close();
  await redis?.close();
  certs?.remove();
});

test('nginx mirrors over mutual TLS and staging receives what production received, byte for byte', async () => {
  const cases = [
    { id: 'mtls-json', method: 'POST', target: '/orders', headers: ['Content-Type', 'application/json'], body: Buffer.from('{"item":"Zoë 🚀"}'), status: 201 },
    {
      id: 'mtls-get',
      method: 'GET',
      target: '/orders/ord_1?q=a%20b',
      headers: ['X-Dup', 'one', 'x-dup', 'two', 'X-MiXeD', 'v  w'],
      body: Buffer.alloc(0),
      status: 200,
    },
    {
      id: 'mtls-binary',
      method: 'PATCH',
      target: '/uploads/raw',
      headers: ['Content-Type', 'application/octet-stream'],
      body: randomBytes(256 * 1024),
      status: 200,
    },
  ];
  for (const c of cases) {
    const headers = ['Host', 'shop.example.com', 'X-Request-ID', c.id, ...c.headers];
    const res = await sendRaw(
      nginx.port,
      requestHead(c.method, c.target, headers, c.body.length > 0 || c.method === 'POST' ? c.body.length : undefined),
      c.body,
    );
    assert.equal(res.status, c.status, `${c.id}: production answered`);
  }
  await waitFor('every replay', () => cases.every((c) => staging.received.some((r) => header(r.rawHeaders, 'x-request-id') === c.id)), 90_000);
  const stagingHost = new URL(staging.url).host;
  for (const c of cases) {
    const p = served.filter((r) => header(r.rawHeaders, 'x-request-id') === c.id);
    const s = staging.received.filter((r) => header(r.rawHeaders, 'x-request-id') === c.id);
    assert.equal(p.length, 1);
    assert.equal(s.length, 1, `${c.id}: replayed once`);
    assert.equal(s[0]!.method, p[0]!.method);
    assert.equal(s[0]!.url, p[0]!.url);
    assert.ok(s[0]!.body.equals(p[0]!.body), `${c.id}: body byte for byte`);
    assertStagingHeaders(s[0]!, p[0]!.rawHeaders, { host: stagingHost });
  }
});

test('an nginx whose client certificate is not allowed mirrors nothing, and production is unaffected', async () => {
  const intruder = await startNginx({
    productionPort,
    mirrorPort: stack.ingressPort,
    mirrorTls: { ca: certs.ca, cert: certs.intruder.cert, key: certs.intruder.key, serverName: 'localhost' },
  });
  try {
    for (let i = 0; i < 3; i++) {
      const res = await sendRaw(
        intruder.port,
        requestHead('POST', '/orders', ['Host', 'shop.example.com', 'X-Request-ID', `intruder-${i}`], 2),
        Buffer.from('{}'),
      );
      assert.equal(res.status, 201, 'production still answers');
    }
    // A request through the allowed nginx afterwards: once it is replayed, the earlier ones would have been too.
    await sendRaw(nginx.port, requestHead('GET', '/orders', ['Host', 'shop.example.com', 'X-Request-ID', 'after-intruder']));
    await waitFor('the later replay', () => staging.received.some((r) => header(r.rawHeaders, 'x-request-id') === 'after-intruder'), 60_000);
    assert.equal(served.filter((r) => /^intruder-/.test(header(r.rawHeaders, 'x-request-id') ?? '')).length, 3);
    assert.deepEqual(
      staging.received.filter((r) => /^intruder-/.test(header(r.rawHeaders, 'x-request-id') ?? '')),
      [],
      'nothing from the intruder reached staging',
    );
  } finally {
    await intruder.stop();
  }
});

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { SampleBackend, type ReceivedRequest } from '@mirrorplane/sample-backend';
import { RecordingServer, RedisServer, Stack, assertStagingHeaders, header, requestHead, sendRaw, waitFor, type RawResponse } from '../helpers/index.js';
import { startNginx, type NginxMirror } from '../helpers/nginx.js';

/**
 * The local topology, all real processes on loopback: nginx (the `mirror` module) in front of
 * the sample production backend, mirroring to the ingress; Redis; two workers; staging.
 * What production received is the reference: staging must receive the same requests, byte for
 * byte, minus hop-by-hop headers and with the documented changes (Host, x-mirrorplane-*).
 */

let redis: RedisServer;
let production: SampleBackend;
let productionPort: number;
const served: ReceivedRequest[] = [];
let staging: RecordingServer;
let stack: Stack;
let nginx: NginxMirror;

before(async () => {
  redis = await RedisServer.start();
  production = new SampleBackend({ name: 'production', onRequest: (r) => served.push(r) });
  productionPort = await production.listen();
  staging = await RecordingServer.start();
  stack = await Stack.start({ redis, stagingUrl: staging.url, workers: 2 });
  nginx = await startNginx({ productionPort, mirrorPort: stack.ingressPort });
});

after(async () => {
  await nginx?.stop();
  await stack?.close();
  await staging?.close();
  await production?.close();
  await redis?.close();
});

interface Case {
  name: string;
  method: string;
  target: string;
  headers: string[];
  body?: Buffer;
  /** Send the body with chunked transfer coding instead of content-length. */
  chunked?: boolean;
  status: number;
}

function send(c: Case): Promise<RawResponse> {
  const body = c.body ?? Buffer.alloc(0);
  if (c.chunked) {
    const head = requestHead(c.method, c.target, [...c.headers, 'Transfer-Encoding', 'chunked']);
    const half = Math.floor(body.length / 2);
    const chunk = (b: Buffer) => (b.length > 0 ? Buffer.concat([Buffer.from(`${b.length.toString(16)}\r\n`), b, Buffer.from('\r\n')]) : Buffer.alloc(0));
    return sendRaw(nginx.port, head, Buffer.concat([chunk(body.subarray(0, half)), chunk(body.subarray(half)), Buffer.from('0\r\n\r\n')]));
  }
  return sendRaw(nginx.port, requestHead(c.method, c.target, c.headers, body.length > 0 || c.method === 'POST' ? body.length : undefined), body);
}

function served_(requestId: string): ReceivedRequest[] {
  return served.filter((r) => header(r.rawHeaders, 'x-request-id') === requestId);
}

test('every request through nginx reaches staging as production received it, byte for byte', async () => {
  const json = (value: unknown) => Buffer.from(JSON.stringify(value), 'utf8');
  const common = ['Host', 'shop.example.com', 'User-Agent', 'e2e/1.0', 'X-Dup', 'one', 'x-dup', 'two', 'X-MiXeD-CaSe', 'Value With  Spaces'];
  const cases: Case[] = [
    {
      name: 'create',
      method: 'POST',
      target: '/orders',
      headers: ['Host', 'shop.example.com', 'X-Request-ID', 'e2e-create', 'Content-Type', 'application/json'],
      body: json({ item: 'book', note: 'Zoë, Zürich 🚀' }),
      status: 201,
    },
    {
      name: 'read',
      method: 'GET',
      target: '/orders/ord_1?fields=item&q=a%20b%26c',
      headers: [...common, 'X-Request-ID', 'e2e-read', 'Authorization', 'Bearer secret-token', 'Cookie', 'session=abc'],
      status: 200,
    },
    {
      name: 'replace',
      method: 'PUT',
      target: '/orders/ord_1',
      headers: [...common, 'X-Request-ID', 'e2e-put', 'Content-Type', 'application/json'],
      body: json({ item: 'pen' }),
      status: 200,
    },
    {
      name: 'chunked',
      method: 'POST',
      target: '/orders',
      headers: ['Host', 'shop.example.com', 'X-Request-ID', 'e2e-chunked', 'Content-Type', 'application/json'],
      body: json({ item: 'chunked', n: 2 }),
      chunked: true,
      status: 201,
    },
    {
      name: 'binary',
      method: 'PATCH',
      target: '/uploads/raw?kind=binary',
      headers: [...common, 'X-Request-ID', 'e2e-binary', 'Content-Type', 'application/octet-stream'],
      body: randomBytes(64 * 1024),
      status: 200,
    },
    // Over nginx's 1 MiB body buffer: the mirror reads the body from nginx's temporary file.
    {
      name: 'large',
      method: 'POST',
      target: '/uploads/large',
      headers: ['Host', 'shop.example.com', 'X-Request-ID', 'e2e-large', 'Content-Type', 'application/octet-stream'],
      body: randomBytes(2 * 1024 * 1024 + 3),
      status: 200,
    },
    {
      name: 'crlf bytes',
      method: 'POST',
      target: '/uploads/crlf',
      headers: ['Host', 'shop.example.com', 'X-Request-ID', 'e2e-crlf', 'X-Latin', 'caf\u00e9 na\u00efve'],
      body: Buffer.from([0, 255, 13, 10, 13, 10, 0]),
      status: 200,
    },
    { name: 'head', method: 'HEAD', target: '/orders', headers: [...common, 'X-Request-ID', 'e2e-head'], status: 405 },
    { name: 'options', method: 'OPTIONS', target: '/orders', headers: [...common, 'X-Request-ID', 'e2e-options'], status: 405 },
    { name: 'delete', method: 'DELETE', target: '/orders/ord_1', headers: [...common, 'X-Request-ID', 'e2e-delete'], status: 200 },
    {
      name: 'raw target',
      method: 'GET',
      target: '/files/a%2Fb/../c?x=%20y&x=2',
      headers: ['Host', 'shop.example.com', 'X-Request-ID', 'e2e-raw-target'],
      status: 200,
    },
    // No X-Request-ID: nginx makes one, sends it to production and the mirror, and answers with it.
    {
      name: 'no request id',
      method: 'POST',
      target: '/orders',
      headers: ['Host', 'shop.example.com', 'Content-Type', 'application/json'],
      body: json({ item: 'anonymous' }),
      status: 201,
    },
  ];

  const ids: string[] = [];
  for (const c of cases) {
    const res = await send(c);
    assert.equal(res.status, c.status, `${c.name}: production's answer comes back through nginx`);
    const echoed = /^x-request-id: (.+)$/im.exec(res.head)?.[1]?.trim();
    assert.ok(echoed, `${c.name}: the response carries X-Request-ID`);
    const sentId = header(c.headers, 'x-request-id');
    if (sentId) assert.equal(echoed, sentId, `${c.name}: the client's X-Request-ID is kept`);
    else assert.match(echoed, /^[0-9a-f]{32}$/, 'nginx made a request id');
    ids.push(echoed);
  }
  assert.equal(served.length, cases.length, 'production served each request once');

  await waitFor(`staging to receive ${cases.length} replays`, () => staging.received.length >= cases.length, 90_000);
  const stagingHost = new URL(staging.url).host;
  for (const [i, c] of cases.entries()) {
    const id = ids[i] as string;
    const atProduction = served_(id);
    assert.equal(atProduction.length, 1, `${c.name}: production saw ${id} once`);
    const p = atProduction[0] as ReceivedRequest;
    const atStaging = staging.received.filter((r) => header(r.rawHeaders, 'x-request-id') === id);
    assert.equal(atStaging.length, 1, `${c.name}: staging received ${id} once`);
    const s = atStaging[0]!;
    assert.equal(s.method, p.method, `${c.name}: method`);
    assert.equal(s.url, p.url, `${c.name}: target`);
    assert.equal(s.url, c.target, `${c.name}: the target exactly as the client sent it`);
    assert.ok(s.body.equals(p.body), `${c.name}: body is byte-identical (${s.body.length} vs ${p.body.length} bytes)`);
    if (c.body && c.method !== 'HEAD') assert.ok(p.body.equals(c.body), `${c.name}: production got the client's body`);
    assertStagingHeaders(s, p.rawHeaders, { host: stagingHost });
  }
  assert.equal(staging.received.length, cases.length, 'no replay twice');

  const status = await waitFor('the stream to drain', async () => {
    const st = await stack.status();
    return st.backlog === 0 && st.pending === 0 ? st : null;
  });
  assert.equal(status.replayed, cases.length);
  assert.equal(status.failed, 0);
  assert.equal(status.retrying, 0);
});

test('production answers while the ingress is down, and mirroring resumes when it is back', async () => {
  await stack.ingress.stop('SIGKILL');
  const before = served.length;
  const stagingBefore = staging.received.length;
  for (let i = 0; i < 20; i++) {
    const res = await sendRaw(
      nginx.port,
      requestHead('POST', '/orders', ['Host', 'shop.example.com', 'X-Request-ID', `down-${i}`, 'Content-Type', 'application/json'], 14),
      Buffer.from('{"item":"cup"}'),
    );
    assert.equal(res.status, 201, 'production still creates orders');
    assert.match(res.body.toString(), /"item":"cup"/);
  }
  assert.equal(served.length, before + 20);

  await stack.startIngress();
  // The ingress listens before its Redis connection is ready and answers 503 until then; nginx
  // does not retry a mirror, so keep sending until a copy makes it through.
  let n = 0;
  await waitFor(
    'a replay after the restart',
    async () => {
      const res = await sendRaw(nginx.port, requestHead('GET', `/orders?after=restart`, ['Host', 'shop.example.com', 'X-Request-ID', `after-restart-${n++}`]));
      assert.equal(res.status, 200);
      return staging.received.some((r) => /^after-restart-/.test(header(r.rawHeaders, 'x-request-id') ?? ''));
    },
    60_000,
    200,
  );
  // nginx mirrors fire-and-forget: copies sent while the ingress was down are not retried by it.
  const lost = staging.received.slice(stagingBefore).filter((r) => /^down-/.test(header(r.rawHeaders, 'x-request-id') ?? ''));
  assert.equal(lost.length, 0);
});

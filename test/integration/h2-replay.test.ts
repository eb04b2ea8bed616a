import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect, createServer, type Http2Server, type IncomingHttpHeaders, type ServerHttp2Stream } from 'node:http2';
import type { AddressInfo } from 'node:net';
import { stringify } from 'yaml';
import { RedisServer, Stack, waitFor } from '../helpers/index.js';

// An HTTP/2 entry replayed over HTTP/2 to a node:http2 staging: what staging receives field by
// field (pseudo-headers, order, trailers), rules matching on :path and metadata, and what the
// recording keeps of staging's answer (its trailers).

interface StagingStream {
  rawHeaders: string[];
  body: Buffer;
  trailers: string[];
}

let redis: RedisServer;
let staging: Http2Server;
let stagingUrl: string;
const received: StagingStream[] = [];
let stack: Stack;
let dir: string;

before(async () => {
  redis = await RedisServer.start();
  staging = createServer();
  staging.on('stream', (stream: ServerHttp2Stream, _headers: IncomingHttpHeaders, _flags: number, rawHeaders: string[]) => {
    const chunks: Buffer[] = [];
    const got: StagingStream = { rawHeaders, body: Buffer.alloc(0), trailers: [] };
    stream.on('trailers', (_t: IncomingHttpHeaders, _f: number, raw: string[]) => (got.trailers = raw));
    stream.on('data', (c: Buffer) => chunks.push(c));
    stream.on('end', () => {
      got.body = Buffer.concat(chunks);
      received.push(got);
      stream.respond({ ':status': 200, 'content-type': 'application/grpc' }, { waitForTrailers: true });
      stream.once('wantTrailers', () => stream.sendTrailers({ 'grpc-status': '0', 'x-staging-trailer': 'yes' }));
      stream.end(Buffer.from([0, 0, 0, 0, 2, 0x08, 0x01]));
    });
  });
  await new Promise<void>((resolve) => staging.listen(0, '127.0.0.1', resolve));
  stagingUrl = `http://127.0.0.1:${(staging.address() as AddressInfo).port}`;
  dir = mkdtempSync(join(tmpdir(), 'mp-h2-replay-'));
  const config = join(dir, 'config.yaml');
  writeFileSync(
    config,
    stringify({
      origins: { default: stagingUrl },
      rules: [
        { name: 'orders-by-path', match: { pathPrefix: '/shop.Orders/' }, setHeaders: { 'x-rule': 'orders' } },
        { name: 'tenant-metadata', match: { headers: { 'x-tenant': 'acme' } }, setHeaders: { 'x-rule-tenant': 'acme' } },
      ],
      recording: { dir: join(dir, 'recordings'), bodyLimit: 1024 },
    }),
  );
  stack = await Stack.start({ redis, stagingUrl, workers: 1, env: { MIRRORPLANE_CONFIG: config } });
});

after(async () => {
  await stack?.close();
  await new Promise((resolve) => staging?.close(resolve));
  await redis?.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

test('staging receives the method, :path, its own :authority, the fields in order (rules on :path and metadata applied), the body and the trailers', async () => {
  const session = connect(`http://127.0.0.1:${stack.ingressPort}`);
  const body = Buffer.from([0, 0, 0, 0, 4, 0xde, 0xad, 0xbe, 0xef]);
  try {
    await new Promise<void>((resolve, reject) => {
      const stream = session.request(
        { ':method': 'POST', ':path': '/shop.Orders/Create', 'content-type': 'application/grpc', te: 'trailers', 'x-tenant': 'acme', 'x-trace-bin': 'AAE=' },
        { waitForTrailers: true },
      );
      stream.on('wantTrailers', () => stream.sendTrailers({ 'x-client-checksum': 'c0ffee' }));
      stream.on('error', reject);
      stream.on('response', (h) => (h[':status'] === 200 ? undefined : reject(new Error(`ingress answered ${h[':status']}`))));
      stream.resume();
      stream.on('close', () => resolve());
      stream.end(body);
    });
  } finally {
    session.close();
  }
  const [got] = await waitFor('staging received the stream', () => (received.length > 0 ? received : null));
  assert.ok(got);
  const id = got.rawHeaders[got.rawHeaders.indexOf('x-mirrorplane-id') + 1];
  assert.deepEqual(got.rawHeaders, [
    ':method',
    'POST',
    ':path',
    '/shop.Orders/Create',
    ':scheme',
    'http',
    ':authority',
    stagingUrl.slice('http://'.length),
    'content-type',
    'application/grpc',
    'te',
    'trailers',
    'x-tenant',
    'acme',
    'x-trace-bin',
    'AAE=',
    'x-mirrorplane-id',
    id,
    'x-mirrorplane-attempt',
    '1',
    'x-rule',
    'orders',
    'x-rule-tenant',
    'acme',
  ]);
  assert.deepEqual(got.body, body);
  assert.deepEqual(got.trailers, ['x-client-checksum', 'c0ffee']);

  const recordings = join(dir, 'recordings');
  const line = await waitFor('the replay is recorded', () => {
    const files = readdirSync(recordings, { recursive: true }).filter((f) => String(f).endsWith('.jsonl'));
    const text = files.map((f) => readFileSync(join(recordings, String(f)), 'utf8')).join('');
    return text.trim() ? (JSON.parse(text.trim().split('\n')[0] as string) as Record<string, unknown>) : null;
  });
  assert.equal(line.protocol, 'HTTP/2');
  const response = line.response as { status: number; trailers: [string, string][] };
  assert.equal(response.status, 200);
  assert.deepEqual(response.trailers, [
    ['grpc-status', '0'],
    ['x-staging-trailer', 'yes'],
  ]);
  assert.deepEqual(line.rules, ['orders-by-path', 'tenant-metadata']);
});

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { connect as h2connect, createServer, type ClientHttp2Session, type Http2Server, type ServerHttp2Stream } from 'node:http2';
import type { AddressInfo } from 'node:net';
import { connect as tlsConnect, type ConnectionOptions } from 'node:tls';
import { RedisServer, Stack, TestCerts, waitFor } from '../helpers/index.js';

/**
 * Issue #20: HTTP/2 (gRPC) on the TLS traffic port, chosen by ALPN (h2) or with prior knowledge
 * over TLS (no ALPN, the preface first): answered 200, stored, and replayed over HTTP/2 to a
 * node:http2 staging with the body byte for byte. HTTP/1.1 over TLS keeps working beside it.
 */

let certs: TestCerts;
let redis: RedisServer;
let staging: Http2Server;
let stack: Stack;
const received: { rawHeaders: string[]; body: Buffer }[] = [];

before(async () => {
  certs = TestCerts.create();
  redis = await RedisServer.start();
  staging = createServer();
  staging.on('stream', (stream: ServerHttp2Stream, _h: unknown, _f: number, rawHeaders: string[]) => {
    const chunks: Buffer[] = [];
    stream.on('data', (c: Buffer) => chunks.push(c));
    stream.on('end', () => {
      received.push({ rawHeaders, body: Buffer.concat(chunks) });
      stream.respond({ ':status': 200 });
      stream.end();
    });
  });
  await new Promise<void>((resolve) => staging.listen(0, '127.0.0.1', resolve));
  stack = await Stack.start({
    redis,
    stagingUrl: `http://127.0.0.1:${(staging.address() as AddressInfo).port}`,
    workers: 1,
    ingressEnv: { INGRESS_TLS_CERT: certs.server.cert, INGRESS_TLS_KEY: certs.server.key, INGRESS_TLS_CA: certs.ca },
  });
});

after(async () => {
  await stack?.close();
  await new Promise((r) => staging?.close(r));
  await redis?.close();
  certs?.remove();
});

const client = (): ConnectionOptions => ({ ca: certs.read(certs.ca), cert: certs.read(certs.client.cert), key: certs.read(certs.client.key) });

/** A body with every byte value, `n` bytes long. */
const binary = (n: number) => Buffer.from(Array.from({ length: n }, (_, i) => (i * 37 + 11) & 0xff));

async function post(session: ClientHttp2Session, id: string, body: Buffer): Promise<number> {
  try {
    return await new Promise<number>((resolve, reject) => {
      session.on('error', reject);
      const req = session.request({ ':method': 'POST', ':path': `/pkg.Svc/${id}`, 'x-request-id': id, 'content-type': 'application/grpc' });
      req.on('response', (h) => resolve(Number(h[':status'])));
      req.on('error', reject);
      req.end(body);
      setTimeout(() => reject(new Error('no answer in 20 s')), 20_000).unref();
    });
  } finally {
    session.destroy();
  }
}

async function replayed(id: string): Promise<Buffer> {
  const got = await waitFor(`the replay of ${id}`, () => received.find((r) => r.rawHeaders.includes(id)), 30_000);
  return got.body;
}

test('HTTP/2 with ALPN h2 on the TLS port: the ingress chooses h2, answers 200, the body is replayed byte for byte', async () => {
  const body = binary(70_000);
  const session = h2connect(`https://localhost:${stack.ingressPort}`, { ...client(), ALPNProtocols: ['h2', 'http/1.1'] });
  const alpn = new Promise<string | false | undefined>((r) =>
    session.once('connect', () => r((session.socket as unknown as { alpnProtocol?: string | false }).alpnProtocol)),
  );
  assert.equal(await post(session, 'tls-alpn-h2', body), 200);
  assert.equal(await alpn, 'h2', 'h2 negotiated by ALPN');
  assert.ok((await replayed('tls-alpn-h2')).equals(body));
});

test('HTTP/2 with prior knowledge over TLS (no ALPN offered): answered 200, the body is replayed byte for byte', async () => {
  const body = binary(1000);
  const session = h2connect(`https://localhost:${stack.ingressPort}`, {
    createConnection: () => tlsConnect({ host: '127.0.0.1', port: stack.ingressPort, servername: 'localhost', ...client() }),
  });
  assert.equal(await post(session, 'tls-prior-knowledge', body), 200);
  assert.ok((await replayed('tls-prior-knowledge')).equals(body));
});

test('HTTP/2 with prior knowledge over TLS after ALPN chose http/1.1: answered 200 and replayed', async () => {
  const body = binary(10);
  const session = h2connect(`https://localhost:${stack.ingressPort}`, {
    createConnection: () => tlsConnect({ host: '127.0.0.1', port: stack.ingressPort, servername: 'localhost', ALPNProtocols: ['http/1.1'], ...client() }),
  });
  assert.equal(await post(session, 'tls-h1-alpn-then-h2', body), 200);
  assert.ok((await replayed('tls-h1-alpn-then-h2')).equals(body));
});

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, constants, type Http2Server, type IncomingHttpHeaders, type ServerHttp2Stream } from 'node:http2';
import type { AddressInfo } from 'node:net';
import { StagingTransportError, WireRequestError } from '@mirrorplane/core';
import { Http2Origin } from '../../apps/worker/src/http2-client.js';
import { freePort } from '../helpers/index.js';

// The worker's HTTP/2 wire: what staging receives, and each way a replay can fail mapped to the
// error the retry policy reads (transport: retryable; a request node cannot write: unreplayable).

type Handler = (stream: ServerHttp2Stream, headers: IncomingHttpHeaders, raw: string[]) => void;

async function staging(handler: Handler): Promise<{ server: Http2Server; url: string }> {
  const server = createServer();
  server.on('stream', (stream: ServerHttp2Stream, headers: IncomingHttpHeaders, _flags: number, raw: string[]) => {
    stream.on('error', () => undefined);
    handler(stream, headers, raw);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { server, url: `http://127.0.0.1:${(server.address() as AddressInfo).port}` };
}

const request = (over: Partial<Parameters<Http2Origin['request']>[0]> = {}) => ({
  method: 'POST',
  path: '/pkg.Svc/Call',
  headers: ['content-type', 'application/grpc'],
  body: Buffer.from([0, 0, 0, 0, 1, 9]),
  trailers: [],
  ...over,
});

const signal = () => new AbortController().signal;

test('sends fields lower-cased in order (repeats together, connection-specific ones dropped, content-length true) and the trailers; reads headers, body and trailers', async () => {
  let seen: { raw: string[]; body: Buffer; trailers: string[] } | null = null;
  const { server, url } = await staging((stream, _h, raw) => {
    const chunks: Buffer[] = [];
    let trailers: string[] = [];
    stream.on('trailers', (_t: IncomingHttpHeaders, _f: number, r: string[]) => (trailers = r));
    stream.on('data', (c: Buffer) => chunks.push(c));
    stream.on('end', () => {
      seen = { raw, body: Buffer.concat(chunks), trailers };
      stream.respond({ ':status': 200, 'content-type': 'application/grpc', 'x-answer': 'a' }, { waitForTrailers: true });
      stream.once('wantTrailers', () => stream.sendTrailers({ 'grpc-status': '5', 'grpc-message': 'not%20found' }));
      stream.end(Buffer.from([0, 0, 0, 0, 1, 7]));
    });
  });
  const origin = new Http2Origin(url, { bodyLimit: 4 });
  try {
    const response = await origin.request(
      request({
        headers: [
          'Content-Type',
          'application/grpc',
          'X-A',
          '1',
          'connection',
          'x-b',
          'x-b',
          '2',
          'Keep-Alive',
          '5',
          'x-a',
          '3',
          'Content-Length',
          '999',
          'te',
          'gzip',
          'TE',
          'trailers',
        ],
        trailers: ['x-sum', '7'],
      }),
      'staging.test:8443',
      signal(),
    );
    assert.deepEqual(seen!.raw, [
      ':method',
      'POST',
      ':path',
      '/pkg.Svc/Call',
      ':scheme',
      'http',
      ':authority',
      'staging.test:8443',
      'content-type',
      'application/grpc',
      'x-a',
      '1',
      'x-a',
      '3',
      'x-b',
      '2',
      'content-length',
      '6',
      'te',
      'trailers',
    ]);
    assert.deepEqual(seen!.body, Buffer.from([0, 0, 0, 0, 1, 9]));
    assert.deepEqual(seen!.trailers, ['x-sum', '7']);
    assert.equal(response.statusCode, 200);
    assert.deepEqual(response.headers.slice(0, 4), ['content-type', 'application/grpc', 'x-answer', 'a']);
    assert.deepEqual(response.body, Buffer.from([0, 0, 0, 0]), 'cut at bodyLimit');
    assert.equal(response.truncated, true);
    assert.deepEqual(response.trailers, ['grpc-status', '5', 'grpc-message', 'not%20found']);
  } finally {
    await origin.close();
    server.close();
  }
});

test('a staging that refuses connections, resets the stream, or drops the connection fails the try as a retryable transport error; the next try opens a new session', async () => {
  const refused = new Http2Origin(`http://127.0.0.1:${await freePort()}`, { bodyLimit: 0 });
  await assert.rejects(refused.request(request(), 'x', signal()), (e: unknown) => e instanceof StagingTransportError && e.retryable === true);
  await refused.close();

  let mode: 'reset' | 'drop' | 'ok' = 'reset';
  const { server, url } = await staging((stream) => {
    if (mode === 'reset') return void stream.close(constants.NGHTTP2_INTERNAL_ERROR);
    if (mode === 'drop') return void stream.session?.destroy();
    stream.resume();
    stream.on('end', () => stream.respond({ ':status': 200, 'content-type': 'application/grpc', 'grpc-status': '0' }, { endStream: true }));
  });
  const origin = new Http2Origin(url, { bodyLimit: 0 });
  try {
    await assert.rejects(
      origin.request(request(), 'x', signal()),
      (e: unknown) => e instanceof StagingTransportError && /INTERNAL_ERROR|reset/.test(e.message),
    );
    mode = 'drop';
    await assert.rejects(origin.request(request(), 'x', signal()), StagingTransportError);
    mode = 'ok';
    const answer = await origin.request(request(), 'x', signal());
    assert.equal(answer.statusCode, 200);
  } finally {
    await origin.close();
    server.close();
  }
});

test('a deadline aborts the stream with its reason; a field node cannot write is a WireRequestError before anything is sent', async () => {
  let streams = 0;
  const { server, url } = await staging(() => {
    streams += 1; // never answers
  });
  const origin = new Http2Origin(url, { bodyLimit: 0 });
  try {
    const controller = new AbortController();
    const pending = origin.request(request(), 'x', controller.signal);
    setTimeout(() => controller.abort(new StagingTransportError('deadline')), 50);
    await assert.rejects(pending, (e: unknown) => e instanceof StagingTransportError && e.message === 'deadline');
    const before = streams;
    await assert.rejects(origin.request(request({ headers: ['x-bad', 'a\r\nb'] }), 'x', signal()), WireRequestError);
    await assert.rejects(origin.request(request({ headers: ['bad name', 'v'] }), 'x', signal()), WireRequestError);
    assert.equal(streams, before);
  } finally {
    await origin.close();
    server.close();
  }
});

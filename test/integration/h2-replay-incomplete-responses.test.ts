import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer as createHttp1Server } from 'node:http';
import { createServer, constants, type Http2Server, type ServerHttp2Stream } from 'node:http2';
import type { AddressInfo } from 'node:net';
import { StagingTransportError } from '@mirrorplane/core';
import { Http2Origin } from '../../apps/worker/src/http2-client.js';

// Issue #18: an HTTP/2 replay is complete only once staging's END_STREAM arrived (for gRPC with
// grpc-status, in trailers or trailers-only). Every other way a response can end — a reset with
// any code (NO_ERROR included) before it, GOAWAY, a closed connection, the deadline — is a
// retryable transport failure. Each member of that family against a real node:http2 staging,
// and the complete forms beside them; and the error for a staging that speaks HTTP/1.1 only.

type Handler = (stream: ServerHttp2Stream, path: string) => void;

async function staging(handler: Handler): Promise<{ server: Http2Server; url: string }> {
  const server = createServer();
  server.on('stream', (stream: ServerHttp2Stream, headers) => {
    stream.on('error', () => undefined);
    stream.on('data', () => undefined);
    stream.on('end', () => handler(stream, headers[':path'] as string));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { server, url: `http://127.0.0.1:${(server.address() as AddressInfo).port}` };
}

const GRPC_HALF = Buffer.from([0, 0, 0, 0, 10, 1, 2]);

/** Each way to end a response before it is complete. */
const incomplete: Record<string, Handler> = {
  'reset NO_ERROR after headers and half a message (no END_STREAM)': (s) => {
    s.respond({ ':status': 200, 'content-type': 'application/grpc' });
    s.write(GRPC_HALF, () => s.close(constants.NGHTTP2_NO_ERROR));
  },
  'reset CANCEL after headers': (s) => {
    s.respond({ ':status': 200, 'content-type': 'application/grpc' });
    s.write(GRPC_HALF, () => s.close(constants.NGHTTP2_CANCEL));
  },
  'reset INTERNAL_ERROR before any headers': (s) => s.close(constants.NGHTTP2_INTERNAL_ERROR),
  'GOAWAY then the connection destroyed mid-body': (s) => {
    s.respond({ ':status': 200, 'content-type': 'application/grpc' });
    s.write(GRPC_HALF, () => {
      s.session?.goaway(constants.NGHTTP2_NO_ERROR, 1);
      setImmediate(() => s.session?.destroy());
    });
  },
  'the connection destroyed mid-body (no GOAWAY)': (s) => {
    s.respond({ ':status': 200, 'content-type': 'application/grpc' });
    s.write(GRPC_HALF, () => s.session?.destroy());
  },
  'gRPC 200 ended (END_STREAM on DATA) without grpc-status': (s) => {
    s.respond({ ':status': 200, 'content-type': 'application/grpc' });
    s.end(GRPC_HALF);
  },
};

/** The complete forms. */
const complete: Record<string, [Handler, grpc: boolean]> = {
  'gRPC with trailers': [
    (s) => {
      s.respond({ ':status': 200, 'content-type': 'application/grpc' }, { waitForTrailers: true });
      s.once('wantTrailers', () => s.sendTrailers({ 'grpc-status': '0' }));
      s.end(Buffer.from([0, 0, 0, 0, 0]));
    },
    true,
  ],
  'gRPC trailers-only': [(s) => s.respond({ ':status': 200, 'content-type': 'application/grpc', 'grpc-status': '14' }, { endStream: true }), true],
  'HTTP/2 with a body ended by END_STREAM, then RST_STREAM NO_ERROR': [
    (s) => {
      s.respond({ ':status': 200 });
      s.end('done', () => s.close(constants.NGHTTP2_NO_ERROR));
    },
    false,
  ],
  'HTTP/2 headers-only 204': [(s) => s.respond({ ':status': 204 }, { endStream: true }), false],
};

const req = (grpc: boolean) => ({
  method: 'POST',
  path: '/pkg.Svc/Call',
  headers: grpc ? ['content-type', 'application/grpc'] : ['content-type', 'text/plain'],
  body: Buffer.from([0, 0, 0, 0, 1, 9]),
  trailers: [],
});

const signal = () => new AbortController().signal;

for (const [name, handler] of Object.entries(incomplete)) {
  test(`incomplete: ${name} → retryable StagingTransportError`, async () => {
    const { server, url } = await staging(handler);
    const origin = new Http2Origin(url, { bodyLimit: 1024 });
    try {
      await assert.rejects(origin.request(req(true), 'x', signal()), (e: unknown) => e instanceof StagingTransportError && e.retryable === true);
    } finally {
      await origin.close();
      await new Promise((r) => server.close(r));
    }
  });
}

for (const [name, [handler, grpc]] of Object.entries(complete)) {
  test(`complete: ${name} → resolved`, async () => {
    const { server, url } = await staging(handler);
    const origin = new Http2Origin(url, { bodyLimit: 1024 });
    try {
      const response = await origin.request(req(grpc), 'x', signal());
      assert.ok(response.statusCode >= 200);
    } finally {
      await origin.close();
      await new Promise((r) => server.close(r));
    }
  });
}

test('a staging that speaks HTTP/1.1 only is named as such in the error', async () => {
  const server = createHttp1Server((_q, r) => r.end('hi'));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const origin = new Http2Origin(url, { bodyLimit: 0 });
  try {
    await assert.rejects(
      origin.request(req(true), 'x', signal()),
      (e: unknown) =>
        e instanceof StagingTransportError && e.message.includes(`staging at ${url} does not speak HTTP/2 (h2c): it answered the HTTP/2 preface with HTTP/1.1`),
    );
  } finally {
    await origin.close();
    server.close();
  }
});

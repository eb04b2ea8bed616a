import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { connect, type ClientHttp2Session, type ClientHttp2Stream, type IncomingHttpHeaders } from 'node:http2';
import { decodeEntry } from '@mirrorplane/core';
import { RecordingServer, RedisServer, Stack, waitFor } from '../helpers/index.js';

// Issue #18, faults during HTTP/2 streams: Redis down (no grpc-status 0 unless stored), SIGTERM
// of the ingress with a stream mid-body (graceful: the stream finishes and is stored).

let redis: RedisServer;
let staging: RecordingServer;
let stack: Stack;

before(async () => {
  redis = await RedisServer.start();
  staging = await RecordingServer.start();
  stack = await Stack.start({ redis, stagingUrl: staging.url, workers: 0, env: { SHUTDOWN_TIMEOUT_MS: '15000' } });
});

after(async () => {
  await stack?.close();
  await staging?.close();
  await redis?.close();
});

const streamKey = (): string => `{${stack.env.MIRRORPLANE_PREFIX}}:stream`;

async function stored(path: string): Promise<number> {
  const client = redis.client();
  try {
    const rows = (await client.xrangeBuffer(streamKey(), '-', '+')) as [Buffer, Buffer[]][];
    return rows.map(([id, fields]) => decodeEntry(id.toString(), fields)).filter((e) => e.request.target === path).length;
  } finally {
    client.disconnect();
  }
}

interface Answer {
  headers: IncomingHttpHeaders;
  trailers: IncomingHttpHeaders;
  rstCode: number;
}

function watch(stream: ClientHttp2Stream): Promise<Answer> {
  return new Promise((resolve) => {
    const out: Answer = { headers: {}, trailers: {}, rstCode: 0 };
    stream.on('response', (h) => (out.headers = h));
    stream.on('trailers', (t) => (out.trailers = t));
    stream.on('data', () => undefined);
    stream.on('error', () => undefined);
    stream.on('close', () => {
      out.rstCode = stream.rstCode ?? 0;
      resolve(out);
    });
  });
}

const grpc = (path: string) => ({ ':method': 'POST', ':path': path, 'content-type': 'application/grpc', te: 'trailers' });
const grpcStatus = (a: Answer): string | undefined => (a.trailers['grpc-status'] ?? a.headers['grpc-status']) as string | undefined;

function open(): ClientHttp2Session {
  const session = connect(`http://127.0.0.1:${stack.ingressPort}`);
  session.on('error', () => undefined);
  return session;
}

test('Redis down during a gRPC stream: the answer is not grpc-status 0, and a 0 only ever follows a stored entry', async () => {
  const session = open();
  try {
    await redis.stop();
    const stream = session.request(grpc('/fault/redis-down'));
    const answer = watch(stream);
    stream.end(Buffer.from([0, 0, 0, 0, 1, 9]));
    const a = await answer;
    await redis.start();
    const n = await stored('/fault/redis-down');
    if (grpcStatus(a) === '0') assert.equal(n, 1, 'grpc-status 0 was sent for an entry Redis does not hold');
    else assert.notEqual(grpcStatus(a), undefined, `a gRPC status for the refusal (got headers ${JSON.stringify(a.headers)}, rst ${a.rstCode})`);
  } finally {
    session.destroy();
  }
});

test('SIGTERM with an HTTP/2 stream mid-body: the stream may finish, is stored and answered grpc-status 0, exit 0', async () => {
  await waitFor('redis back', async () => {
    const c = redis.client();
    try {
      return (await c.ping()) === 'PONG';
    } catch {
      return false;
    } finally {
      c.disconnect();
    }
  });
  if (stack.ingress.child.exitCode !== null) await stack.startIngress();
  const session = open();
  try {
    // A first exchange so the session is up and the ingress is known to serve it.
    // (Right after Redis came back the ingress may still be reconnecting: UNAVAILABLE until then.)
    await waitFor('the ingress stores again', async () => {
      const warm = session.request(grpc('/fault/warm'));
      const warmAnswer = watch(warm);
      warm.end(Buffer.from([0, 0, 0, 0, 0]));
      return grpcStatus(await warmAnswer) === '0';
    });
    const stream = session.request(grpc('/fault/sigterm'));
    const answer = watch(stream);
    stream.write(Buffer.from([0, 0, 0, 0, 4, 1, 2]));
    await waitFor('first half sent', () => stream.writableLength === 0);
    const ingress = stack.ingress;
    ingress.child.kill('SIGTERM');
    // The shutdown has begun (GOAWAY on the session) before the rest of the body is sent.
    await waitFor(
      'GOAWAY',
      () =>
        new Promise<boolean>((r) =>
          session.closed || session.destroyed
            ? r(true)
            : setTimeout(() => r(ingress.stdout.includes('shutting down') || ingress.stdout.includes('stopping')), 50),
        ),
      15_000,
    ).catch(() => undefined);
    stream.end(Buffer.from([3, 4]));
    const a = await answer;
    assert.equal(grpcStatus(a), '0', `in-flight stream answered OK (headers ${JSON.stringify(a.headers)}, rst ${a.rstCode})`);
    assert.equal(await stored('/fault/sigterm'), 1);
    assert.equal(await ingress.exited, 0);
  } finally {
    session.destroy();
  }
});

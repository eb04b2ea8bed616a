import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { connect, type Socket } from 'node:net';
import { RecordingServer, RedisServer, Stack, sendRaw, waitFor } from '../helpers/index.js';

// After the ingress answers a request with `connection: close` it half-closes and reads nothing
// more. Bytes the client sent after that request (a pipelined request it should not have sent)
// were already fed to the parser, so the connection counts as "mid-request" for ever: the
// deadline check skips closed connections and the idle timer skips connections mid-request.
// A client that never closes its side holds the socket — and one of MAX_CONNECTIONS — for good.
// Every other way a connection ends (a refusal) destroys it after 5 s at most.

const MAX_CONNECTIONS = 4;
let redis: RedisServer;
let staging: RecordingServer;
let stack: Stack;

before(async () => {
  redis = await RedisServer.start();
  staging = await RecordingServer.start();
  stack = await Stack.start({
    redis,
    stagingUrl: staging.url,
    workers: 0,
    env: { MAX_CONNECTIONS: String(MAX_CONNECTIONS), HEADERS_TIMEOUT_MS: '1000', BODY_TIMEOUT_MS: '1000' },
  });
});

after(async () => {
  await stack?.close();
  await staging?.close();
  await redis?.close();
});

/** Streams `tail` a byte every `everyMs` after `first`; resolves with the answer bytes once the ingress closes. */
function trickle(first: string, tail: string, everyMs: number): Promise<{ answers: string; sentOfTail: number }> {
  return new Promise((resolve) => {
    const socket = connect({ port: stack.ingressPort, host: '127.0.0.1' });
    let answers = '';
    let sent = 0;
    let timer: NodeJS.Timeout | undefined;
    socket.on('data', (d: Buffer) => {
      answers += d.toString('latin1');
    });
    socket.on('error', () => undefined);
    socket.on('close', () => {
      clearInterval(timer);
      resolve({ answers, sentOfTail: sent });
    });
    socket.on('connect', () => {
      socket.write(first);
      timer = setInterval(() => {
        if (sent < tail.length && !socket.destroyed) socket.write(tail[sent++] as string);
      }, everyMs);
    });
  });
}

async function streamHas(target: string): Promise<boolean> {
  const c = redis.client();
  try {
    const entries = await c.xrangeBuffer(`{${stack.env.MIRRORPLANE_PREFIX}}:stream`, '-', '+');
    return entries.some(([, f]) => f.some((v) => v.toString('latin1') === target));
  } finally {
    c.disconnect();
  }
}

test('slowloris behind a pipelined request: the first is answered 200, the slow head 408 headers_timeout, the slow body 408 body_timeout; neither slow one stored', async () => {
  const a = 'POST /slow/a HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\nA';
  const slowHead = await trickle(a, `GET /slow/head HTTP/1.1\r\nHost: x\r\nX-Pad: ${'p'.repeat(200)}\r\n\r\n`, 100);
  assert.match(slowHead.answers, /^HTTP\/1\.1 200 OK\r\ncontent-length: 0\r\n\r\nHTTP\/1\.1 408 [^]*x-mirrorplane-drop: headers_timeout/, slowHead.answers);
  assert.ok(slowHead.sentOfTail < 60, `the slow head was read for ${slowHead.sentOfTail} bytes (${slowHead.sentOfTail / 10} s)`);
  const slowBody = await trickle(`${a}PUT /slow/body HTTP/1.1\r\nHost: x\r\nContent-Length: 200\r\n\r\n`, 'b'.repeat(200), 100);
  assert.match(slowBody.answers, /^HTTP\/1\.1 200 OK\r\ncontent-length: 0\r\n\r\nHTTP\/1\.1 408 [^]*x-mirrorplane-drop: body_timeout/, slowBody.answers);
  assert.ok(slowBody.sentOfTail < 60, `the slow body was read for ${slowBody.sentOfTail} bytes`);
  assert.equal(await streamHas('/slow/a'), true);
  assert.equal(await streamHas('/slow/head'), false);
  assert.equal(await streamHas('/slow/body'), false);
});

test('a client that sends bytes after a connection: close request and never closes does not hold a connection slot for ever', async () => {
  const sockets: Socket[] = [];
  try {
    for (let i = 0; i < MAX_CONNECTIONS; i++) {
      const socket = connect({ port: stack.ingressPort, host: '127.0.0.1', allowHalfOpen: true });
      socket.on('error', () => undefined);
      let answer = '';
      socket.on('data', (d: Buffer) => {
        answer += d.toString('latin1');
      });
      sockets.push(socket);
      await new Promise<void>((resolve) => socket.once('connect', () => resolve()));
      socket.write(`POST /close/${i} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 2\r\n\r\nhiGET /after HTTP/1.1\r\n`);
      await waitFor(`answer on connection ${i}`, () => answer.includes('\r\n\r\n'), 10_000);
      assert.match(answer, /^HTTP\/1\.1 200 OK\r\nconnection: close\r\n/);
    }
    // The slots should come free (the ingress has answered and half-closed every one of them;
    // HEADERS_TIMEOUT_MS and BODY_TIMEOUT_MS are 1 s). A fresh request must be served again.
    const started = Date.now();
    let last = '';
    const served = await waitFor(
      'a fresh connection to be served',
      async () => {
        try {
          const r = await sendRaw(stack.ingressPort, 'GET /fresh HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
          return r.status === 200 ? true : null;
        } catch (error) {
          last = (error as Error).message;
          return null;
        }
      },
      // Past the ingress's 75 s keep-alive idle timer too.
      100_000,
      500,
    ).catch(() => false);
    assert.ok(
      served,
      `no request served for ${((Date.now() - started) / 1000).toFixed(0)} s: ${MAX_CONNECTIONS} half-closed connections hold every MAX_CONNECTIONS slot (last error: ${last})`,
    );
  } finally {
    for (const s of sockets) s.destroy();
  }
});

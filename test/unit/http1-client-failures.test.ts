import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { Http1Origin, type WireRequest } from '@mirrorplane/worker';
import { RequestParser } from '@mirrorplane/ingress';
import { waitFor } from '../helpers/index.js';

// How the replay client (apps/worker/src/http1-client.ts) fails: it never resends by itself a
// request staging may have read; broken response framing and unbounded lines are errors (the
// worker retries with the next attempt) and the connection is dropped. A raw staging server
// records every request it reads off its sockets.

const servers: Server[] = [];
after(() => {
  for (const s of servers) s.close();
});

/** A raw staging: `onRequest(socket, n, target)` is called for each request it reads (n counts from 1). */
async function rawStaging(onRequest: (socket: Socket, n: number, target: string) => void): Promise<{ port: number; targets: string[]; sockets: Set<Socket> }> {
  const targets: string[] = [];
  const sockets = new Set<Socket>();
  const server = createServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => undefined);
    const parser = new RequestParser({ maxHeaderBytes: 1 << 20, maxBodyBytes: 1 << 24 });
    socket.on('data', (chunk: Buffer) => {
      parser.feed(chunk);
      for (let e = parser.next(); e !== null; e = parser.next()) {
        if (e.kind === 'request') {
          targets.push(e.request.target);
          onRequest(socket, targets.length, e.request.target);
        }
      }
    });
  });
  servers.push(server);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { port: (server.address() as AddressInfo).port, targets, sockets };
}

const req = (path: string): WireRequest => ({
  method: 'POST',
  path,
  headers: ['Host', 'staging', 'x-mirrorplane-id', '1-0', 'x-mirrorplane-attempt', '1'],
  body: Buffer.from('pay=1'),
  trailers: [],
});

test('a request staging read on a kept connection and then closed without answering is not sent a second time by the client itself', async () => {
  // Staging answers the first request (keep-alive) and, on the second, reads it whole (it may
  // have acted on it: a POST) and then its connection goes away before any answer byte.
  const staging = await rawStaging((socket, n) => {
    if (n === 1) socket.write('HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n');
    else if (n === 2) socket.destroy();
    else socket.write('HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n');
  });
  const origin = new Http1Origin(`http://127.0.0.1:${staging.port}`, { bodyLimit: 0, maxIdle: 4, idleMs: 30_000 });
  try {
    const first = await origin.request(req('/first'), new AbortController().signal);
    assert.equal(first.statusCode, 200);
    let outcome: string;
    try {
      const second = await origin.request(req('/second'), new AbortController().signal);
      outcome = `answered ${second.statusCode}`;
    } catch (error) {
      outcome = `failed: ${(error as Error).message}`;
    }
    const copies = staging.targets.filter((t) => t === '/second').length;
    // One copy of /second, the failure reported to the worker, which retries with the next
    // x-mirrorplane-attempt (README: each copy of a request carries a later attempt).
    assert.match(outcome, /^failed: /);
    assert.equal(copies, 1, `staging received /second ${copies} times with the same x-mirrorplane-attempt (${outcome}); targets: ${staging.targets.join(' ')}`);
  } finally {
    await origin.close();
  }
});

test('a response whose framing is broken is an error, not a completed replay on a reusable connection', async (t) => {
  const shapes: Record<string, string> = {
    'chunk data not followed by CRLF': 'HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nokXX0\r\n\r\n',
    'content-length in hex (0x2)': 'HTTP/1.1 200 OK\r\ncontent-length: 0x2\r\n\r\nok',
    'content-length in exponent form (2e0)': 'HTTP/1.1 200 OK\r\ncontent-length: 2e0\r\n\r\nok',
    'an empty content-length': 'HTTP/1.1 200 OK\r\ncontent-length: \r\n\r\n',
    'two different content-lengths': 'HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 2\r\n\r\nok',
    'a content-length list with different values': 'HTTP/1.1 200 OK\r\ncontent-length: 2, 3\r\n\r\nok',
    'a signed content-length': 'HTTP/1.1 200 OK\r\ncontent-length: +2\r\n\r\nok',
    'content-length with transfer-encoding': 'HTTP/1.1 200 OK\r\ncontent-length: 2\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n',
    'obs-fold in the head': 'HTTP/1.1 200 OK\r\nx-a: 1\r\n folded\r\ncontent-length: 2\r\n\r\nok',
    'whitespace before a colon': 'HTTP/1.1 200 OK\r\ncontent-length : 2\r\n\r\nok',
    'a chunk size followed by junk': 'HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2x\r\nok\r\n0\r\n\r\n',
    'a chunk size with a sign': 'HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n-2\r\nok\r\n0\r\n\r\n',
    'a trailer line without a colon': 'HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\nnot a field\r\n\r\n',
  };
  for (const [name, answer] of Object.entries(shapes)) {
    await t.test(name, async () => {
      const staging = await rawStaging((socket) => socket.write(answer));
      const origin = new Http1Origin(`http://127.0.0.1:${staging.port}`, { bodyLimit: 1024, maxIdle: 4, idleMs: 30_000 });
      try {
        let result: string;
        try {
          const r = await origin.request(req('/x'), new AbortController().signal);
          result = `completed with status ${r.statusCode}, body ${JSON.stringify(r.body.toString('latin1'))}`;
        } catch (error) {
          result = `error: ${(error as Error).message}`;
        }
        // Like undici / llhttp (HPE_INVALID_*): a retryable transport error, connection dropped.
        assert.match(result, /^error: staging sent a broken response: /, `${name}: ${result}`);
        await waitFor('the connection to be dropped', () => staging.sockets.size === 0, 10_000);
      } finally {
        await origin.close();
      }
    });
  }
});

test('a response with the same content-length twice is read (RFC 9110 §8.6)', async () => {
  const staging = await rawStaging((socket) => socket.write('HTTP/1.1 200 OK\r\ncontent-length: 2\r\nContent-Length: 2\r\n\r\nok'));
  const origin = new Http1Origin(`http://127.0.0.1:${staging.port}`, { bodyLimit: 1024, maxIdle: 4, idleMs: 30_000 });
  try {
    const r = await origin.request(req('/x'), new AbortController().signal);
    assert.deepEqual([r.statusCode, r.body.toString()], [200, 'ok']);
  } finally {
    await origin.close();
  }
});

test('a chunk-size line that never ends does not grow the worker without bound', async () => {
  let sentBytes = 0;
  const staging = await rawStaging((socket) => {
    socket.write('HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n');
    // 64 MiB of hex digits, no CRLF: the client must give up long before holding it all.
    const piece = Buffer.alloc(1 << 20, 0x30);
    const write = () => {
      while (sentBytes < 64 << 20 && !socket.destroyed) {
        sentBytes += piece.length;
        if (!socket.write(piece)) return void socket.once('drain', write);
      }
    };
    write();
  });
  const origin = new Http1Origin(`http://127.0.0.1:${staging.port}`, { bodyLimit: 0, maxIdle: 4, idleMs: 30_000 });
  const before = process.memoryUsage().arrayBuffers;
  let peak = before;
  const sampler = setInterval(() => {
    peak = Math.max(peak, process.memoryUsage().arrayBuffers);
  }, 10);
  const ac = new AbortController();
  const result = origin.request(req('/x'), ac.signal).then(
    (r) => `completed ${r.statusCode}`,
    (e: Error) => `error: ${e.message}`,
  );
  try {
    await waitFor('staging to send everything or the client to give up', async () => sentBytes >= 64 << 20 || staging.sockets.size === 0, 60_000);
    await new Promise((r) => setTimeout(r, 200));
    peak = Math.max(peak, process.memoryUsage().arrayBuffers);
  } finally {
    clearInterval(sampler);
    ac.abort();
    await origin.close();
  }
  const outcome = await result;
  // Refused like an over-long response head: a chunk line is bounded (8 KiB).
  assert.match(outcome, /^error: staging sent a broken response: a chunk-size line over/);
  assert.ok(peak - before < 8 << 20, `the client held ${((peak - before) / 1048576).toFixed(0)} MiB of one chunk-size line (${outcome})`);
});

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { connect, type Socket } from 'node:net';
import fc from 'fast-check';
import { IntakeServer } from '../../apps/ingress/src/intake-server.js';
import type { ParsedRequest } from '../../apps/ingress/src/http1-parser.js';
import { waitFor } from '../helpers/index.js';

// The traffic port tells HTTP/2 (prior knowledge) from HTTP/1.1 by the first bytes of a
// connection, however they are split into TCP segments: the whole preface hands the connection
// to HTTP/2 with every byte read put back; anything else, methods starting with P included
// (PRI with another target, POST, PUT, PATCH, PROPFIND), stays HTTP/1.1, byte for byte.

const PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1');

interface Seen {
  requests: ParsedRequest[];
  handedOff: Buffer[];
}

async function withServer(fn: (port: number, seen: Seen) => Promise<void>): Promise<void> {
  const seen: Seen = { requests: [], handedOff: [] };
  const server = new IntakeServer(
    {
      maxHeaderBytes: 8192,
      maxBodyBytes: 8192,
      requestTimeoutMs: 10_000,
      headersTimeoutMs: 10_000,
      maxConnections: 0,
      keepAliveTimeoutMs: 10_000,
      http2: (socket: Socket) => {
        // What HTTP/2 would read: every byte, from the first.
        const chunks: Buffer[] = [];
        socket.on('data', (c: Buffer) => chunks.push(c));
        socket.on('end', () => {
          seen.handedOff.push(Buffer.concat(chunks));
          socket.end();
        });
        socket.resume();
      },
    },
    {
      head: () => null,
      request: (request, _address, answer) => {
        seen.requests.push(request);
        answer(200);
      },
      lost: () => undefined,
    },
  );
  const port = await server.listen(0, '127.0.0.1');
  try {
    await fn(port, seen);
  } finally {
    server.closeAllConnections();
    await server.close();
  }
}

/** Writes `bytes` in pieces cut at `cuts`, each in its own turn of the event loop, then half-closes. */
async function sendSplit(port: number, bytes: Buffer, cuts: number[]): Promise<Socket> {
  const socket = connect(port, '127.0.0.1');
  socket.setNoDelay(true);
  socket.on('error', () => undefined);
  socket.resume();
  await new Promise((resolve) => socket.once('connect', resolve));
  let at = 0;
  for (const cut of [...new Set(cuts)].sort((a, b) => a - b).filter((c) => c > 0 && c < bytes.length)) {
    socket.write(bytes.subarray(at, cut));
    at = cut;
    await new Promise((resolve) => setTimeout(resolve, 1));
  }
  socket.end(bytes.subarray(at));
  return socket;
}

const cuts = (max: number) => fc.array(fc.integer({ min: 1, max }), { maxLength: 6 });

test('property: the preface however split hands the connection to HTTP/2 with every byte, in order', async () => {
  await withServer(async (port, seen) => {
    await fc.assert(
      fc.asyncProperty(fc.uint8Array({ maxLength: 200 }), cuts(80), async (rest, at) => {
        const bytes = Buffer.concat([PREFACE, Buffer.from(rest)]);
        const before = seen.handedOff.length;
        const socket = await sendSplit(port, bytes, at);
        await waitFor('the connection is handed to HTTP/2', () => seen.handedOff.length === before + 1, 10_000, 2);
        socket.destroy();
        assert.deepEqual(seen.handedOff.at(-1), bytes);
        assert.equal(seen.requests.length, 0, 'nothing parsed as HTTP/1.1');
      }),
      { numRuns: 60 },
    );
  });
});

test('property: any HTTP/1.1 request, methods starting with P included, however split, is parsed as HTTP/1.1', async () => {
  const method = fc.oneof(
    fc.constantFrom('PRI', 'POST', 'PUT', 'PATCH', 'PROPFIND', 'PRIX', 'P', 'GET'),
    fc.string({ unit: fc.constantFrom(...'PRIabcXYZ-'), minLength: 1, maxLength: 8 }),
  );
  const target = fc.constantFrom('/', '*', '/a?b=1', '/PRI * HTTP/2.0'.replace(/ /g, '%20'));
  await withServer(async (port, seen) => {
    await fc.assert(
      fc.asyncProperty(method, target, fc.uint8Array({ maxLength: 100 }), cuts(60), async (m, t, body, at) => {
        if (t === '*' && m !== 'OPTIONS') t = '/';
        const head = `${m} ${t} HTTP/1.1\r\nHost: x\r\nContent-Length: ${body.length}\r\nConnection: close\r\n\r\n`;
        const before = seen.requests.length;
        const socket = await sendSplit(port, Buffer.concat([Buffer.from(head, 'latin1'), Buffer.from(body)]), at);
        await waitFor('the request is parsed', () => seen.requests.length === before + 1, 10_000, 2);
        socket.destroy();
        const got = seen.requests.at(-1) as ParsedRequest;
        assert.equal(got.method, m);
        assert.equal(got.target, t);
        assert.deepEqual(got.body, Buffer.from(body));
        assert.equal(seen.handedOff.length, 0, 'never handed to HTTP/2');
      }),
      { numRuns: 60 },
    );
  });
});

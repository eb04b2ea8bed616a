import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { connect } from 'node:net';
import { randomBytes } from 'node:crypto';
import fc from 'fast-check';
import { decodeEntry, keysFor, loadConfig } from '@mirrorplane/core';
import { createLogger } from '@mirrorplane/runtime';
import { Ingress } from '@mirrorplane/ingress';
import type { Redis } from 'ioredis';
import { RedisServer, waitFor } from '../helpers/index.js';

// Fuzz of the ingress's request parsing against a real ingress and a real Redis: every valid
// request is stored byte for byte; anything else gets an answer (or a closed connection), and
// the ingress keeps serving.

let redis: RedisServer;
let client: Redis;
let ingress: Ingress;
let port: number;
let stream: string;

before(async () => {
  redis = await RedisServer.start();
  client = redis.client();
  const prefix = `fz${randomBytes(4).toString('hex')}`;
  stream = keysFor(prefix).stream;
  const config = loadConfig({
    role: 'ingress',
    env: {
      REDIS_URL: redis.url,
      MIRRORPLANE_PREFIX: prefix,
      INGRESS_HOST: '127.0.0.1',
      INGRESS_PORT: '0',
      ADMIN_PORT: '0',
      MAX_BODY_BYTES: '65536',
      BODY_TIMEOUT_MS: '3000',
      LOG_LEVEL: 'silent',
    },
  });
  ingress = new Ingress(config, createLogger(config, 'ingress'));
  ({ port } = await ingress.listen());
  await waitFor('the ingress to reach Redis', () => ingress.ready);
});

after(async () => {
  await ingress?.close();
  client?.disconnect();
  await redis?.close();
});

/**
 * Writes bytes on a fresh connection, half-closes at once and returns what came back before
 * the close. The ingress answers a whole request after the client's FIN (allowHalfOpen) and
 * closes a cut one when the FIN arrives mid-request, so no exchange waits on a timer: an
 * exchange costs one round trip, not an idle wait.
 */
function exchange(bytes: Buffer): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1');
    const chunks: Buffer[] = [];
    const deadline = setTimeout(() => {
      socket.destroy();
      reject(new Error(`no answer and no close within 10 s for ${JSON.stringify(bytes.toString('latin1').slice(0, 200))}`));
    }, 10_000);
    socket.on('data', (c: Buffer) => chunks.push(c));
    socket.on('error', () => undefined); // a reset is an answer too: the ingress closed on garbage
    socket.on('close', () => {
      clearTimeout(deadline);
      resolve(Buffer.concat(chunks));
    });
    socket.end(bytes);
  });
}

function statusOf(answer: Buffer): number | null {
  const match = /^HTTP\/1\.1 (\d{3})/.exec(answer.toString('latin1'));
  return match ? Number(match[1]) : null;
}

async function lastEntry() {
  const rows = await (client as unknown as { xrevrangeBuffer(...a: (string | number)[]): Promise<[Buffer, Buffer[]][]> }).xrevrangeBuffer(
    stream,
    '+',
    '-',
    'COUNT',
    1,
  );
  const [id, fields] = rows[0]!;
  return decodeEntry(id.toString(), fields);
}

const TCHAR = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+-.^_`|~";
const tchars = (min: number, max: number) => fc.string({ unit: fc.constantFrom(...TCHAR), minLength: min, maxLength: max });
/** Header value bytes node accepts: visible ASCII, obs-text (0x80-0xFF, invalid UTF-8 included), inner spaces and tabs. */
const valueChar = fc
  .oneof(
    { weight: 6, arbitrary: fc.integer({ min: 0x21, max: 0x7e }) },
    { weight: 3, arbitrary: fc.integer({ min: 0x80, max: 0xff }) },
    { weight: 1, arbitrary: fc.constantFrom(0x20, 0x09) },
  )
  .map((c) => String.fromCharCode(c));
const headerValue = fc.string({ unit: valueChar, maxLength: 40 }).map((v) => v.replace(/^[ \t]+|[ \t]+$/g, ''));
const pathChar = fc.oneof(
  { weight: 10, arbitrary: fc.constantFrom(..."abcXYZ019-._~!$&'()*+,;=:@/%?".split('')) },
  // obs-text in the target: nginx and Envoy forward it, production serves it.
  { weight: 1, arbitrary: fc.integer({ min: 0x80, max: 0xff }).map((c) => String.fromCharCode(c)) },
);

const validRequest = fc
  .record({
    // Any RFC 9110 token, not only the methods node's parser knows.
    method: fc.oneof(fc.constantFrom('GET', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS', 'PROPFIND', 'MKCOL', 'PURGE', 'BAN', 'REFRESH'), tchars(1, 12)),
    target: fc.string({ unit: pathChar, maxLength: 60 }).map((p) => `/${p}`),
    headers: fc.array(
      fc.tuple(
        tchars(1, 16).map((n) => `X-${n}`),
        headerValue,
      ),
      { maxLength: 10 },
    ),
    body: fc.uint8Array({ maxLength: 4096 }).map((a) => Buffer.from(a)),
    chunked: fc.boolean(),
    chunkSize: fc.integer({ min: 1, max: 1024 }),
    trailers: fc.array(
      fc.tuple(
        tchars(1, 12).map((n) => `T-${n}`),
        headerValue,
      ),
      { maxLength: 3 },
    ),
  })
  .map((r) => ({ ...r }));

function frame(r: {
  method: string;
  target: string;
  headers: [string, string][];
  body: Buffer;
  chunked: boolean;
  chunkSize: number;
  trailers: [string, string][];
}): { bytes: Buffer; rawHeaders: string[]; trailers: string[] } {
  const rawHeaders = ['Host', 'fuzz.example'];
  for (const [n, v] of r.headers) rawHeaders.push(n, v);
  const parts: Buffer[] = [];
  if (r.chunked) {
    rawHeaders.push('Transfer-Encoding', 'chunked');
    for (let i = 0; i < r.body.length; i += r.chunkSize) {
      const chunk = r.body.subarray(i, i + r.chunkSize);
      parts.push(Buffer.from(`${chunk.length.toString(16)}\r\n`), chunk, Buffer.from('\r\n'));
    }
    parts.push(Buffer.from(`0\r\n${r.trailers.map(([n, v]) => `${n}: ${v}\r\n`).join('')}\r\n`, 'latin1'));
  } else {
    rawHeaders.push('Content-Length', String(r.body.length));
    parts.push(r.body);
  }
  rawHeaders.push('Connection', 'close');
  let head = `${r.method} ${r.target} HTTP/1.1\r\n`;
  for (let i = 0; i < rawHeaders.length; i += 2) head += `${rawHeaders[i]}: ${rawHeaders[i + 1]}\r\n`;
  return { bytes: Buffer.concat([Buffer.from(`${head}\r\n`, 'latin1'), ...parts]), rawHeaders, trailers: r.chunked ? r.trailers.flat() : [] };
}

test('fuzz: every valid request (any method token, obs-text target and values, Content-Length or chunked with trailers) is stored byte for byte', async () => {
  await fc.assert(
    fc.asyncProperty(validRequest, async (r) => {
      const { bytes, rawHeaders, trailers } = frame(r);
      const answer = await exchange(bytes);
      assert.equal(statusOf(answer), 200, answer.toString('latin1'));
      const entry = await lastEntry();
      assert.equal(entry.request.method, r.method);
      assert.equal(entry.request.target, r.target);
      assert.deepEqual(entry.request.rawHeaders, rawHeaders);
      assert.ok(entry.request.body.equals(r.body), 'body bytes');
      assert.deepEqual(entry.request.trailers ?? [], trailers, 'trailers');
    }),
    { numRuns: 150 },
  );
});

/** Valid requests cut, spliced and sprinkled with random bytes, and plain garbage. */
const hostile = fc.oneof(
  fc.uint8Array({ minLength: 1, maxLength: 600 }).map((a) => Buffer.from(a)),
  fc.tuple(validRequest, fc.nat(), fc.nat(), fc.uint8Array({ minLength: 1, maxLength: 8 })).map(([r, at, cut, noise]) => {
    const bytes = frame(r).bytes;
    const i = at % bytes.length;
    const mutated = Buffer.concat([bytes.subarray(0, i), Buffer.from(noise), bytes.subarray(i + (cut % 4))]);
    return mutated;
  }),
  fc
    .constantFrom(
      'GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!',
      'POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n',
      'POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n',
      'GET / HTTP/9.9\r\n\r\n',
      'GET /\x00 HTTP/1.1\r\n\r\n',
      'GET / HTTP/1.1\r\nBad Header: x\r\n\r\n',
      'GET / HTTP/1.1\r\nX: a\rb\r\n\r\n',
      '\r\n\r\n\r\n',
    )
    .map((s) => Buffer.from(s, 'latin1')),
);

test('fuzz: hostile bytes get an answer or a closed connection, and the ingress keeps serving', async () => {
  await fc.assert(
    fc.asyncProperty(hostile, async (bytes) => {
      const answer = await exchange(bytes);
      const status = statusOf(answer);
      // A prefix that happens to be a whole valid request is accepted; anything else is refused.
      assert.ok(status === null || [200, 400, 405, 408, 413, 417, 431, 505].includes(status), `status ${status}: ${answer.toString('latin1').slice(0, 200)}`);
    }),
    // Each exchange is one round trip (no idle wait), so more runs cost little.
    { numRuns: 1000 },
  );
  const ok = await exchange(Buffer.from('GET /still-serving HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n'));
  assert.equal(statusOf(ok), 200);
  assert.equal((await lastEntry()).request.target, '/still-serving');
});

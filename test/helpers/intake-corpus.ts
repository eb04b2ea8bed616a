import { connect } from 'node:net';
import fc from 'fast-check';

/**
 * The corpus of the pipelined-intake properties (#13): generated HTTP/1.1 requests, framed
 * byte for byte, and a raw sender that writes them in pieces. Shared by
 * intake-pipelined-bytes (what the stream holds) and intake-pipelined-staging (what staging receives).
 */

/** One generated request: what was sent, and the exact bytes that carried it. */
export interface SentRequest {
  method: string;
  target: string;
  rawHeaders: string[];
  body: Buffer;
  trailers: string[];
  bytes: Buffer;
}

const latin1 = (codes: number[]) => Buffer.from(codes).toString('latin1');
const targetByte = fc.oneof(fc.integer({ min: 0x21, max: 0x7e }), fc.integer({ min: 0x80, max: 0xff }));
const valueByte = fc.oneof(fc.integer({ min: 0x21, max: 0x7e }), fc.integer({ min: 0x80, max: 0xff }), fc.constantFrom(0x20, 0x09));
const tokenChar = fc.constantFrom(..."abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+-.^_`|~".split(''));
const fieldName = fc.array(tokenChar, { minLength: 1, maxLength: 12 }).map((cs) => `x-${cs.join('')}`);
const fieldValue = fc.array(valueByte, { maxLength: 40 }).map((codes) => latin1(codes).replace(/^[ \t]+|[ \t]+$/g, ''));
const tricky = [
  '\r\n',
  '\r\n\r\n',
  'GET / HTTP/1.1\r\nHost: x\r\n\r\n',
  'HTTP/1.1 200 OK\r\n',
  '*3\r\n$4\r\nxadd\r\n',
  '$-1\r\n',
  '0\r\n\r\n',
  '\x00',
  '\xff\xfe',
];
const bodyBytes = fc
  .array(
    fc.oneof(
      fc.uint8Array({ maxLength: 300 }).map((a) => Buffer.from(a)),
      fc.constantFrom(...tricky).map((s) => Buffer.from(s, 'latin1')),
    ),
    { maxLength: 6 },
  )
  .map((parts) => Buffer.concat(parts));

/**
 * Generated pipelined requests: custom methods, obs-text in targets and values, bodies of
 * arbitrary bytes (with pieces that look like HTTP heads, chunk ends and RESP), framed by
 * Content-Length, chunked with trailers, or not at all.
 */
export const pipelinedRequest: fc.Arbitrary<RequestShape> = fc.record({
  method: fc.constantFrom('GET', 'POST', 'PUT', 'DELETE', 'BAN', 'PURGE', 'PROPFIND', 'X-IN-HOUSE'),
  target: fc.array(targetByte, { maxLength: 60 }).map((codes) => `/${latin1(codes)}`),
  fields: fc.array(fc.tuple(fieldName, fieldValue), { maxLength: 6 }),
  body: bodyBytes,
  framing: fc.constantFrom('length', 'length', 'chunked', 'none'),
  chunkSizes: fc.array(fc.integer({ min: 1, max: 200 }), { minLength: 1, maxLength: 6 }),
  trailers: fc.array(fc.tuple(fieldName, fieldValue), { maxLength: 2 }),
});

/** The drawn shape of a request, before framing; `framing` is `length`, `chunked` or `none`. */
export interface RequestShape {
  method: string;
  target: string;
  fields: [string, string][];
  body: Buffer;
  framing: string;
  chunkSizes: number[];
  trailers: [string, string][];
}

/**
 * Frames `r` as HTTP/1.1 bytes (`Host: staging.example`, `x-seq: <seq>` first, then its fields;
 * `Content-Length`, chunked in `chunkSizes` with trailers, or no body).
 */
export function buildRequest(r: RequestShape, seq: number): SentRequest {
  const rawHeaders = ['Host', 'staging.example', 'x-seq', String(seq)];
  for (const [n, v] of r.fields) rawHeaders.push(n, v);
  const body = r.framing === 'none' ? Buffer.alloc(0) : r.body;
  let framed: Buffer;
  let trailers: string[] = [];
  if (r.framing === 'chunked') {
    rawHeaders.push('Transfer-Encoding', 'chunked');
    const parts: Buffer[] = [];
    let at = 0;
    let k = 0;
    while (at < body.length) {
      const n = Math.min(r.chunkSizes[k++ % r.chunkSizes.length] as number, body.length - at);
      parts.push(Buffer.from(`${n.toString(16)}\r\n`, 'latin1'), body.subarray(at, at + n), Buffer.from('\r\n', 'latin1'));
      at += n;
    }
    trailers = r.trailers.flat();
    let tail = '0\r\n';
    for (const [n, v] of r.trailers) tail += `${n}: ${v}\r\n`;
    parts.push(Buffer.from(`${tail}\r\n`, 'latin1'));
    framed = Buffer.concat(parts);
  } else if (r.framing === 'length') {
    rawHeaders.push('Content-Length', String(body.length));
    framed = body;
  } else {
    framed = Buffer.alloc(0);
  }
  let head = `${r.method} ${r.target} HTTP/1.1\r\n`;
  for (let i = 0; i < rawHeaders.length; i += 2) head += `${rawHeaders[i]}: ${rawHeaders[i + 1]}\r\n`;
  const bytes = Buffer.concat([Buffer.from(`${head}\r\n`, 'latin1'), framed]);
  return { method: r.method, target: r.target, rawHeaders, body, trailers, bytes };
}

/**
 * Writes `parts` to the ingress at `port` one by one (a turn of the event loop between them),
 * then FIN; resolves with every answer byte (latin1) once the ingress closes.
 */
export function sendParts(port: number, parts: Buffer[]): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = connect({ port, host: '127.0.0.1', allowHalfOpen: true, noDelay: true });
    const chunks: Buffer[] = [];
    socket.on('data', (c: Buffer) => chunks.push(c));
    socket.on('error', reject);
    socket.on('end', () => {
      resolve(Buffer.concat(chunks).toString('latin1'));
      socket.destroy();
    });
    socket.on('connect', async () => {
      for (const part of parts) {
        socket.write(part);
        await new Promise((r) => setTimeout(r, 1));
      }
      socket.end();
    });
  });
}

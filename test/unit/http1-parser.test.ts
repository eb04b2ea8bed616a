import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { RequestParser, type ParseEvent, type ParsedRequest, type Refusal } from '@mirrorplane/ingress';

// The ingress's HTTP/1.1 parser on its own: what it accepts (everything a proxy forwards),
// what it refuses (every framing ambiguity), and that how bytes are split never matters.

const LIMITS = { maxHeaderBytes: 64 * 1024, maxBodyBytes: 1024 * 1024 };

type Outcome = { requests: ParsedRequest[]; refusal: Refusal | null };

/** Parses `bytes` fed in the given pieces; collects the whole requests and the refusal, if any. */
function parse(bytes: Buffer, cuts: number[] = [], limits = LIMITS): Outcome {
  const parser = new RequestParser(limits);
  const out: Outcome = { requests: [], refusal: null };
  const points = [...new Set(cuts.map((c) => c % (bytes.length + 1)))].sort((a, b) => a - b);
  let from = 0;
  for (const at of [...points, bytes.length]) {
    parser.feed(bytes.subarray(from, at));
    from = at;
    for (let e: ParseEvent | null = parser.next(); e !== null; e = parser.next()) {
      if (e.kind === 'request') out.requests.push(e.request);
      if (e.kind === 'refused') out.refusal = e.refusal;
    }
  }
  return out;
}

const b = (s: string) => Buffer.from(s, 'latin1');

function one(s: string): ParsedRequest {
  const { requests, refusal } = parse(b(s));
  assert.equal(refusal, null, `refused: ${refusal?.detail}`);
  assert.equal(requests.length, 1);
  return requests[0] as ParsedRequest;
}

test('any RFC 9110 method token is accepted, case kept', () => {
  for (const method of ['BAN', 'PURGE', 'REFRESH', 'PROPFIND', 'MKCALENDAR', 'X-CUSTOM', 'm-search', "!#$%&'*+-.^_`|~", 'get']) {
    assert.equal(one(`${method} /x HTTP/1.1\r\nHost: a\r\n\r\n`).method, method);
  }
});

test('obs-text bytes in the target and in values are kept as bytes (latin1, one char a byte)', () => {
  const r = one('GET /caf\xe9/%zz%?q=\xff\x80 HTTP/1.1\r\nHost: a\r\nX-Bytes: \xc3\x28 \xff\tend\r\n\r\n');
  assert.equal(r.target, '/caf\xe9/%zz%?q=\xff\x80');
  assert.deepEqual(r.rawHeaders, ['Host', 'a', 'X-Bytes', '\xc3\x28 \xff\tend']);
});

test('OPTIONS * and absolute-form are kept as received', () => {
  assert.equal(one('OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n').target, '*');
  assert.equal(one('GET http://a.example/x?y HTTP/1.1\r\nHost: a\r\n\r\n').target, 'http://a.example/x?y');
});

test('any number of fields within MAX_HEADER_BYTES, names in case and order, duplicates kept', () => {
  let head = 'GET / HTTP/1.1\r\nHost: a\r\n';
  const want = ['Host', 'a'];
  for (let i = 0; i < 5000; i++) {
    const name = i % 2 ? `x-f${i}` : `X-F${i}`;
    head += `${name}: ${i}\r\n`;
    want.push(name, String(i));
  }
  head += 'x-dup: 1\r\nX-DUP: 2\r\n\r\n';
  want.push('x-dup', '1', 'X-DUP', '2');
  const r = parse(b(head), [], { ...LIMITS, maxHeaderBytes: 256 * 1024 });
  assert.deepEqual(r.requests[0]?.rawHeaders, want);
});

test('a head over MAX_HEADER_BYTES is refused 431, even before its end arrives', () => {
  const big = `GET / HTTP/1.1\r\nHost: a\r\nCookie: ${'c'.repeat(2000)}\r\n\r\n`;
  assert.equal(parse(b(big), [], { ...LIMITS, maxHeaderBytes: 2000 }).refusal?.status, 431);
  assert.equal(parse(b(big.slice(0, 2100)), [], { ...LIMITS, maxHeaderBytes: 2000 }).refusal?.status, 431);
  assert.equal(parse(b(big), [], { ...LIMITS, maxHeaderBytes: 2100 }).requests.length, 1);
});

test('chunked bodies with extensions and trailers: body de-chunked, trailers kept in order and case', () => {
  const r = one(
    'POST /t HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3;ext=1;q="a b"\r\nabc\r\n2\r\nde\r\n0\r\nX-Checksum: 42\r\nx-checksum: 43\r\nServer-Timing: a;dur=1\r\n\r\n',
  );
  assert.equal(r.body.toString(), 'abcde');
  assert.equal(r.contentLength, -1);
  assert.deepEqual(r.trailers, ['X-Checksum', '42', 'x-checksum', '43', 'Server-Timing', 'a;dur=1']);
});

test('HTTP/1.0 with and without Host; keep-alive by version and Connection', () => {
  const a = one('GET / HTTP/1.0\r\n\r\n');
  assert.equal(a.minor, 0);
  assert.equal(a.keepAlive, false);
  assert.equal(one('GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n').keepAlive, true);
  assert.equal(one('GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n').keepAlive, false);
  assert.equal(one('GET / HTTP/1.1\r\n\r\n').rawHeaders.length, 0, 'a missing Host is replayed as received');
});

test('Expect: 100-continue is flagged when a body follows', () => {
  const parser = new RequestParser(LIMITS);
  parser.feed(b('PUT /x HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n'));
  const head = parser.next();
  assert.equal(head?.kind, 'head');
  assert.equal(head.kind === 'head' && head.head.expectContinue, true);
  assert.equal(parser.next(), null, 'waits for the body');
  parser.feed(b('abc'));
  const done = parser.next();
  assert.equal(done?.kind === 'request' && done.request.body.toString(), 'abc');
});

/**
 * The smuggling list: every shape where two parsers could disagree about where a request
 * ends, and what the ingress answers. Extending the accepted methods and bytes must not
 * loosen any of these.
 */
const REFUSED: [name: string, bytes: string, status: number, reason: string][] = [
  ['CL and TE', 'POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n', 400, 'bad_request'],
  ['TE and CL', 'POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n', 400, 'bad_request'],
  ['two different Content-Lengths', 'POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!', 400, 'bad_request'],
  ['two equal Content-Lengths', 'POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello', 400, 'bad_request'],
  ['a Content-Length list', 'POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\nhello', 400, 'bad_request'],
  ['a signed Content-Length', 'POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\nhello', 400, 'bad_request'],
  ['a hex Content-Length', 'POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x5\r\n\r\nhello', 400, 'bad_request'],
  ['a bad chunk size', 'POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n', 400, 'bad_request'],
  ['a chunk size with a sign', 'POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n-1\r\n', 400, 'bad_request'],
  ['a chunk size with a space inside', 'POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1 0\r\n', 400, 'bad_request'],
  ['an overflowing chunk size', 'POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffffff\r\n', 413, 'too_large'],
  ['chunk data longer than its size', 'POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n0\r\n\r\n', 400, 'bad_request'],
  ['a bare LF after a chunk size', 'POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\nabc\r\n0\r\n\r\n', 400, 'bad_request'],
  ['a bare LF ending a field', 'GET / HTTP/1.1\r\nHost: a\nX: b\r\n\r\n', 400, 'bad_request'],
  ['a bare LF ending the request line', 'GET / HTTP/1.1\nHost: a\r\n\r\n', 400, 'bad_request'],
  ['a bare CR in a value', 'GET / HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n', 400, 'bad_request'],
  ['a bare CR ending a field', 'GET / HTTP/1.1\r\nHost: a\rX: b\r\n\r\n', 400, 'bad_request'],
  ['obs-fold', 'GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n', 400, 'bad_request'],
  ['obs-fold with a tab', 'GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n\tb\r\n\r\n', 400, 'bad_request'],
  ['whitespace before the colon', 'GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n\r\n', 400, 'bad_request'],
  ['NUL in a name', 'GET / HTTP/1.1\r\nHost: a\r\nX\x00Y: b\r\n\r\n', 400, 'bad_request'],
  ['a CTL in a name', 'GET / HTTP/1.1\r\nHost: a\r\nX\x01: b\r\n\r\n', 400, 'bad_request'],
  ['NUL in a value', 'GET / HTTP/1.1\r\nHost: a\r\nX: a\x00b\r\n\r\n', 400, 'bad_request'],
  ['DEL in a value', 'GET / HTTP/1.1\r\nHost: a\r\nX: a\x7fb\r\n\r\n', 400, 'bad_request'],
  ['NUL in the target', 'GET /\x00 HTTP/1.1\r\nHost: a\r\n\r\n', 400, 'bad_request'],
  ['a tab in the target', 'GET /a\tb HTTP/1.1\r\nHost: a\r\n\r\n', 400, 'bad_request'],
  ['an empty name', 'GET / HTTP/1.1\r\nHost: a\r\n: b\r\n\r\n', 400, 'bad_request'],
  ['a field without a colon', 'GET / HTTP/1.1\r\nHost: a\r\nNoColon\r\n\r\n', 400, 'bad_request'],
  ['HTTP/0.9', 'GET /\r\n', 400, 'bad_request'],
  ['two spaces in the request line', 'GET  / HTTP/1.1\r\nHost: a\r\n\r\n', 400, 'bad_request'],
  ['a method that is not a token', 'GE(T / HTTP/1.1\r\nHost: a\r\n\r\n', 400, 'bad_request'],
  ['HTTP/2 preface', 'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 505, 'bad_request'],
  ['HTTP/9.9', 'GET / HTTP/9.9\r\nHost: a\r\n\r\n', 505, 'bad_request'],
  ['a lower-case version', 'GET / http/1.1\r\nHost: a\r\n\r\n', 400, 'bad_request'],
  ['TE on HTTP/1.0', 'POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n', 400, 'bad_request'],
  ['TE not ending in chunked', 'POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n', 400, 'bad_request'],
  ['TE identity', 'POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity\r\n\r\n', 400, 'bad_request'],
  ['TE with a coding before chunked', 'POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n', 400, 'unsupported'],
  ['TE split over two fields', 'POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n', 400, 'unsupported'],
  ['CONNECT', 'CONNECT a.example:443 HTTP/1.1\r\nHost: a.example:443\r\n\r\n', 405, 'unsupported'],
  ['authority-form without CONNECT', 'GET a.example:443 HTTP/1.1\r\nHost: a\r\n\r\n', 400, 'unsupported'],
  ['asterisk-form with GET', 'GET * HTTP/1.1\r\nHost: a\r\n\r\n', 400, 'unsupported'],
  ['two Host fields', 'GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n', 400, 'bad_request'],
  ['an unknown expectation', 'GET / HTTP/1.1\r\nHost: a\r\nExpect: 200-ok\r\n\r\n', 417, 'unsupported'],
  ['a malformed chunk extension', 'POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3;\x01\r\nabc\r\n0\r\n\r\n', 400, 'bad_request'],
  ['obs-fold in a trailer', 'POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX: a\r\n b\r\n\r\n', 400, 'bad_request'],
  ['a body over MAX_BODY_BYTES (declared)', `POST / HTTP/1.1\r\nHost: a\r\nContent-Length: ${LIMITS.maxBodyBytes + 1}\r\n\r\n`, 413, 'too_large'],
];

test('the smuggling list: every framing ambiguity is refused with its status and reason', () => {
  for (const [name, bytes, status, reason] of REFUSED) {
    const { requests, refusal } = parse(b(bytes));
    assert.equal(requests.length, 0, `${name}: no request gets through`);
    assert.ok(refusal, `${name}: refused`);
    assert.equal(refusal.status, status, `${name}: status (${refusal.detail})`);
    assert.equal(refusal.reason, reason, `${name}: reason`);
  }
});

test('after a refusal nothing more is parsed (the connection must close)', () => {
  const { requests, refusal } = parse(b('GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\nGET /next HTTP/1.1\r\nHost: a\r\n\r\n'));
  assert.ok(refusal);
  assert.equal(requests.length, 0);
});

// ---- generated requests ------------------------------------------------------------------

const TCHAR = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+-.^_`|~";
const token = (min: number, max: number) => fc.string({ unit: fc.constantFrom(...TCHAR), minLength: min, maxLength: max });
const valueByte = fc.oneof(
  { weight: 6, arbitrary: fc.integer({ min: 0x21, max: 0x7e }) },
  { weight: 2, arbitrary: fc.integer({ min: 0x80, max: 0xff }) },
  { weight: 1, arbitrary: fc.constantFrom(0x20, 0x09) },
);
const fieldValue = fc.array(valueByte, { maxLength: 30 }).map((a) => String.fromCharCode(...a).replace(/^[ \t]+|[ \t]+$/g, ''));
const targetByte = fc.oneof({ weight: 8, arbitrary: fc.integer({ min: 0x21, max: 0x7e }) }, { weight: 1, arbitrary: fc.integer({ min: 0x80, max: 0xff }) });
const target = fc.array(targetByte, { maxLength: 50 }).map((a) => `/${String.fromCharCode(...a)}`);
const framing = new Set(['content-length', 'transfer-encoding', 'host', 'expect', 'connection']);

interface Generated {
  method: string;
  target: string;
  headers: string[];
  body: Buffer;
  chunks: number[] | null;
  trailers: string[];
}

const generated: fc.Arbitrary<Generated> = fc
  .record({
    method: fc.oneof(fc.constantFrom('GET', 'POST', 'PUT', 'DELETE', 'OPTIONS', 'PROPFIND', 'PURGE', 'BAN', 'REPORT'), token(1, 12)),
    target,
    fields: fc.array(fc.tuple(token(1, 20), fieldValue), { maxLength: 12 }),
    body: fc.uint8Array({ maxLength: 300 }).map((a) => Buffer.from(a)),
    chunked: fc.boolean(),
    chunkSizes: fc.array(fc.integer({ min: 1, max: 64 }), { minLength: 1, maxLength: 8 }),
    trailers: fc.array(fc.tuple(token(1, 12), fieldValue), { maxLength: 3 }),
  })
  .map((r) => {
    const headers = ['Host', 'gen.example'];
    for (const [n, v] of r.fields) if (!framing.has(n.toLowerCase())) headers.push(n, v);
    const trailers: string[] = [];
    if (r.chunked) for (const [n, v] of r.trailers) trailers.push(n, v);
    return { method: r.method, target: r.target, headers, body: r.body, chunks: r.chunked ? r.chunkSizes : null, trailers };
  });

function frame(g: Generated): Buffer {
  let head = `${g.method} ${g.target} HTTP/1.1\r\n`;
  for (let i = 0; i < g.headers.length; i += 2) head += `${g.headers[i]}: ${g.headers[i + 1]}\r\n`;
  if (g.chunks === null) return Buffer.concat([b(`${head}Content-Length: ${g.body.length}\r\n\r\n`), g.body]);
  const parts: Buffer[] = [b(`${head}Transfer-Encoding: chunked\r\n\r\n`)];
  let at = 0;
  for (let i = 0; at < g.body.length; i++) {
    const size = g.chunks[i % g.chunks.length] as number;
    const chunk = g.body.subarray(at, at + size);
    at += chunk.length;
    parts.push(b(`${chunk.length.toString(16)}\r\n`), chunk, b('\r\n'));
  }
  let tail = '0\r\n';
  for (let i = 0; i < g.trailers.length; i += 2) tail += `${g.trailers[i]}: ${g.trailers[i + 1]}\r\n`;
  parts.push(b(`${tail}\r\n`));
  return Buffer.concat(parts);
}

test('fuzz: pipelined generated requests parse to exactly what was framed, however the bytes are split', () => {
  fc.assert(
    fc.property(fc.array(generated, { minLength: 1, maxLength: 4 }), fc.array(fc.nat(), { maxLength: 12 }), (requests, cuts) => {
      const bytes = Buffer.concat(requests.map(frame));
      const { requests: got, refusal } = parse(bytes, cuts);
      assert.equal(refusal, null, refusal?.detail);
      assert.equal(got.length, requests.length);
      for (const [i, g] of requests.entries()) {
        const r = got[i] as ParsedRequest;
        assert.equal(r.method, g.method);
        assert.equal(r.target, g.target);
        const framed = g.chunks === null ? ['Content-Length', String(g.body.length)] : ['Transfer-Encoding', 'chunked'];
        assert.deepEqual(r.rawHeaders, [...g.headers, ...framed]);
        assert.ok(r.body.equals(g.body));
        assert.deepEqual(r.trailers, g.trailers);
      }
    }),
    { numRuns: 400 },
  );
});

test('fuzz: any bytes end in requests, a refusal, or a wait for more, never a throw; split points never matter', () => {
  const hostile = fc.oneof(
    fc.uint8Array({ maxLength: 400 }).map((a) => Buffer.from(a)),
    fc.tuple(generated, fc.nat(), fc.nat(3), fc.uint8Array({ minLength: 1, maxLength: 6 })).map(([g, at, cut, noise]) => {
      const bytes = frame(g);
      const i = at % bytes.length;
      return Buffer.concat([bytes.subarray(0, i), Buffer.from(noise), bytes.subarray(i + cut)]);
    }),
    fc.constantFrom(...REFUSED.map(([, s]) => b(s))),
  );
  fc.assert(
    fc.property(hostile, fc.array(fc.nat(), { maxLength: 10 }), (bytes, cuts) => {
      const whole = parse(bytes);
      const split = parse(bytes, cuts);
      assert.equal(split.requests.length, whole.requests.length);
      assert.deepEqual(split.refusal, whole.refusal);
      for (const [i, r] of whole.requests.entries()) {
        const s = split.requests[i] as ParsedRequest;
        assert.deepEqual([s.method, s.target, s.rawHeaders, s.trailers], [r.method, r.target, r.rawHeaders, r.trailers]);
        assert.ok(s.body.equals(r.body));
      }
    }),
    { numRuns: 1500 },
  );
});

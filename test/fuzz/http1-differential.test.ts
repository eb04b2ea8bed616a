import { test } from 'node:test';
import assert from 'node:assert/strict';
import { METHODS, createServer } from 'node:http';
import { connect, type AddressInfo } from 'node:net';
import fc from 'fast-check';
import { RequestParser, type ParseEvent } from '@mirrorplane/ingress';

/**
 * Differential test: a generated corpus (methods, targets, field shapes, bodies, chunking,
 * trailers, pipelining, smuggling shapes) goes to node's own parser (llhttp, through a real
 * node:http server) and to the ingress's parser. Every difference must be one of the explained
 * ones below; anything else fails with both outcomes printed.
 */

const SENTINEL = '/__end_of_case__';

type Outcome = { accepted: { method: string; target: string; rawHeaders: string[]; body: string; trailers: string[] }[]; refused: string | null };

/**
 * What node's parser made of `bytes` (followed, when `sentinel`, by a request that marks the
 * end of the case). A new node:http server per case: nothing of one case can leak into the next.
 */
async function throughNode(bytes: Buffer, sentinel: boolean): Promise<Outcome> {
  const out: Outcome = { accepted: [], refused: null };
  let settle: () => void = () => undefined;
  const settled = new Promise<void>((resolve) => {
    settle = resolve;
  });
  const server = createServer({ maxHeaderSize: 64 * 1024 }, (req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      res.end();
      if (req.url === SENTINEL) return settle();
      out.accepted.push({
        method: req.method ?? '',
        target: req.url ?? '',
        rawHeaders: req.rawHeaders,
        body: Buffer.concat(chunks).toString('latin1'),
        trailers: req.rawTrailers,
      });
    });
  });
  server.maxHeadersCount = 0;
  server.on('clientError', (error: NodeJS.ErrnoException, socket) => {
    out.refused ??= error.code ?? error.message;
    // Requests node parsed before the error finish their 'end' first.
    setImmediate(() => {
      socket.destroy();
      settle();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const socket = connect((server.address() as AddressInfo).port, '127.0.0.1');
  socket.on('error', () => undefined);
  // Answers are not looked at, but must be read for the close to be seen.
  socket.resume();
  socket.on('close', () => setImmediate(settle));
  socket.write(sentinel ? Buffer.concat([bytes, Buffer.from(`GET ${SENTINEL} HTTP/1.1\r\nHost: end\r\n\r\n`)]) : bytes);
  let timer: NodeJS.Timeout | undefined;
  const timedOut = await Promise.race([
    settled.then(() => false),
    new Promise<boolean>((resolve) => {
      timer = setTimeout(() => resolve(true), 10_000);
    }),
  ]);
  clearTimeout(timer);
  socket.destroy();
  server.closeAllConnections();
  await new Promise((resolve) => server.close(resolve));
  if (timedOut) throw new Error(`node neither answered nor refused within 10 s: ${JSON.stringify(bytes.toString('latin1').slice(0, 300))}`);
  return out;
}

function throughOurs(bytes: Buffer, sentinel: boolean): Outcome {
  const parser = new RequestParser({ maxHeaderBytes: 64 * 1024, maxBodyBytes: 1024 * 1024 });
  parser.feed(sentinel ? Buffer.concat([bytes, Buffer.from(`GET ${SENTINEL} HTTP/1.1\r\nHost: end\r\n\r\n`)]) : bytes);
  const out: Outcome = { accepted: [], refused: null };
  for (let e: ParseEvent | null = parser.next(); e !== null; e = parser.next()) {
    if (e.kind === 'refused') out.refused = `${e.refusal.status} ${e.refusal.reason}: ${e.refusal.detail}`;
    if (e.kind === 'request' && e.request.target !== SENTINEL) {
      const r = e.request;
      out.accepted.push({ method: r.method, target: r.target, rawHeaders: r.rawHeaders, body: r.body.toString('latin1'), trailers: r.trailers });
    }
  }
  return out;
}

// ---- the corpus ---------------------------------------------------------------------------

const TCHAR = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+-.^_`|~";
const token = (min: number, max: number) => fc.string({ unit: fc.constantFrom(...TCHAR), minLength: min, maxLength: max });
const valueByte = fc.oneof(
  { weight: 8, arbitrary: fc.integer({ min: 0x21, max: 0x7e }) },
  { weight: 2, arbitrary: fc.integer({ min: 0x80, max: 0xff }) },
  { weight: 1, arbitrary: fc.constant(0x20) },
);
const fieldValue = fc.array(valueByte, { maxLength: 20 }).map((a) => String.fromCharCode(...a).trim());
const pathByte = fc.oneof(
  { weight: 10, arbitrary: fc.constantFrom(..."abcXYZ019-._~!$&'()*+,;=:@/%?".split('').map((c) => c.charCodeAt(0))) },
  { weight: 1, arbitrary: fc.integer({ min: 0x80, max: 0xff }) },
);

/** A shape applied to a well-framed request: most keep it valid, some are smuggling shapes. */
const SHAPES = [
  'plain',
  'plain',
  'plain',
  'plain',
  'chunked',
  'chunked-trailers',
  'chunk-ext',
  'http10',
  'http10-keepalive',
  'no-host',
  'two-hosts',
  'options-star',
  'get-star',
  'expect-continue',
  'cl-and-te',
  'two-cl',
  'equal-cl',
  'obs-fold',
  'space-before-colon',
  'bare-lf',
  'te-gzip-chunked',
  'te-not-chunked',
  'nul-in-value',
  'bad-chunk-size',
  'http09',
  'connect',
  'leading-crlf',
] as const;
type Shape = (typeof SHAPES)[number];

interface Case {
  method: string;
  target: string;
  fields: [string, string][];
  body: string;
  shape: Shape;
}

const corpusCase: fc.Arbitrary<Case> = fc.record({
  method: fc.oneof({ weight: 4, arbitrary: fc.constantFrom(...METHODS.filter((m) => m !== 'CONNECT')) }, { weight: 1, arbitrary: token(1, 10) }),
  target: fc.array(pathByte, { maxLength: 30 }).map((a) => `/${String.fromCharCode(...a)}`),
  fields: fc.array(
    fc.tuple(
      token(1, 16).filter(
        (n) => !['content-length', 'transfer-encoding', 'host', 'expect', 'connection', 'upgrade', 'trailer', 'te'].includes(n.toLowerCase()),
      ),
      fieldValue,
    ),
    { maxLength: 6 },
  ),
  body: fc.string({ maxLength: 40 }).map((s) => Buffer.from(s, 'utf8').toString('latin1')),
  shape: fc.constantFrom(...SHAPES),
});

function frame(c: Case): Buffer {
  const lines: string[] = [];
  let method = c.method;
  let target = c.target;
  let version = 'HTTP/1.1';
  let host: string[] = ['Host: diff.example'];
  let body = `Content-Length: ${Buffer.byteLength(c.body, 'latin1')}\r\n\r\n${c.body}`;
  const chunked = (trailers: string, ext = '') =>
    `Transfer-Encoding: chunked\r\n\r\n${c.body.length > 0 ? `${c.body.length.toString(16)}${ext}\r\n${c.body}\r\n` : ''}0\r\n${trailers}\r\n`;
  let prefix = '';
  switch (c.shape) {
    case 'chunked':
      body = chunked('');
      break;
    case 'chunked-trailers':
      body = chunked('X-Sum: 1\r\nx-sum: 2\r\n');
      break;
    case 'chunk-ext':
      body = chunked('', ';a=1;b="x y"');
      break;
    case 'http10':
      version = 'HTTP/1.0';
      host = [];
      break;
    case 'http10-keepalive':
      version = 'HTTP/1.0';
      host.push('Connection: keep-alive');
      break;
    case 'no-host':
      host = [];
      break;
    case 'two-hosts':
      host.push('Host: other.example');
      break;
    case 'options-star':
      method = 'OPTIONS';
      target = '*';
      break;
    case 'get-star':
      method = 'GET';
      target = '*';
      break;
    case 'expect-continue':
      host.push('Expect: 100-continue');
      break;
    case 'cl-and-te':
      body = `Content-Length: 3\r\n${chunked('')}`;
      break;
    case 'two-cl':
      body = `Content-Length: 1\r\nContent-Length: 2\r\n\r\nab`;
      break;
    case 'equal-cl':
      body = `Content-Length: 2\r\nContent-Length: 2\r\n\r\nab`;
      break;
    case 'obs-fold':
      host.push('X-Folded: a', ' b');
      break;
    case 'space-before-colon':
      host.push('X-Space : a');
      break;
    case 'bare-lf':
      host.push('X-Lf: a\nX-After: b');
      break;
    case 'te-gzip-chunked':
      body = `Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n`;
      break;
    case 'te-not-chunked':
      body = `Transfer-Encoding: chunked, identity\r\n\r\n`;
      break;
    case 'nul-in-value':
      host.push('X-Nul: a\x00b');
      break;
    case 'bad-chunk-size':
      body = `Transfer-Encoding: chunked\r\n\r\nxyz\r\nab\r\n0\r\n\r\n`;
      break;
    case 'http09':
      return Buffer.from(`GET ${target}\r\n`, 'latin1');
    case 'connect':
      method = 'CONNECT';
      target = 'diff.example:443';
      break;
    case 'leading-crlf':
      prefix = '\r\n';
      break;
    case 'plain':
      break;
  }
  lines.push(`${prefix}${method} ${target} ${version}`, ...host, ...c.fields.map(([n, v]) => `${n}: ${v}`));
  return Buffer.from(`${lines.join('\r\n')}\r\n${body}`, 'latin1');
}

/** What one parser did with one case: delivered it as a request, or refused (or dropped) the connection there. */
type CaseOutcome = { delivered: boolean; refused: string | null };

/**
 * The explained differences. Each names the case it covers, what each parser does, and why
 * ours differs. After the first difference the connection's later cases are not compared:
 * one of the two parsers has closed it. A difference matching none fails the test.
 */
const EXPLAINED: { why: string; applies: (c: Case, node: CaseOutcome, ours: CaseOutcome) => boolean }[] = [
  {
    why: 'llhttp knows a fixed list of methods and refuses other tokens; RFC 9110 §9.1 allows any token, and nginx and Envoy forward them (BAN, in-house verbs)',
    applies: (c, node, ours) =>
      !METHODS.includes(c.method) &&
      !['options-star', 'get-star', 'connect', 'http09'].includes(c.shape) &&
      node.refused === 'HPE_INVALID_METHOD' &&
      ours.delivered,
  },
  {
    why: 'llhttp refuses obs-text (bytes 0x80-0xFF) in the request-target (HPE_INVALID_URL); nginx and Envoy forward such targets and production serves them, so the ingress keeps them as bytes',
    applies: (c, node, ours) => /[\x80-\xff]/.test(c.target) && node.refused === 'HPE_INVALID_URL' && ours.delivered,
  },
  {
    why: 'llhttp takes a request line without a version as HTTP/0.9 and delivers it (then closes); the ingress refuses it: no version and no fields is not a request a proxy forwards, and a parser that guesses where such a request ends is a smuggling vector',
    applies: (c, _node, ours) => c.shape === 'http09' && ours.refused?.startsWith('400 bad_request') === true,
  },
  {
    why: 'node:http answers 400 to HTTP/1.1 without Host (requireHostHeader); the ingress replays what production got, and nginx sends no Host upstream when the client sent none',
    applies: (c, node, ours) => c.shape === 'no-host' && !node.delivered && ours.delivered,
  },
  {
    why: 'llhttp accepts a transfer coding before chunked and hands over the still-coded bytes; the ingress cannot replay those as received, so it refuses (400 unsupported)',
    applies: (c, node, ours) => c.shape === 'te-gzip-chunked' && node.delivered && ours.refused?.startsWith('400 unsupported') === true,
  },
  {
    why: 'node accepts two Host fields; which one a server routes by is ambiguous and RFC 9112 §3.2 requires a 400, so the ingress refuses',
    applies: (c, node, ours) => c.shape === 'two-hosts' && node.delivered && ours.refused?.startsWith('400 bad_request') === true,
  },
  {
    why: 'asterisk-form is only meaningful for OPTIONS (RFC 9112 §3.2.4); node passes `GET *` through, the ingress refuses it as not replayable',
    applies: (c, node, ours) => c.shape === 'get-star' && node.delivered && ours.refused?.startsWith('400 unsupported') === true,
  },
  {
    why: 'node hands CONNECT to a "connect" listener (none here: the connection is dropped); the ingress answers 405: a tunnel cannot be replayed',
    applies: (c, node, ours) => c.shape === 'connect' && !node.delivered && ours.refused?.startsWith('405 unsupported') === true,
  },
];

function sameRequests(a: Outcome, b: Outcome): boolean {
  return JSON.stringify(a.accepted) === JSON.stringify(b.accepted);
}

test("differential: node's parser and the ingress's agree on a generated corpus, or differ only as explained", async () => {
  const counts = new Map<string, number>();
  await fc.assert(
    fc.asyncProperty(fc.array(corpusCase, { minLength: 1, maxLength: 3 }), async (generatedCases) => {
      // A request that closes its connection (HTTP/1.0 without keep-alive) is the last one sent on
      // it; so is one node answers itself and skips (no Host), as the cases after it would shift.
      const last = generatedCases.findIndex((c) => c.shape === 'http10' || c.shape === 'no-host');
      const cases = last === -1 ? generatedCases : generatedCases.slice(0, last + 1);
      // Pipelined: the cases of one run go on one connection; a refusal ends the connection.
      const bytes = Buffer.concat(cases.map(frame));
      // After a closing request there is nothing to mark the end with: node closes the connection itself.
      const sentinel = cases[cases.length - 1]?.shape !== 'http10';
      const node = await throughNode(bytes, sentinel);
      const ours = throughOurs(bytes, sentinel);
      const agree = (n: Outcome) => sameRequests(n, ours) && (n.refused === null) === (ours.refused === null);
      if (agree(node)) return;
      // The first case the two did not deliver identically must be an explained difference.
      let at = 0;
      while (
        at < cases.length &&
        at < node.accepted.length &&
        at < ours.accepted.length &&
        JSON.stringify(node.accepted[at]) === JSON.stringify(ours.accepted[at])
      )
        at++;
      const c = cases[Math.min(at, cases.length - 1)] as Case;
      const outcome = (o: Outcome): CaseOutcome => (o.accepted.length > at ? { delivered: true, refused: null } : { delivered: false, refused: o.refused });
      const explanation = EXPLAINED.find((e) => e.applies(c, outcome(node), outcome(ours)));
      assert.ok(
        explanation,
        `unexplained difference on ${JSON.stringify(bytes.toString('latin1'))} (hex ${bytes.toString('hex')})\n  node: ${JSON.stringify(node)}\n  ours: ${JSON.stringify(ours)}`,
      );
      counts.set(explanation.why, (counts.get(explanation.why) ?? 0) + 1);
    }),
    { numRuns: 400, includeErrorInReport: true },
  );
  // The explanations are exercised, not just written down.
  if (process.env.DIFF_DEBUG) console.log(counts);
  assert.ok(counts.size >= 3, `explained differences seen: ${[...counts.keys()].join(' | ')}`);
});

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { connect, constants, createServer, type Http2Server, type IncomingHttpHeaders, type ServerHttp2Stream } from 'node:http2';
import type { AddressInfo } from 'node:net';
import { RedisServer, Stack, waitFor } from '../helpers/index.js';

// Issue #18, replay over HTTP/2 against a hostile staging: trailers-only UNAVAILABLE retried then
// failed and `failed replay` delivers once fixed; a response cut by RST_STREAM(NO_ERROR) before
// its end (no END_STREAM, no grpc-status) is not a completed replay; byte-exact metadata.

let redis: RedisServer;
let staging: Http2Server;
let stagingUrl: string;
let stack: Stack;
/** Per path: every attempt staging saw (raw headers, body). */
const seen = new Map<string, { rawHeaders: string[]; body: Buffer }[]>();
let fixed = false;

before(async () => {
  redis = await RedisServer.start();
  staging = createServer();
  staging.on('stream', (stream: ServerHttp2Stream, headers: IncomingHttpHeaders, _flags: number, rawHeaders: string[]) => {
    stream.on('error', () => undefined);
    const path = headers[':path'] as string;
    const chunks: Buffer[] = [];
    stream.on('data', (c: Buffer) => chunks.push(c));
    stream.on('end', () => {
      const list = seen.get(path) ?? [];
      list.push({ rawHeaders, body: Buffer.concat(chunks) });
      seen.set(path, list);
      if (path === '/t.S/Unavailable' && !fixed) {
        // Trailers-only: grpc-status in the HEADERS frame that ends the stream.
        stream.respond({ ':status': 200, 'content-type': 'application/grpc', 'grpc-status': '14', 'grpc-message': 'down' }, { endStream: true });
        return;
      }
      if (path === '/t.S/Cut' && list.length === 1) {
        // Headers and half a message, then RST_STREAM NO_ERROR: the response never ended.
        stream.respond({ ':status': 200, 'content-type': 'application/grpc' });
        stream.write(Buffer.from([0, 0, 0, 0, 10, 1, 2]), () => stream.close(constants.NGHTTP2_NO_ERROR));
        return;
      }
      stream.respond({ ':status': 200, 'content-type': 'application/grpc' }, { waitForTrailers: true });
      stream.once('wantTrailers', () => stream.sendTrailers({ 'grpc-status': '0' }));
      stream.end(Buffer.from([0, 0, 0, 0, 0]));
    });
  });
  await new Promise<void>((resolve) => staging.listen(0, '127.0.0.1', resolve));
  stagingUrl = `http://127.0.0.1:${(staging.address() as AddressInfo).port}`;
  stack = await Stack.start({ redis, stagingUrl, workers: 1, env: { REPLAY_ATTEMPTS: '3', REPLAY_BACKOFF_MS: '50' } });
});

after(async () => {
  await stack?.close();
  await new Promise((resolve) => staging?.close(resolve));
  await redis?.close();
});

function send(path: string, extra: Record<string, string | string[]> = {}, body = Buffer.from([0, 0, 0, 0, 1, 7])): Promise<string | undefined> {
  const session = connect(`http://127.0.0.1:${stack.ingressPort}`);
  session.on('error', () => undefined);
  return new Promise((resolve) => {
    const stream = session.request({ ':method': 'POST', ':path': path, 'content-type': 'application/grpc', te: 'trailers', ...extra });
    let status: string | undefined;
    stream.on('response', (h) => (status = (h['grpc-status'] as string | undefined) ?? status));
    stream.on('trailers', (t) => (status = t['grpc-status'] as string));
    stream.on('data', () => undefined);
    stream.on('error', () => undefined);
    stream.on('close', () => {
      session.close();
      resolve(status);
    });
    stream.end(body);
  });
}

test('trailers-only UNAVAILABLE is retried REPLAY_ATTEMPTS times, fails into the failed set, and `failed replay` delivers once staging is fixed', async () => {
  assert.equal(await send('/t.S/Unavailable'), '0');
  await waitFor('in the failed set', async () => (await stack.status()).failed === 1, 60_000);
  assert.equal(seen.get('/t.S/Unavailable')?.length, 3, 'tried REPLAY_ATTEMPTS times');
  fixed = true;
  const result = await stack.cli(['failed', 'replay', '--all']);
  assert.equal(result.code, 0, result.stderr);
  await waitFor('delivered', () => (seen.get('/t.S/Unavailable')?.length ?? 0) >= 4, 60_000);
  await waitFor('failed set empty', async () => (await stack.status()).failed === 0, 60_000);
});

test('a response reset with NO_ERROR before it ended (half a message, no grpc-status) is not a completed replay: it is tried again', async () => {
  assert.equal(await send('/t.S/Cut'), '0');
  await waitFor('staging saw it', () => (seen.get('/t.S/Cut')?.length ?? 0) >= 1, 60_000);
  await waitFor(
    'retried, or settled',
    async () => (seen.get('/t.S/Cut')?.length ?? 0) >= 2 || ((await stack.status()).backlog === 0 && (await stack.status()).pending === 0),
    60_000,
  );
  assert.ok((seen.get('/t.S/Cut')?.length ?? 0) >= 2, 'a truncated response (RST_STREAM NO_ERROR mid-message) was taken as a complete answer');
});

test('metadata reaches staging byte-exact: -bin values, repeated keys in order, obs-text bytes, message bytes', async () => {
  const body = Buffer.concat([Buffer.from([0, 0, 0, 1, 0]), Buffer.from(Array.from({ length: 256 }, (_, i) => i))]);
  assert.equal(await send('/t.S/Meta', { 'x-rep': ['a', 'b', 'c'], 'trace-bin': 'AAEC/w==', 'x-latin': '\u00ff\u00e9z' }, body), '0');
  await waitFor('staging saw it', () => seen.get('/t.S/Meta')?.[0], 60_000);
  const got = (seen.get('/t.S/Meta') as { rawHeaders: string[]; body: Buffer }[])[0] as { rawHeaders: string[]; body: Buffer };
  const pairs: [string, string][] = [];
  for (let i = 0; i < got.rawHeaders.length; i += 2) pairs.push([got.rawHeaders[i] as string, got.rawHeaders[i + 1] as string]);
  assert.deepEqual(
    pairs.filter(([n]) => n === 'x-rep').map(([, v]) => v),
    ['a', 'b', 'c'],
  );
  assert.deepEqual(pairs.find(([n]) => n === 'trace-bin')?.[1], 'AAEC/w==');
  assert.deepEqual(Buffer.from(pairs.find(([n]) => n === 'x-latin')?.[1] ?? '', 'latin1'), Buffer.from([0xff, 0xe9, 0x7a]));
  assert.deepEqual(got.body, body);
});

// RFC 9113 §8.2.1 makes a request with CR/LF/NUL in a field value malformed; nghttp2 drops the
// field before node:http2 sees it and Node 20 has no hook to tell (documented in README's gRPC
// section and docs/RELIABILITY.md), so the ingress stores the request without it. The replay then
// carries exactly what was stored: no x-v, and the value's bytes never as a field of their own.
test('a field value with CR LF at intake (dropped by nghttp2, documented) is replayed without it and never as another field', async () => {
  const { RawH2Connection, headersFrame } = await import('../helpers/raw-h2.js');
  const conn = await RawH2Connection.open(stack.ingressPort);
  try {
    conn.write(
      headersFrame(
        1,
        [
          [':method', 'POST'],
          [':scheme', 'http'],
          [':authority', 'mirror.test'],
          [':path', '/t.S/Crlf'],
          ['x-v', 'a\r\nx-injected: 1'],
          ['x-after', 'kept'],
        ],
        true,
      ),
    );
    await waitFor('answered', () => conn.closed || conn.frames.some((f) => f.streamId === 1 && (f.type === 0x1 || f.type === 0x3)), 20_000);
  } finally {
    conn.close();
  }
  const failedBefore = (await stack.status()).failed;
  await waitFor(
    'settled',
    async () => {
      if ((seen.get('/t.S/Crlf')?.length ?? 0) > 0) return true;
      const st = await stack.status();
      return st.failed > failedBefore || (st.backlog === 0 && st.pending === 0 && st.retrying === 0);
    },
    60_000,
  );
  assert.equal((await stack.status()).failed, failedBefore, 'accepted at intake but not replayable');
  const got = seen.get('/t.S/Crlf')?.[0];
  if (got === undefined) return; // refused at intake (a later Node may refuse it): also within the documented behaviour
  assert.equal(got.rawHeaders.indexOf('x-injected'), -1, 'CR LF in a stored value became a separate field at staging');
  assert.equal(got.rawHeaders.indexOf('x-v'), -1, `the malformed value reached staging: ${JSON.stringify(got.rawHeaders)}`);
  assert.equal(got.rawHeaders[got.rawHeaders.indexOf('x-after') + 1], 'kept');
});

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { connect } from 'node:net';
import { RecordingServer, RedisServer, Stack, freePort, header, requestHead, sendRaw, waitFor } from '../helpers/index.js';
import { metric } from './steady-load.js';

// Bad input at the ingress: each kind gets a clear answer and is counted once by reason,
// and the process keeps serving. What is valid but unusual arrives at staging byte for byte.

let redis: RedisServer;
let staging: RecordingServer;
let stack: Stack;
let adminPort: number;

before(async () => {
  redis = await RedisServer.start();
  staging = await RecordingServer.start();
  adminPort = await freePort();
  stack = await Stack.start({
    redis,
    stagingUrl: staging.url,
    workers: 0,
    env: { BODY_TIMEOUT_MS: '1000', HEADERS_TIMEOUT_MS: '500', MAX_HEADER_BYTES: '16384' },
  });
  await stack.ingress.stop('SIGKILL');
  await stack.startIngress({ ADMIN_PORT: String(adminPort) });
  await stack.addWorker();
});

after(async () => {
  await stack?.close();
  await staging?.close();
  await redis?.close();
});

const dropped = (reason: string) => metric(adminPort, `mirrorplane_ingress_requests_dropped_total{reason="${reason}"}`);

async function stillServing(path: string): Promise<void> {
  const r = await sendRaw(stack.ingressPort, requestHead('GET', path, ['Host', 'x', 'X-Request-ID', path]));
  assert.equal(r.status, 200);
  await waitFor(`${path} at staging`, () => staging.received.some((q) => q.url === path));
}

test('malformed HTTP gets 400, counted as bad_request', async () => {
  const before = await dropped('bad_request');
  for (const raw of [
    'GET / HTTP/1.1\r\nBad Header: x\r\n\r\n',
    'NOT-HTTP\r\n\r\n',
    'GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab',
  ]) {
    const r = await sendRaw(stack.ingressPort, raw);
    assert.equal(r.status, 400, raw);
  }
  assert.equal(await dropped('bad_request'), before + 3);
  await stillServing('/after-malformed');
});

test('a head over MAX_HEADER_BYTES gets 431, counted as headers_too_large; one under it is accepted', async () => {
  const under = await sendRaw(stack.ingressPort, requestHead('GET', '/head-under-limit', ['Host', 'x', 'X-Big', 'a'.repeat(15_000)]));
  assert.equal(under.status, 200);
  const before = await dropped('headers_too_large');
  const r = await sendRaw(stack.ingressPort, requestHead('GET', '/big-head', ['Host', 'x', 'X-Big', 'a'.repeat(20_000)]));
  assert.equal(r.status, 431);
  assert.equal(await dropped('headers_too_large'), before + 1);
  await stillServing('/after-431');
});

test('a body slower than BODY_TIMEOUT_MS gets 408, counted once as body_timeout', async () => {
  const before = await dropped('body_timeout');
  const badBefore = await dropped('bad_request');
  const socket = connect(stack.ingressPort, '127.0.0.1');
  const answer = new Promise<string>((resolve) => {
    let text = '';
    socket.on('data', (d: Buffer) => {
      text += d.toString('latin1');
    });
    socket.on('error', () => undefined);
    socket.on('close', () => resolve(text));
  });
  // Half the body, then nothing: a slowloris.
  socket.write('POST /slow HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nhello');
  assert.match(await answer, /^HTTP\/1\.1 408/);
  // Once in-flight is back to 0 the request's close handler has run; it must not count again.
  await waitFor('the slow request to be released', async () => (await metric(adminPort, 'mirrorplane_ingress_in_flight')) === 0);
  assert.equal(await dropped('body_timeout'), before + 1);
  assert.equal(await dropped('aborted'), 0);
  assert.equal(await dropped('bad_request'), badBefore, 'the client closing after the 408 is not another bad request');
  await stillServing('/after-408');
});

test('a head slower than HEADERS_TIMEOUT_MS gets 408, counted once as headers_timeout; the socket is closed', async () => {
  const before = await dropped('headers_timeout');
  const bodyBefore = await dropped('body_timeout');
  const socket = connect(stack.ingressPort, '127.0.0.1');
  const answer = new Promise<string>((resolve) => {
    let text = '';
    socket.on('data', (d: Buffer) => {
      text += d.toString('latin1');
    });
    socket.on('error', () => undefined);
    socket.on('close', () => resolve(text));
  });
  // Part of a head, then nothing: a slowloris on the head (HEADERS_TIMEOUT_MS 500 < BODY_TIMEOUT_MS 1000).
  socket.write('GET /slow-head HTTP/1.1\r\nHost: x\r\nX-Partial: yes');
  const text = await answer;
  assert.match(text, /^HTTP\/1\.1 408 /);
  assert.match(text, /x-mirrorplane-drop: headers_timeout\r\n/);
  assert.equal(await dropped('headers_timeout'), before + 1);
  assert.equal(await dropped('body_timeout'), bodyBefore, 'counted once, under headers_timeout');
  await stillServing('/after-head-408');
});

test('Expect: 100-continue gets 100 before the body, then 200; staging gets the body and no Expect', async () => {
  const socket = connect(stack.ingressPort, '127.0.0.1');
  let text = '';
  const closed = new Promise<void>((resolve) => socket.on('close', () => resolve()));
  socket.on('data', (d: Buffer) => {
    text += d.toString('latin1');
  });
  socket.write('PUT /continue HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 7\r\nConnection: close\r\n\r\n');
  await waitFor('100 Continue', () => text.startsWith('HTTP/1.1 100 Continue\r\n\r\n'));
  socket.write('payload');
  await closed;
  assert.match(text.slice('HTTP/1.1 100 Continue\r\n\r\n'.length), /^HTTP\/1\.1 200/);
  const got = await waitFor('the replay', () => staging.received.find((r) => r.url === '/continue'));
  assert.equal(got.body.toString(), 'payload');
  assert.equal(header(got.rawHeaders, 'expect'), undefined);
});

test('a chunked body arrives whole, byte for byte', async () => {
  const parts = [Buffer.from([0, 1, 2, 255]), Buffer.alloc(3000, 7), Buffer.from('end')];
  const framed = Buffer.concat(parts.flatMap((p) => [Buffer.from(`${p.length.toString(16)}\r\n`), p, Buffer.from('\r\n')]).concat([Buffer.from('0\r\n\r\n')]));
  const r = await sendRaw(stack.ingressPort, 'POST /chunked HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n', framed);
  assert.equal(r.status, 200);
  const got = await waitFor('the replay', () => staging.received.find((q) => q.url === '/chunked'));
  assert.ok(got.body.equals(Buffer.concat(parts)));
  // Framing is kept: chunked in, chunked out (one chunk: boundaries are framing, not content).
  assert.equal(header(got.rawHeaders, 'transfer-encoding'), 'chunked');
  assert.equal(header(got.rawHeaders, 'content-length'), undefined);
});

test('bytes that are not UTF-8 in header values reach staging unchanged', async () => {
  // Invalid UTF-8: a lone continuation byte, a truncated sequence, 0xFF; and latin1 text.
  const value = Buffer.from([0x80, 0x41, 0xc3, 0x28, 0xff, 0x20, 0x63, 0x61, 0x66, 0xe9]).toString('latin1');
  // node's parser refuses raw bytes above 0x7f in the request-target (400); proxies send them percent-encoded.
  const target = '/bytes/%E9%FF?q=%C3';
  const r = await sendRaw(stack.ingressPort, requestHead('GET', target, ['Host', 'x', 'X-Bytes', value, 'X-Request-ID', 'bytes-1']));
  assert.equal(r.status, 200);
  const got = await waitFor('the replay', () => staging.received.find((q) => header(q.rawHeaders, 'x-request-id') === 'bytes-1'));
  assert.equal(Buffer.from(header(got.rawHeaders, 'x-bytes')!, 'latin1').toString('hex'), Buffer.from(value, 'latin1').toString('hex'));
  assert.equal(got.url, target);
});

test('after all of it the ingress is the same process, ready and serving', async () => {
  assert.equal(stack.ingress.child.exitCode, null);
  assert.equal((await fetch(`http://127.0.0.1:${adminPort}/readyz`)).status, 200);
  await stillServing('/at-the-end');
});

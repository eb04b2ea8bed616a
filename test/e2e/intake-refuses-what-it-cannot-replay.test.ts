import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { RequestParser } from '@mirrorplane/ingress';
import { RedisServer, Stack, sendRaw, waitFor } from '../helpers/index.js';

// The ingress answers 200 only for what the worker can replay as received; anything else is
// refused at intake with a counted reason, never accepted and then altered (docs/RELIABILITY.md). Requests are sent raw to the real ingress; a raw staging socket keeps the exact
// bytes it received (its own parser only cuts the stream into requests to answer them).

let redis: RedisServer;
let stack: Stack;
let server: Server;
const sockets = new Set<Socket>();
/** Each request's raw bytes as staging's socket received them. */
const received: string[] = [];

before(async () => {
  redis = await RedisServer.start();
  server = createServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => undefined);
    const parser = new RequestParser({ maxHeaderBytes: 16 << 20, maxBodyBytes: 16 << 20 });
    let raw = '';
    socket.on('data', (chunk: Buffer) => {
      raw += chunk.toString('latin1');
      parser.feed(chunk);
      for (let e = parser.next(); e !== null; e = parser.next()) {
        if (e.kind === 'refused') {
          received.push(`REFUSED BY STAGING (${e.refusal.detail}): ${raw}`);
          socket.destroy();
          return;
        }
        if (e.kind === 'request') {
          // One request per connection at a time (the worker does not pipeline): all raw bytes so far are this request.
          received.push(raw);
          raw = '';
          socket.write('HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n');
        }
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const stagingUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  stack = await Stack.start({ redis, stagingUrl, workers: 1 });
});

after(async () => {
  await stack?.close();
  for (const s of sockets) s.destroy();
  await new Promise<void>((resolve) => server?.close(() => resolve()));
  await redis?.close();
});

const atStaging = (marker: string) => received.find((r) => r.includes(marker));

test('framing fields that the replay could not send as received are refused at intake, counted, and never reach staging', async () => {
  // The replay sends one Transfer-Encoding field, `chunked`: every other shape is refused.
  const shapes: Record<string, string> = {
    'two fields, one empty': 'Transfer-Encoding: \r\nX-Pad: 1\r\nTransfer-Encoding: chunked\r\n',
    'two fields, both chunked': 'Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n',
    'two fields, differing case': 'transfer-encoding: chunked\r\nTRANSFER-ENCODING: chunked\r\n',
    'an empty list element': 'Transfer-Encoding: , chunked\r\n',
    'a list with chunked twice': 'Transfer-Encoding: chunked, chunked\r\n',
  };
  for (const [name, fields] of Object.entries(shapes)) {
    const marker = `te-${name.replace(/[^a-z]+/g, '-')}`;
    const head = `POST /${marker} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n${fields}X-Case: ${marker}\r\n\r\n`;
    const answer = await sendRaw(stack.ingressPort, head, Buffer.from('3\r\nabc\r\n0\r\n\r\n', 'latin1'));
    assert.equal(answer.status, 400, `${name}: ${answer.head}`);
    assert.match(answer.head, /x-mirrorplane-drop: (bad_request|unsupported)\r\n/i, name);
  }
  // A request accepted after them (same worker, same staging) arrives: none of the refused did.
  assert.equal((await sendRaw(stack.ingressPort, 'GET /te-after HTTP/1.1\r\nHost: a\r\nConnection: close\r\nX-Case: te-after\r\n\r\n')).status, 200);
  await waitFor('staging to receive te-after', () => atStaging('X-Case: te-after'), 60_000);
  assert.equal(received.filter((r) => r.includes('X-Case: te-')).length, 1, received.filter((r) => r.includes('X-Case: te-')).join('\n'));
});

test('a single Transfer-Encoding in any case, and a Content-Length with leading zeros, reach staging as received', async () => {
  const a = await sendRaw(
    stack.ingressPort,
    'POST /te-case HTTP/1.1\r\nHost: a\r\nConnection: close\r\nTransfer-Encoding: Chunked\r\nX-Case: te-case\r\n\r\n',
    Buffer.from('3\r\nabc\r\n0\r\n\r\n', 'latin1'),
  );
  assert.equal(a.status, 200, a.head);
  const b = await sendRaw(
    stack.ingressPort,
    'POST /cl-zeros HTTP/1.1\r\nHost: a\r\nConnection: close\r\nContent-Length: 003\r\nX-Case: cl-zeros\r\n\r\n',
    Buffer.from('abc'),
  );
  assert.equal(b.status, 200, b.head);
  assert.match(await waitFor('te-case', () => atStaging('X-Case: te-case'), 60_000), /\r\nTransfer-Encoding: Chunked\r\n/);
  assert.match(await waitFor('cl-zeros', () => atStaging('X-Case: cl-zeros'), 60_000), /\r\nContent-Length: 003\r\n/);
});

test("x-mirrorplane-id and x-mirrorplane-attempt sent by the client are replaced: staging receives only Mirrorplane's own, once each", async () => {
  const head =
    'GET /own-id HTTP/1.1\r\nHost: a\r\nConnection: close\r\nX-Mirrorplane-Id: client-chosen\r\nX-Case: own-id\r\nx-mirrorplane-attempt: 7\r\nX-Mirrorplane-Other: kept\r\n\r\n';
  const answer = await sendRaw(stack.ingressPort, head);
  assert.equal(answer.status, 200, answer.head);
  const got = await waitFor('staging to receive own-id', () => atStaging('X-Case: own-id'), 60_000);
  const lines = got.split('\r\n');
  const ids = lines.filter((l) => /^x-mirrorplane-id:/i.test(l));
  const attempts = lines.filter((l) => /^x-mirrorplane-attempt:/i.test(l));
  assert.deepEqual(attempts, ['x-mirrorplane-attempt: 1'], got);
  assert.equal(ids.length, 1, got);
  assert.match(ids[0] as string, /^x-mirrorplane-id: \d+-\d+$/, "the stream entry id, not the client's");
  assert.match(got, /\r\nX-Mirrorplane-Other: kept\r\n/, 'other x-mirrorplane-* fields are kept');
});

test('20,000 header fields within MAX_HEADER_BYTES: accepted, and staging receives every one in order', async () => {
  const n = 20_000;
  let head = 'GET /many HTTP/1.1\r\nHost: a\r\nConnection: close\r\nX-Case: many\r\n';
  for (let i = 0; i < n; i++) head += `f${i % 10}: \r\n`;
  head += '\r\n';
  const answer = await sendRaw(stack.ingressPort, head);
  assert.equal(answer.status, 200, `a ${head.length}-byte head under MAX_HEADER_BYTES: ${answer.head}`);
  const got = await waitFor('staging to receive many', () => atStaging('X-Case: many'), 90_000);
  const count = got.split('\r\n').filter((l) => /^f[0-9]: ?$/.test(l)).length;
  assert.equal(count, n, `staging received ${count} of ${n} fields`);
});

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { RequestParser } from '@mirrorplane/ingress';
import { RedisServer, Stack, sendRaw, waitFor } from '../helpers/index.js';

// The rule of issue 13 (docs/RELIABILITY.md): "the ingress answers 200 only for what the worker
// can replay as received; anything else is refused at intake ..., never accepted and then
// altered". Requests are sent raw to the real ingress; a raw staging socket keeps the exact
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

test('two Transfer-Encoding fields (one empty) are accepted, so staging must receive both field lines, or the ingress must refuse', async () => {
  const head = 'POST /te-twice HTTP/1.1\r\nHost: a\r\nConnection: close\r\nTransfer-Encoding: \r\nX-Case: te-twice\r\nTransfer-Encoding: chunked\r\n\r\n';
  const answer = await sendRaw(stack.ingressPort, head, Buffer.from('3\r\nabc\r\n0\r\n\r\n', 'latin1'));
  if (answer.status !== 200) return; // refused at intake: the rule holds
  const got = await waitFor('staging to receive te-twice', () => atStaging('X-Case: te-twice'), 60_000);
  const teLines = got.split('\r\n').filter((l) => /^transfer-encoding:/i.test(l));
  assert.equal(teLines.length, 2, `accepted with 200, but staging received ${teLines.length} Transfer-Encoding line(s):\n${JSON.stringify(got)}`);
});

test('a request that carries its own x-mirrorplane-* fields: accepted, so staging must receive them, or the ingress must refuse', async () => {
  const head = 'GET /own-id HTTP/1.1\r\nHost: a\r\nConnection: close\r\nX-Mirrorplane-Id: client-chosen\r\nX-Case: own-id\r\nx-mirrorplane-attempt: 7\r\n\r\n';
  const answer = await sendRaw(stack.ingressPort, head);
  if (answer.status !== 200) return;
  const got = await waitFor('staging to receive own-id', () => atStaging('X-Case: own-id'), 60_000);
  // README "What staging receives" lists what is removed (hop-by-hop fields and expect) and
  // that nothing else is changed; a field the client sent is neither.
  assert.match(got, /X-Mirrorplane-Id: client-chosen\r\n/, `accepted with 200, but the client's X-Mirrorplane-Id did not reach staging:\n${JSON.stringify(got)}`);
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

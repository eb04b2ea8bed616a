import { test } from 'node:test';
import assert from 'node:assert/strict';
import { connect as h2connect, type ClientHttp2Session } from 'node:http2';
import { connect, type Socket } from 'node:net';
import { RedisServer, acceptedCount as accepted, droppedCount as dropped, metric, startIngress, untilReady, waitFor } from '../helpers/index.js';

/**
 * Issue #17: appends timed out by the ingress's ExpiryQueue, on HTTP/2 (h2c) streams and on
 * pipelined HTTP/1.1 requests. Each request is answered once; /metrics match the answers.
 */

interface H2Answer {
  headers: Record<string, string | string[] | undefined>[];
  body: string;
}

function h2request(session: ClientHttp2Session, path: string, body: string): Promise<H2Answer> {
  return new Promise((resolve, reject) => {
    const stream = session.request({ ':method': 'POST', ':path': path, 'x-request-id': path.slice(1).replaceAll('/', '-') });
    const answer: H2Answer = { headers: [], body: '' };
    stream.on('response', (h) => answer.headers.push(h));
    stream.on('data', (c: Buffer) => (answer.body += c.toString()));
    stream.on('end', () => resolve(answer));
    stream.on('error', reject);
    stream.end(body);
  });
}

test('h2c streams whose appends time out: one 503 redis_timeout each, the session still serves, counters match', async () => {
  const redis = await RedisServer.start();
  const { ingress, port, adminPort } = await startIngress(redis.url, { APPEND_TIMEOUT_MS: '1200' });
  const session = h2connect(`http://127.0.0.1:${port}`);
  session.on('error', () => undefined);
  try {
    const first = await h2request(session, '/h2/before', 'a');
    assert.equal(first.headers[0]?.[':status'], 200);
    const acceptedBefore = await accepted(adminPort);
    redis.signal('SIGSTOP');
    const n = 8;
    const answers = await Promise.all(Array.from({ length: n }, (_, i) => h2request(session, `/h2/during/${i}`, `body-${i}`)));
    for (const a of answers) {
      assert.equal(a.headers.length, 1, 'one response head per stream');
      assert.equal(a.headers[0]?.[':status'], 503);
      assert.equal(a.headers[0]?.['x-mirrorplane-drop'], 'redis_timeout');
    }
    redis.signal('SIGCONT');
    await untilReady(adminPort);
    const after = await h2request(session, '/h2/after', 'z');
    assert.equal(after.headers[0]?.[':status'], 200);
    assert.equal((await accepted(adminPort)) - acceptedBefore, 1);
    assert.equal(await dropped(adminPort, 'redis_timeout'), n);
  } finally {
    redis.signal('SIGCONT');
    session.destroy();
    await ingress.stop('SIGKILL');
    await redis.close();
  }
});

test('pipelined HTTP/1.1 requests whose appends time out in the middle: 200, then one 503 that closes, no answer twice, counters match', async () => {
  const redis = await RedisServer.start();
  const { ingress, port, adminPort } = await startIngress(redis.url, { APPEND_TIMEOUT_MS: '1200' });
  let socket: Socket | null = null;
  try {
    const receivedBefore = await metric(adminPort, 'mirrorplane_ingress_requests_received_total');
    socket = connect(port, '127.0.0.1');
    let data = '';
    let closed = false;
    socket.on('data', (c: Buffer) => (data += c.toString('latin1')));
    socket.on('error', () => undefined);
    socket.on('close', () => (closed = true));
    const req = (i: number) => `POST /pipe/${i} HTTP/1.1\r\nHost: x\r\nX-Request-ID: pipe-${i}\r\nContent-Length: 1\r\n\r\n${i}`;
    socket.write(req(0));
    await waitFor('the first answer', () => data.includes('HTTP/1.1 200'));
    redis.signal('SIGSTOP');
    socket.write(req(1) + req(2) + req(3));
    await waitFor('the connection to close', () => closed, 30_000);
    const statuses = [...data.matchAll(/HTTP\/1\.1 (\d{3})/g)].map((m) => Number(m[1]));
    assert.deepEqual(statuses, [200, 503]);
    assert.match(data, /x-mirrorplane-drop: redis_timeout/);
    redis.signal('SIGCONT');
    await untilReady(adminPort);
    // Requests the client saw answered: 1 accepted, 1 dropped; the two never answered are not counted as answered.
    assert.equal(await accepted(adminPort), 1);
    assert.equal(await dropped(adminPort, 'redis_timeout'), 1);
    const received = (await metric(adminPort, 'mirrorplane_ingress_requests_received_total')) - receivedBefore;
    assert.ok(received === 2, `received counted ${received}`);
  } finally {
    redis.signal('SIGCONT');
    socket?.destroy();
    await ingress.stop('SIGKILL');
    await redis.close();
  }
});

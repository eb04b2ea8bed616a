import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { connect } from 'node:net';
import { connect as connectH2 } from 'node:http2';
import { RecordingServer, RedisServer, Stack, freePort, sendRaw } from '../helpers/index.js';

// MAX_BODY_BYTES may be set up to 512 MiB (Redis's default proto-max-bulk-len), but a Redis may
// take less (managed Redis, or an operator's setting). Redis answers an XADD with a value over
// proto-max-bulk-len with a protocol error and closes the connection: every append in flight on
// the ingress's one Redis connection would fail with it. The ingress reads proto-max-bulk-len
// at start and refuses such an entry on its own: 413 `over_redis_limit`, counted; the others
// are stored. Here proto-max-bulk-len is 1 MiB (the least Redis allows) to stand for 512 MiB.
// Members: a Content-Length body, a chunked body, a header field (MAX_HEADER_BYTES 4 MiB), an
// HTTP/2 body; each while other clients pipeline small requests on the same Redis connection.

let redis: RedisServer;
let staging: RecordingServer;
let stack: Stack;
let adminPort: number;

before(async () => {
  redis = await RedisServer.start({ args: ['--proto-max-bulk-len', '1mb'] });
  staging = await RecordingServer.start();
  adminPort = await freePort();
  stack = await Stack.start({
    redis,
    stagingUrl: staging.url,
    workers: 0,
    env: { MAX_HEADER_BYTES: String(4 * 1024 * 1024) },
    ingressEnv: { ADMIN_PORT: String(adminPort), ADMIN_HOST: '127.0.0.1' },
  });
});

after(async () => {
  await stack?.close();
  await staging?.close();
  await redis?.close();
});

async function overLimitCount(): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${adminPort}/metrics`)).text();
  return Number(/^mirrorplane_ingress_requests_dropped_total\{reason="over_redis_limit"\} (\d+)/m.exec(text)?.[1] ?? NaN);
}

function pipeline(tag: string, count: number): Promise<number[]> {
  const bytes = Buffer.from(
    Array.from({ length: count }, (_, i) => `POST /small/${tag}/${i} HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nsmall`).join(''),
    'latin1',
  );
  return new Promise((resolve) => {
    const socket = connect({ port: stack.ingressPort, host: '127.0.0.1' });
    let text = '';
    socket.on('data', (d: Buffer) => {
      text += d.toString('latin1');
    });
    socket.on('error', () => undefined);
    socket.on('close', () => resolve([...text.matchAll(/HTTP\/1\.1 (\d{3})/g)].map((m) => Number(m[1]))));
    socket.on('connect', () => socket.end(bytes));
  });
}

/** Sends one oversized request over HTTP/2; resolves with its :status and drop reason. */
function h2Big(body: Buffer): Promise<{ status: number; reason: string }> {
  return new Promise((resolve, reject) => {
    const session = connectH2(`http://127.0.0.1:${stack.ingressPort}`);
    session.on('error', reject);
    const stream = session.request({ ':method': 'PUT', ':path': '/big/h2', 'content-length': String(body.length) });
    stream.on('error', () => undefined);
    stream.on('response', (headers) => {
      resolve({ status: Number(headers[':status']), reason: String(headers['x-mirrorplane-drop'] ?? '') });
      session.close();
    });
    stream.end(body);
  });
}

const MIB2 = 2 * 1024 * 1024;
const members: [name: string, send: () => Promise<{ status: number; reason: string }>][] = [
  [
    'a Content-Length body',
    async () => {
      const r = await sendRaw(
        stack.ingressPort,
        `PUT /big HTTP/1.1\r\nHost: x\r\nContent-Length: ${MIB2}\r\nConnection: close\r\n\r\n`,
        Buffer.alloc(MIB2, 0x62),
      );
      return { status: r.status, reason: /x-mirrorplane-drop: (\S+)/.exec(r.head)?.[1] ?? '' };
    },
  ],
  [
    'a chunked body',
    async () => {
      const chunk = Buffer.alloc(512 * 1024, 0x63);
      const size = chunk.length.toString(16);
      const body = Buffer.concat([
        ...Array.from({ length: 4 }, () => Buffer.concat([Buffer.from(`${size}\r\n`), chunk, Buffer.from('\r\n')])),
        Buffer.from('0\r\n\r\n'),
      ]);
      const r = await sendRaw(stack.ingressPort, 'PUT /big/chunked HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n', body);
      return { status: r.status, reason: /x-mirrorplane-drop: (\S+)/.exec(r.head)?.[1] ?? '' };
    },
  ],
  [
    'a header section (one 1.5 MiB field)',
    async () => {
      const r = await sendRaw(stack.ingressPort, `GET /big/header HTTP/1.1\r\nHost: x\r\nX-Big: ${'h'.repeat(1536 * 1024)}\r\n\r\n`);
      return { status: r.status, reason: /x-mirrorplane-drop: (\S+)/.exec(r.head)?.[1] ?? '' };
    },
  ],
  ['an HTTP/2 body', () => h2Big(Buffer.alloc(MIB2, 0x64))],
];

for (const [name, send] of members) {
  test(`${name} over Redis proto-max-bulk-len (under the ingress's limits) is refused on its own: 413 over_redis_limit, counted; concurrent small requests all stored`, async () => {
    const counted = await overLimitCount();
    const big = send();
    const small = await Promise.all(Array.from({ length: 4 }, (_, k) => pipeline(`${name.length}-${k}`, 100)));
    const { status, reason } = await big;
    const refusedSmall = small.flat().filter((s) => s !== 200).length;
    const answeredSmall = small.flat().length;
    assert.ok(
      status === 413 && reason === 'over_redis_limit' && refusedSmall === 0 && answeredSmall === 400,
      `big answered ${status} (${reason}); small requests: ${answeredSmall} of 400 answered, ${refusedSmall} refused (${[...new Set(small.flat())].join(',')})`,
    );
    assert.equal(await overLimitCount(), counted + 1);
    // The shared Redis connection was never broken: a request after it is stored too.
    const after = await sendRaw(stack.ingressPort, 'POST /after HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok');
    assert.equal(after.status, 200);
  });
}

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { connect } from 'node:net';
import fc from 'fast-check';
import { RecordingServer, RedisServer, Stack } from '../helpers/index.js';

// A client may send several requests and its FIN together (or the FIN while the first answer
// is pending): every whole request sent before the FIN is appended and answered 200, in order,
// then the connection closes; a partial request cut by the FIN is not appended.

let redis: RedisServer;
let staging: RecordingServer;
let stack: Stack;

before(async () => {
  redis = await RedisServer.start();
  staging = await RecordingServer.start();
  // No worker: the test counts what the ingress appends.
  stack = await Stack.start({ redis, stagingUrl: staging.url, workers: 0 });
});

after(async () => {
  await stack?.close();
  await staging?.close();
  await redis?.close();
});

async function streamLength(): Promise<number> {
  const client = redis.client();
  try {
    return await client.xlen(`{${stack.env.MIRRORPLANE_PREFIX}}:stream`);
  } finally {
    client.disconnect();
  }
}

/** Writes `parts` in order (each its own write), then half-closes; resolves with every byte answered. */
function halfClose(port: number, parts: Buffer[], finWithLast: boolean): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = connect({ port, host: '127.0.0.1', allowHalfOpen: true });
    const chunks: Buffer[] = [];
    socket.on('data', (c: Buffer) => chunks.push(c));
    socket.on('error', reject);
    socket.on('end', () => {
      resolve(Buffer.concat(chunks).toString('latin1'));
      socket.destroy();
    });
    socket.on('connect', () => {
      parts.forEach((part, i) => {
        if (finWithLast && i === parts.length - 1) socket.end(part);
        else socket.write(part);
      });
      if (!finWithLast) socket.end();
    });
  });
}

const request = (i: number, body: string) => `POST /half-close/${i} HTTP/1.1\r\nHost: x\r\nContent-Length: ${body.length}\r\n\r\n${body}`;

test('requests sent before a FIN are all appended and answered 200, whatever the FIN arrives with', async () => {
  await fc.assert(
    fc.asyncProperty(
      fc.array(
        fc.string({ maxLength: 40 }).map((s) => s.replace(/[^\x20-\x7e]/g, 'x')),
        { minLength: 1, maxLength: 4 },
      ),
      fc.boolean(),
      fc.boolean(),
      fc.boolean(),
      async (bodies, oneWrite, finWithLast, partialTail) => {
        const whole = bodies.map((body, i) => request(i, body));
        const tail = partialTail ? 'POST /half-close/cut HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc' : '';
        const bytes = whole.join('') + tail;
        const parts = oneWrite ? [Buffer.from(bytes, 'latin1')] : [...whole, ...(tail ? [tail] : [])].map((p) => Buffer.from(p, 'latin1'));
        const before = await streamLength();
        const answered = await halfClose(stack.ingressPort, parts, finWithLast);
        const statuses = [...answered.matchAll(/HTTP\/1\.1 (\d{3})/g)].map((m) => m[1]);
        assert.deepEqual(
          statuses,
          bodies.map(() => '200'),
          `answers: ${JSON.stringify(answered)}`,
        );
        assert.equal(await streamLength(), before + bodies.length);
      },
    ),
    { numRuns: 25 },
  );
});

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { connect } from 'node:net';
import { RecordingServer, RedisServer, Stack, sendRaw } from '../helpers/index.js';

// MAX_BODY_BYTES may be set up to 1 GiB, but Redis takes no bulk string over its
// proto-max-bulk-len (512 MiB by default; managed Redis may set less). Redis answers such an
// XADD with a protocol error and closes the connection: every append in flight on the ingress's
// one Redis connection fails with it. Here proto-max-bulk-len is 1 MiB (the least Redis
// allows) to stand for the default 512 MiB: a 2 MiB body, under MAX_BODY_BYTES (10 MiB), is
// sent while other clients pipeline small requests. Promised: an oversized body gets 413 and a
// counted reason (or at least only that request fails); other requests are not refused for it.

let redis: RedisServer;
let staging: RecordingServer;
let stack: Stack;

before(async () => {
  redis = await RedisServer.start({ args: ['--proto-max-bulk-len', '1mb'] });
  staging = await RecordingServer.start();
  stack = await Stack.start({ redis, stagingUrl: staging.url, workers: 0 });
});

after(async () => {
  await stack?.close();
  await staging?.close();
  await redis?.close();
});

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

test('a body over Redis proto-max-bulk-len (under MAX_BODY_BYTES) is refused on its own: 413, and concurrent small requests are all stored', async () => {
  const big = Buffer.alloc(2 * 1024 * 1024, 0x62);
  const bigAnswer = sendRaw(stack.ingressPort, `PUT /big HTTP/1.1\r\nHost: x\r\nContent-Length: ${big.length}\r\nConnection: close\r\n\r\n`, big);
  const small = await Promise.all(Array.from({ length: 8 }, (_, k) => pipeline(String(k), 200)));
  const { status, head } = await bigAnswer;
  const refusedSmall = small.flat().filter((s) => s !== 200).length;
  const answeredSmall = small.flat().length;
  assert.ok(
    status === 413 && refusedSmall === 0 && answeredSmall === 1600,
    `big body answered ${status} (${JSON.stringify(head.split('\r\n').find((l) => l.startsWith('x-mirrorplane-drop')) ?? '')}); ` +
      `small requests: ${answeredSmall} of 1600 answered, ${refusedSmall} refused (${[...new Set(small.flat())].join(',')})`,
  );
});

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { RecordingServer, RedisServer, Stack, sendRaw, waitFor } from '../helpers/index.js';
import { FLAG, FRAME, RawH2Connection, frame, headerBlock, headersFrame, rstFrame } from '../helpers/raw-h2.js';

// Issue #18: a stream that nghttp2 resets (or the client resets) in the same read as its
// HEADERS reaches H2Intake's 'stream' listener already destroyed; `stream.session` is then
// undefined and `open.set(undefined, …)` throws "Invalid value used as weak map key" out of an
// event listener: the ingress process exits. Any h2c client can take the ingress down.

let redis: RedisServer;
let staging: RecordingServer;
let stack: Stack;

before(async () => {
  redis = await RedisServer.start();
  staging = await RecordingServer.start();
  stack = await Stack.start({ redis, stagingUrl: staging.url, workers: 0, env: { MAX_BODY_BYTES: '5000', MAX_CONCURRENT_STREAMS: '3' } });
});

after(async () => {
  await stack?.close();
  await staging?.close();
  await redis?.close();
});

const base = (path: string): [string, string][] => [
  [':method', 'POST'],
  [':scheme', 'http'],
  [':authority', 'mirror.test'],
  [':path', path],
];

async function assertAlive(what: string): Promise<void> {
  // Give an uncaught exception its moment, then ask over HTTP/1.1.
  const answer = await sendRaw(stack.ingressPort, 'POST /alive HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-length: 0\r\n\r\n').catch((e: Error) => ({
    status: 0,
    error: e.message,
  }));
  assert.equal(
    stack.ingress.child.exitCode,
    null,
    `ingress exited after ${what}: ${stack.ingress.stdout
      .split('\n')
      .filter((l) => l.includes('uncaught'))
      .join('\n')}`,
  );
  assert.equal(answer.status, 200, `ingress still answers after ${what}`);
}

for (const [declared, sent] of [
  [3, 5],
  [10, 5],
] as const)
  test(`HEADERS (content-length ${declared}) then ${sent} bytes of DATA, in one write, on 50 streams: the ingress stays up`, async () => {
    if (stack.ingress.child.exitCode !== null) await stack.startIngress();
    const conn = await RawH2Connection.open(stack.ingressPort);
    try {
      const parts: Buffer[] = [];
      for (let i = 0; i < 50; i++) {
        const id = 1 + 2 * i;
        parts.push(frame(FRAME.HEADERS, FLAG.END_HEADERS, id, headerBlock([...base(`/cl/${i}`), ['content-length', String(declared)]])));
        parts.push(frame(FRAME.DATA, FLAG.END_STREAM, id, Buffer.alloc(sent, 0x61)));
      }
      conn.write(Buffer.concat(parts));
      await waitFor(
        'the ingress answers or dies',
        () => conn.closed || conn.frames.filter((f) => f.type === FRAME.RST_STREAM).length >= 50 || stack.ingress.child.exitCode !== null,
        20_000,
      );
    } finally {
      conn.close();
    }
    await waitFor('a moment for a crash', () => new Promise((r) => setTimeout(() => r(true), 200)));
    await assertAlive('content-length mismatches');
  });

test('the framing test sequence (HEADERS; DATA short of content-length; HEADERS; DATA past content-length), up to 100 connections: the ingress stays up', async () => {
  if (stack.ingress.child.exitCode !== null) await stack.startIngress();
  for (let n = 0; n < 100 && stack.ingress.child.exitCode === null; n++) {
    const refused = await sendRaw(stack.ingressPort, 'PRI * HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-length: 0\r\n\r\n').catch(() => null);
    void refused;
    const conn = await RawH2Connection.open(stack.ingressPort).catch(() => null);
    if (conn === null) break;
    try {
      conn.write(frame(FRAME.HEADERS, FLAG.END_HEADERS, 1, headerBlock([...base('/seq/short'), ['content-length', '10']])));
      conn.write(frame(FRAME.DATA, FLAG.END_STREAM, 1, Buffer.from('12345')));
      conn.write(frame(FRAME.HEADERS, FLAG.END_HEADERS, 3, headerBlock([...base('/seq/long'), ['content-length', '3']])));
      conn.write(frame(FRAME.DATA, FLAG.END_STREAM, 3, Buffer.from('12345')));
      await waitFor(
        'the ingress reacts or dies',
        () => conn.closed || conn.frames.some((f) => f.streamId === 3) || stack.ingress.child.exitCode !== null,
        20_000,
      );
    } finally {
      conn.close();
    }
  }
  await waitFor('a moment for a crash', () => new Promise((r) => setTimeout(() => r(true), 200)));
  await assertAlive('the framing sequence');
});

test('rapid reset in one write (HEADERS + RST_STREAM on 500 streams): the ingress stays up', async () => {
  if (stack.ingress.child.exitCode !== null) await stack.startIngress();
  const conn = await RawH2Connection.open(stack.ingressPort);
  try {
    const parts: Buffer[] = [];
    for (let i = 0; i < 500; i++) parts.push(headersFrame(1 + 2 * i, base(`/rr/${i}`), false), rstFrame(1 + 2 * i, 8));
    conn.write(Buffer.concat(parts));
    await waitFor('the ingress reacts or dies', () => conn.closed || conn.frames.length > 1 || stack.ingress.child.exitCode !== null, 20_000);
  } finally {
    conn.close();
  }
  await waitFor('a moment for a crash', () => new Promise((r) => setTimeout(() => r(true), 200)));
  await assertAlive('rapid reset');
});

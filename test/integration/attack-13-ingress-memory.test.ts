import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { RecordingServer, RedisServer, Stack, waitFor } from '../helpers/index.js';

// Attack on issue 13's own intake (apps/ingress/src/intake-server.ts, http1-parser.ts):
// docs/RELIABILITY.md promises "Memory of each process is bounded by its settings, not by the
// load: the ingress holds at most the requests in flight (each ≤ MAX_BODY_BYTES)". These tests
// measure the real ingress process's RSS while a single client misbehaves.

let redis: RedisServer;
let staging: RecordingServer;
let stack: Stack;
const MAX_BODY = 64 * 1024;

before(async () => {
  redis = await RedisServer.start();
  staging = await RecordingServer.start();
  stack = await Stack.start({ redis, stagingUrl: staging.url, workers: 0, env: { MAX_BODY_BYTES: String(MAX_BODY), BODY_TIMEOUT_MS: '60000' } });
});

after(async () => {
  await stack?.close();
  await staging?.close();
  await redis?.close();
});

function rssMiB(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = Number(/VmRSS:\s+(\d+)/.exec(status)?.[1]);
  return kb / 1024;
}

/** Writes `total` bytes of `piece` to the socket, respecting back-pressure; resolves when written or the socket closes. */
function pump(socket: Socket, piece: Buffer, total: number): Promise<number> {
  return new Promise((resolve) => {
    let sent = 0;
    let done = false;
    const finish = () => {
      if (!done) {
        done = true;
        resolve(sent);
      }
    };
    socket.once('close', finish);
    socket.once('error', finish);
    const write = () => {
      while (sent < total && !socket.destroyed) {
        sent += piece.length;
        if (!socket.write(piece)) {
          socket.once('drain', write);
          return;
        }
      }
      finish();
    };
    write();
  });
}

test('after a refused request (413), a client that keeps sending is not buffered without bound', async () => {
  const pid = stack.ingress.child.pid as number;
  const before = rssMiB(pid);
  // allowHalfOpen: the client does not end its side when the ingress ends its own (as a raw peer may).
  const socket = connect({ port: stack.ingressPort, host: '127.0.0.1', allowHalfOpen: true });
  socket.on('error', () => undefined);
  let answer = '';
  socket.on('data', (d: Buffer) => { answer += d.toString('latin1'); });
  await new Promise<void>((resolve) => socket.once('connect', () => resolve()));
  // Declared far over MAX_BODY_BYTES: refused at once with 413 and `connection: close`.
  socket.write('POST /upload HTTP/1.1\r\nhost: a\r\ncontent-length: 999999999\r\n\r\n');
  await waitFor('413 answer', () => answer.startsWith('HTTP/1.1 413'), 10_000);
  // The client (a misbehaving or hostile peer) keeps streaming its "body": 256 MiB at most.
  let written = 0;
  socket.on('drain', () => { written = socket.bytesWritten; });
  const sent = await Promise.race([
    pump(socket, Buffer.alloc(64 * 1024, 0x41), 256 * 1024 * 1024),
    new Promise<number>((resolve) => setTimeout(() => resolve(-1), 20_000)),
  ]);
  const afterRss = rssMiB(pid);
  socket.destroy();
  // Expected: the ingress stops reading (or destroys the socket) after refusing; its memory does
  // not grow with what the client sends after the refusal.
  assert.ok(
    afterRss - before < 64,
    `ingress RSS grew from ${before.toFixed(0)} MiB to ${afterRss.toFixed(0)} MiB while a refused client sent ${((sent === -1 ? written : sent) / 1048576).toFixed(0)} MiB after its 413${sent === -1 ? ' (still accepted after 20 s)' : ''}`,
  );
});

test('a chunked body of 1-byte chunks with long chunk extensions holds memory bounded by MAX_BODY_BYTES, not by the bytes on the wire', async () => {
  const pid = stack.ingress.child.pid as number;
  const before = rssMiB(pid);
  const socket = connect(stack.ingressPort, '127.0.0.1');
  socket.on('error', () => undefined);
  let answer = '';
  socket.on('data', (d: Buffer) => { answer += d.toString('latin1'); });
  await new Promise<void>((resolve) => socket.once('connect', () => resolve()));
  socket.write('POST /chunks HTTP/1.1\r\nhost: a\r\ntransfer-encoding: chunked\r\n\r\n');
  // Each chunk: 1 data byte, an extension of ~4,000 bytes (under the 4,096-byte chunk-line cap).
  const chunk = Buffer.from(`1;x=${'a'.repeat(4000)}\r\nZ\r\n`, 'latin1');
  // 40,000 data bytes in total (under MAX_BODY_BYTES = 64 KiB), ~160 MiB on the wire; the last chunk is not sent yet.
  const count = 40_000;
  const piece = Buffer.concat(Array.from({ length: 16 }, () => chunk));
  const sent = await pump(socket, piece, count * chunk.length);
  await waitFor('the ingress to read what was sent', () => rssMiB(pid) > 0, 1000);
  // Give the ingress time to read the socket dry (condition: RSS stable over two samples).
  let last = 0;
  await waitFor('RSS to settle', async () => {
    const now = rssMiB(pid);
    const stable = Math.abs(now - last) < 1;
    last = now;
    await new Promise((r) => setTimeout(r, 300));
    return stable;
  }, 30_000);
  const during = rssMiB(pid);
  socket.write('0\r\n\r\n');
  await waitFor('an answer', () => answer.length > 0, 30_000).catch(() => undefined);
  socket.destroy();
  assert.equal(answer.slice(0, 15), 'HTTP/1.1 200 OK', `the request is within MAX_BODY_BYTES (${count} data bytes); answer ${JSON.stringify(answer.slice(0, 80))}`);
  // Expected: in-flight memory is bounded by MAX_BODY_BYTES (64 KiB here) plus buffers, not by
  // the ~160 MiB of chunk extensions on the wire.
  assert.ok(
    during - before < 48,
    `ingress RSS grew from ${before.toFixed(0)} MiB to ${during.toFixed(0)} MiB holding one ${count}-byte chunked body (${(sent / 1048576).toFixed(0)} MiB on the wire, MAX_BODY_BYTES=${MAX_BODY})`,
  );
});

test('many slow clients each holding a partial head near MAX_HEADER_BYTES: ingress memory has a bound that a setting names', async () => {
  // No MAX_CONNECTIONS (or total head budget) exists: memory is connections × MAX_HEADER_BYTES
  // (128 KiB by default, 8× node's 16 KiB), for BODY_TIMEOUT_MS each.
  const pid = stack.ingress.child.pid as number;
  const before = rssMiB(pid);
  const n = 1000;
  const sockets: Socket[] = [];
  let opened = 0;
  try {
    for (let i = 0; i < n; i++) {
      const s = connect({ port: stack.ingressPort, host: '127.0.0.1' });
      s.on('error', () => undefined);
      s.once('connect', () => {
        opened++;
        s.write(`GET / HTTP/1.1\r\nhost: a\r\ncookie: ${'x'.repeat(120_000)}`);
      });
      sockets.push(s);
    }
    await waitFor(`${n} connections to open`, () => opened === n, 30_000);
    let last = 0;
    await waitFor('RSS to settle', async () => {
      const now = rssMiB(pid);
      const stable = now - last < 1;
      last = now;
      await new Promise((r) => setTimeout(r, 300));
      return stable;
    }, 30_000);
    const during = rssMiB(pid);
    // Expected: a documented cap (connections, or bytes of partial heads) keeps this under ~64 MiB.
    assert.ok(during - before < 64, `ingress RSS grew from ${before.toFixed(0)} MiB to ${during.toFixed(0)} MiB holding ${n} partial 120 KB heads; no setting bounds it`);
  } finally {
    for (const s of sockets) s.destroy();
  }
});

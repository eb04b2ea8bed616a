import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { RecordingServer, RedisServer, Stack, waitFor, withDeadline } from '../helpers/index.js';

// The ingress's memory is bounded by its settings (docs/RELIABILITY.md, "Memory"), whatever a
// client sends: after a refusal nothing more is read; chunk extensions count toward
// MAX_HEADER_BYTES; partial heads are bounded by MAX_CONNECTIONS × MAX_HEADER_BYTES. These
// tests measure the real ingress process's RSS while clients misbehave.

let redis: RedisServer;
let staging: RecordingServer;
let stack: Stack;
const MAX_BODY = 64 * 1024;
const MAX_CONNECTIONS = 200;

before(async () => {
  redis = await RedisServer.start();
  staging = await RecordingServer.start();
  stack = await Stack.start({
    redis,
    stagingUrl: staging.url,
    workers: 0,
    env: { MAX_BODY_BYTES: String(MAX_BODY), BODY_TIMEOUT_MS: '60000', HEADERS_TIMEOUT_MS: '60000', MAX_CONNECTIONS: String(MAX_CONNECTIONS) },
  });
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
  socket.on('data', (d: Buffer) => {
    answer += d.toString('latin1');
  });
  await new Promise<void>((resolve) => socket.once('connect', () => resolve()));
  // Declared far over MAX_BODY_BYTES: refused at once with 413 and `connection: close`.
  socket.write('POST /upload HTTP/1.1\r\nhost: a\r\ncontent-length: 999999999\r\n\r\n');
  await waitFor('413 answer', () => answer.startsWith('HTTP/1.1 413'), 10_000);
  // The client (a misbehaving or hostile peer) keeps streaming its "body": 256 MiB at most.
  let written = 0;
  socket.on('drain', () => {
    written = socket.bytesWritten;
  });
  const sent = await withDeadline(pump(socket, Buffer.alloc(64 * 1024, 0x41), 256 * 1024 * 1024), 20_000, () => -1);
  const afterRss = rssMiB(pid);
  socket.destroy();
  // Expected: the ingress stops reading (or destroys the socket) after refusing; its memory does
  // not grow with what the client sends after the refusal.
  assert.ok(
    afterRss - before < 64,
    `ingress RSS grew from ${before.toFixed(0)} MiB to ${afterRss.toFixed(0)} MiB while a refused client sent ${((sent === -1 ? written : sent) / 1048576).toFixed(0)} MiB after its 413${sent === -1 ? ' (still accepted after 20 s)' : ''}`,
  );
});

test('chunk extensions count toward MAX_HEADER_BYTES: a body of 1-byte chunks with 4,000-byte extensions is refused 431 and memory stays bounded', async () => {
  const pid = stack.ingress.child.pid as number;
  const before = rssMiB(pid);
  const socket = connect({ port: stack.ingressPort, host: '127.0.0.1', allowHalfOpen: true });
  socket.on('error', () => undefined);
  let answer = '';
  socket.on('data', (d: Buffer) => {
    answer += d.toString('latin1');
  });
  await new Promise<void>((resolve) => socket.once('connect', () => resolve()));
  socket.write('POST /chunks HTTP/1.1\r\nhost: a\r\ntransfer-encoding: chunked\r\n\r\n');
  // Each chunk: 1 data byte, an extension of ~4,000 bytes (under the 4,096-byte chunk-line cap).
  const chunk = Buffer.from(`1;x=${'a'.repeat(4000)}\r\nZ\r\n`, 'latin1');
  // 40,000 data bytes (under MAX_BODY_BYTES = 64 KiB), ~160 MiB of extensions on the wire.
  const count = 40_000;
  const piece = Buffer.concat(Array.from({ length: 16 }, () => chunk));
  const sent = await withDeadline(pump(socket, piece, count * chunk.length), 20_000, () => -1);
  await waitFor('an answer', () => answer.length > 0, 30_000);
  const during = rssMiB(pid);
  socket.destroy();
  // The default MAX_HEADER_BYTES (128 KiB) is passed after ~33 chunks: refused, then nothing more is read.
  assert.match(answer, /^HTTP\/1\.1 431 [^]*x-mirrorplane-drop: headers_too_large\r\n/, `answer ${JSON.stringify(answer.slice(0, 120))}`);
  assert.ok(
    during - before < 48,
    `ingress RSS grew from ${before.toFixed(0)} MiB to ${during.toFixed(0)} MiB (${sent === -1 ? 'the client was still blocked after 20 s' : `${(sent / 1048576).toFixed(0)} MiB sent`})`,
  );
});

test('many slow clients each holding a partial head near MAX_HEADER_BYTES: MAX_CONNECTIONS bounds the connections held, and so memory', async () => {
  // Partial heads in memory are at most MAX_CONNECTIONS × (MAX_HEADER_BYTES + 64 KiB), for
  // HEADERS_TIMEOUT_MS each; connections over the cap are closed on arrival.
  const pid = stack.ingress.child.pid as number;
  const before = rssMiB(pid);
  const n = 1000;
  const sockets: Socket[] = [];
  let opened = 0;
  let closed = 0;
  try {
    for (let i = 0; i < n; i++) {
      const s = connect({ port: stack.ingressPort, host: '127.0.0.1' });
      s.on('error', () => undefined);
      s.once('close', () => {
        closed++;
      });
      s.once('connect', () => {
        opened++;
        s.write(`GET / HTTP/1.1\r\nhost: a\r\ncookie: ${'x'.repeat(120_000)}`);
      });
      sockets.push(s);
    }
    await waitFor(`${n} connections to open`, () => opened === n, 30_000);
    let last = 0;
    await waitFor(
      'RSS to settle',
      async () => {
        const now = rssMiB(pid);
        const stable = now - last < 1;
        last = now;
        await new Promise((r) => setTimeout(r, 300));
        return stable;
      },
      30_000,
    );
    const during = rssMiB(pid);
    // Every connection over MAX_CONNECTIONS was closed by the ingress; the others are held (their heads are not late yet).
    await waitFor('the connections over MAX_CONNECTIONS to be closed', () => closed >= n - MAX_CONNECTIONS, 30_000);
    assert.ok(closed <= n - MAX_CONNECTIONS + 5, `${closed} of ${n} connections closed; at most ${MAX_CONNECTIONS} are held`);
    // 200 × (128 KiB + 64 KiB) = 37.5 MiB at most.
    assert.ok(
      during - before < 64,
      `ingress RSS grew from ${before.toFixed(0)} MiB to ${during.toFixed(0)} MiB holding ${n} partial 120 KB heads with MAX_CONNECTIONS=${MAX_CONNECTIONS}`,
    );
  } finally {
    for (const s of sockets) s.destroy();
  }
});

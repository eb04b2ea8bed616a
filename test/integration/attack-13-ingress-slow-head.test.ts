import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { connect } from 'node:net';
import { RecordingServer, RedisServer, Stack } from '../helpers/index.js';

// Attack on the ingress's own parser (apps/ingress/src/http1-parser.ts): `feed` copies the
// unfinished line with every chunk, and `#line` rescans it from its start, so a head that
// arrives in small pieces costs O(length²). A slowloris client pays one small packet per step;
// the ingress pays a copy of the whole line so far.

let redis: RedisServer;
let staging: RecordingServer;
let stack: Stack;

before(async () => {
  redis = await RedisServer.start();
  staging = await RecordingServer.start();
  stack = await Stack.start({ redis, stagingUrl: staging.url, workers: 0, env: { BODY_TIMEOUT_MS: '120000' } });
});

after(async () => {
  await stack?.close();
  await staging?.close();
  await redis?.close();
});

/** CPU time (user + system) of a process, in ms. */
function cpuMs(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]?.split(' ') ?? [];
  // utime and stime are fields 14 and 15 of /proc/pid/stat (11 and 12 after the command).
  return ((Number(fields[11]) + Number(fields[12])) * 1000) / 100;
}

/** Sends `bytes` in pieces of `size`, one piece per millisecond (each its own segment: noDelay), and resolves with the answer's first line. */
function sendInPieces(port: number, bytes: Buffer, size: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = connect({ port, host: '127.0.0.1', noDelay: true });
    let answer = '';
    socket.on('data', (d: Buffer) => {
      answer += d.toString('latin1');
      if (answer.includes('\r\n')) {
        socket.destroy();
        resolve(answer.slice(0, answer.indexOf('\r\n')));
      }
    });
    socket.on('error', reject);
    let at = 0;
    const step = () => {
      if (socket.destroyed || at >= bytes.length) return;
      const piece = bytes.subarray(at, at + size);
      at += size;
      // Paced like a slowloris client (one segment per millisecond), so the pieces are not coalesced.
      if (socket.write(piece)) setTimeout(step, 1);
      else socket.once('drain', step);
    };
    socket.once('connect', step);
  });
}

test('a 120 KB head sent in small pieces costs the ingress about what it costs in one piece (no quadratic copy)', async () => {
  const pid = stack.ingress.child.pid as number;
  const head = Buffer.from(`GET /big HTTP/1.1\r\nhost: a\r\ncookie: ${'c'.repeat(120_000)}\r\n\r\n`, 'latin1');
  // Baseline: the same head in one write.
  let c0 = cpuMs(pid);
  for (let i = 0; i < 5; i++) assert.equal(await sendInPieces(stack.ingressPort, head, head.length), 'HTTP/1.1 200 OK');
  const whole = (cpuMs(pid) - c0) / 5;
  // The same head, 16 bytes per segment (a slow or hostile client; ~7,500 segments).
  c0 = cpuMs(pid);
  const t0 = performance.now();
  assert.equal(await sendInPieces(stack.ingressPort, head, 16), 'HTTP/1.1 200 OK');
  const pieces = cpuMs(pid) - c0;
  const wall = performance.now() - t0;
  // Expected: per-byte work is linear, so 7,500 segments cost about 7,500 small reads (node's
  // llhttp keeps no copy of a partial line). Generous bound: 400 ms of CPU for the whole head.
  assert.ok(
    pieces < 400,
    `the ingress spent ${pieces.toFixed(0)} ms of CPU on one 120 KB head sent 16 bytes at a time (${wall.toFixed(0)} ms wall), vs ${whole.toFixed(1)} ms for the same head in one write`,
  );
});

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { connect } from 'node:net';
import { RecordingServer, RedisServer, Stack } from '../helpers/index.js';

// The ingress's parser (apps/ingress/src/http1-parser.ts) costs linear time in the head's
// length however it is split: an unfinished line is kept in a growable buffer (no copy of the
// line so far per piece) and scanned once. A slowloris client pays one packet per step, and so
// does the ingress: a head in 16-byte pieces costs what a body in 16-byte pieces costs.

let redis: RedisServer;
let staging: RecordingServer;
let stack: Stack;

before(async () => {
  redis = await RedisServer.start();
  staging = await RecordingServer.start();
  stack = await Stack.start({ redis, stagingUrl: staging.url, workers: 0, env: { BODY_TIMEOUT_MS: '120000', HEADERS_TIMEOUT_MS: '120000' } });
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

test('a 120 KB head sent in 16-byte pieces costs the ingress about what a 120 KB body sent in 16-byte pieces costs (no quadratic copy)', async () => {
  const pid = stack.ingress.child.pid as number;
  const n = 120_000;
  const head = Buffer.from(`GET /big HTTP/1.1\r\nhost: a\r\ncookie: ${'c'.repeat(n)}\r\n\r\n`, 'latin1');
  // The same number of segments, paced the same, whose parsing is linear by construction (body bytes are taken as they come).
  const bodyHead = 'POST /body HTTP/1.1\r\nhost: a\r\ncontent-length: ' + String(head.length - 60) + '\r\n\r\n';
  const bodyRequest = Buffer.concat([Buffer.from(bodyHead, 'latin1'), Buffer.alloc(head.length - 60, 0x62)]);
  // Warm up both paths.
  assert.equal(await sendInPieces(stack.ingressPort, head, head.length), 'HTTP/1.1 200 OK');
  assert.equal(await sendInPieces(stack.ingressPort, bodyRequest, bodyRequest.length), 'HTTP/1.1 200 OK');
  let c0 = cpuMs(pid);
  assert.equal(await sendInPieces(stack.ingressPort, bodyRequest, 16), 'HTTP/1.1 200 OK');
  const bodyCpu = cpuMs(pid) - c0;
  c0 = cpuMs(pid);
  const t0 = performance.now();
  assert.equal(await sendInPieces(stack.ingressPort, head, 16), 'HTTP/1.1 200 OK');
  const headCpu = cpuMs(pid) - c0;
  const wall = performance.now() - t0;
  // Linear: about equal (per-segment overhead dominates). The old quadratic parser spent ~400 ms
  // more here (copying the line so far with each of ~7,500 pieces: ~450 MB of copies).
  assert.ok(
    headCpu < bodyCpu * 1.5 + 150,
    `the ingress spent ${headCpu.toFixed(0)} ms of CPU on one 120 KB head sent 16 bytes at a time (${wall.toFixed(0)} ms wall), vs ${bodyCpu.toFixed(0)} ms on a body of the same length sent the same way`,
  );
});

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { connect, type Socket } from 'node:net';
import { RedisServer, metric, startIngress, waitFor } from '../helpers/index.js';

/**
 * Issue #17: append deadlines in the ingress's ExpiryQueue (an unref'd timer). SIGTERM/SIGINT,
 * to the process or to its whole process group, while appends wait on a hung Redis: every
 * request admitted before the signal is answered (the append's 503 redis_timeout after about
 * APPEND_TIMEOUT_MS, or a 200), the process exits 0, and it does not hang.
 */

interface Outcome {
  status: number | null;
  head: string;
  closedWithoutAnswer: boolean;
}

function pending(port: number, id: string): { socket: Socket; outcome: Promise<Outcome> } {
  const socket = connect(port, '127.0.0.1');
  const outcome = new Promise<Outcome>((resolve) => {
    let data = Buffer.alloc(0);
    socket.on('data', (c: Buffer) => {
      data = Buffer.concat([data, c]);
    });
    socket.on('error', () => undefined);
    socket.on('close', () => {
      const head = data.toString('latin1');
      const m = /^HTTP\/1\.1 (\d{3})/.exec(head);
      resolve({ status: m ? Number(m[1]) : null, head, closedWithoutAnswer: m === null });
    });
  });
  socket.write(`POST /pending/${id} HTTP/1.1\r\nHost: x\r\nX-Request-ID: ${id}\r\nContent-Length: 2\r\n\r\nhi`);
  return { socket, outcome };
}

async function scenario(t: { diagnostic(m: string): void }, signal: NodeJS.Signals, group: boolean, env: Record<string, string> = {}) {
  const appendTimeout = 2000;
  const redis = await RedisServer.start();
  const { ingress, port, adminPort } = await startIngress(redis.url, { APPEND_TIMEOUT_MS: String(appendTimeout), ...env }, { detached: group });
  const output = () => `${ingress.stdout.slice(-1500)}${ingress.stderr.slice(-500)}`;
  const sockets: Socket[] = [];
  try {
    redis.signal('SIGSTOP');
    const n = 6;
    const requests = Array.from({ length: n }, (_, i) => pending(port, `p${i}`));
    for (const r of requests) sockets.push(r.socket);
    // Admitted (in flight) before the signal.
    await waitFor('the requests in flight', async () => (await metric(adminPort, 'mirrorplane_ingress_in_flight')) === n);
    const signalledAt = Date.now();
    if (group) process.kill(-(ingress.child.pid as number), signal);
    else ingress.child.kill(signal);
    const outcomes = await Promise.all(requests.map((r) => r.outcome));
    // The bound's timer is cleared once the race is decided (left running, it held the test file open 20 s).
    let bound: NodeJS.Timeout | undefined;
    const exit = await Promise.race([ingress.exited, new Promise<'hung'>((r) => (bound = setTimeout(() => r('hung'), appendTimeout + 20_000)))]).finally(() =>
      clearTimeout(bound),
    );
    t.diagnostic(`exit ${JSON.stringify(exit)} after ${Date.now() - signalledAt} ms; answers ${outcomes.map((o) => o.status).join(',')}`);
    assert.notEqual(exit, 'hung', `the ingress did not exit within ${appendTimeout + 20_000} ms of ${signal}\n${output()}`);
    assert.equal(exit, 0, `exit code (null: killed by a signal)\n${output()}`);
    for (const o of outcomes) {
      assert.equal(o.closedWithoutAnswer, false, `a request admitted before ${signal} got no answer\n${output()}`);
      assert.equal(o.status, 503);
      assert.match(o.head, /x-mirrorplane-drop: redis_timeout/i);
    }
    const stopped = ingress.logs().find((l) => l.msg === 'ingress stopped');
    assert.equal(stopped?.unfinished, 0, 'nothing unfinished at the stop');
  } finally {
    redis.signal('SIGCONT');
    for (const s of sockets) s.destroy();
    await ingress.stop('SIGKILL');
    await redis.close();
  }
}

test('SIGTERM to the ingress while appends wait on a hung Redis: each is answered 503 redis_timeout, exit 0', async (t) => {
  await scenario(t, 'SIGTERM', false);
});

test('SIGINT to the ingress process group while appends wait on a hung Redis: each is answered 503 redis_timeout, exit 0', async (t) => {
  await scenario(t, 'SIGINT', true);
});

test('SIGTERM to the process group with SHUTDOWN_TIMEOUT_MS above APPEND_TIMEOUT_MS by little: still answered', async (t) => {
  await scenario(t, 'SIGTERM', true, { SHUTDOWN_TIMEOUT_MS: '2500' });
});

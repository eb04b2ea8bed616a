import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { connect, type Socket } from 'node:net';
import { randomBytes } from 'node:crypto';
import { CLI, RedisServer, freePort, waitFor } from '../helpers/index.js';

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
  const port = await freePort();
  const adminPort = await freePort();
  let stdout = '';
  const child = spawn(process.execPath, [CLI, 'ingress'], {
    env: {
      PATH: process.env.PATH ?? '',
      LOG_LEVEL: 'info',
      REDIS_URL: redis.url,
      MIRRORPLANE_PREFIX: `t${randomBytes(4).toString('hex')}`,
      INGRESS_PORT: String(port),
      INGRESS_HOST: '127.0.0.1',
      ADMIN_PORT: String(adminPort),
      APPEND_TIMEOUT_MS: String(appendTimeout),
      ...env,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: group,
  });
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr.on('data', (d: Buffer) => (stdout += d.toString()));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once('exit', (code, sig) => resolve({ code, signal: sig })),
  );
  const sockets: Socket[] = [];
  try {
    await waitFor('ready', async () => (await fetch(`http://127.0.0.1:${adminPort}/readyz`).catch(() => null))?.status === 200, 60_000);
    redis.signal('SIGSTOP');
    const n = 6;
    const requests = Array.from({ length: n }, (_, i) => pending(port, `p${i}`));
    for (const r of requests) sockets.push(r.socket);
    // Admitted (in flight) before the signal.
    await waitFor('the requests in flight', async () => {
      const text = await (await fetch(`http://127.0.0.1:${adminPort}/metrics`)).text();
      return Number(/^mirrorplane_ingress_in_flight (\d+)/m.exec(text)?.[1] ?? 0) === n;
    });
    const signalledAt = Date.now();
    if (group) process.kill(-(child.pid as number), signal);
    else child.kill(signal);
    const outcomes = await Promise.all(requests.map((r) => r.outcome));
    const exit = await Promise.race([exited, new Promise<null>((r) => setTimeout(() => r(null), appendTimeout + 20_000))]);
    t.diagnostic(`exit ${JSON.stringify(exit)} after ${Date.now() - signalledAt} ms; answers ${outcomes.map((o) => o.status).join(',')}`);
    assert.notEqual(exit, null, `the ingress did not exit within ${appendTimeout + 20_000} ms of ${signal}\n${stdout.slice(-2000)}`);
    assert.deepEqual(exit, { code: 0, signal: null });
    for (const o of outcomes) {
      assert.equal(o.closedWithoutAnswer, false, `a request admitted before ${signal} got no answer\n${stdout.slice(-1500)}`);
      assert.equal(o.status, 503);
      assert.match(o.head, /x-mirrorplane-drop: redis_timeout/i);
    }
    const stopped = stdout
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as { msg?: string; unfinished?: number })
      .find((l) => l.msg === 'ingress stopped');
    assert.equal(stopped?.unfinished, 0, 'nothing unfinished at the stop');
  } finally {
    redis.signal('SIGCONT');
    for (const s of sockets) s.destroy();
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    await exited;
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

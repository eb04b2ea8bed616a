import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createServer, type Socket } from 'node:net';
import { listenHttp } from '@mirrorplane/runtime';
import { CLI, freePort, waitFor, withDeadline } from '../helpers/index.js';

// One layer of pre-start signal handling (apps/cli/src/early-signals.ts): a role stopped
// while it still checks Redis has nothing to finish and exits 0 ("stopped before starting"),
// whether the signal reaches the process alone or its whole process group (what systemd and a
// terminal's Ctrl-C do). A short command owns its signals from its start: it dies by the signal.
// The Redis here accepts connections and never answers, so the role is provably in its
// preflight when the signal is sent: the test waits for the connection, no sleep.

/** A TCP server that accepts and stays silent; counts the connections. */
async function silentRedis(): Promise<{ url: string; connections: () => number; close: () => Promise<void> }> {
  const sockets = new Set<Socket>();
  let accepted = 0;
  const server = createServer((socket) => {
    accepted += 1;
    sockets.add(socket);
    socket.on('error', () => undefined);
    socket.on('close', () => sockets.delete(socket));
  });
  const port = await listenHttp(server, 0, '127.0.0.1');
  return {
    url: `redis://127.0.0.1:${port}`,
    connections: () => accepted,
    close: () =>
      new Promise((resolve) => {
        for (const socket of sockets) socket.destroy();
        server.close(() => resolve());
      }),
  };
}

interface Ended {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** Runs the CLI in its own process group; sends `signal` (to the process or its group) once it connected to `redis`. */
async function signalWhileConnecting(args: string[], signal: NodeJS.Signals, toGroup: boolean): Promise<Ended> {
  const redis = await silentRedis();
  const child = spawn(process.execPath, [CLI, ...args], {
    env: {
      PATH: process.env.PATH ?? '',
      REDIS_URL: redis.url,
      INGRESS_HOST: '127.0.0.1',
      INGRESS_PORT: String(await freePort()),
      ADMIN_PORT: '0',
      STAGING_URL: 'http://127.0.0.1:9',
      LOG_LEVEL: 'info',
    },
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: true,
  });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const ended = new Promise<Ended>((resolve) => child.once('exit', (code, sig) => resolve({ code, signal: sig, stdout, stderr })));
  try {
    await waitFor(`${args.join(' ')} connects to Redis\n${stderr}`, () => redis.connections() > 0, 60_000);
    if (toGroup) process.kill(-child.pid!, signal);
    else child.kill(signal);
    return await withDeadline(ended, 30_000, () => {
      throw new Error(`${args[0]} still running 30 s after ${signal}`);
    });
  } finally {
    try {
      process.kill(-child.pid!, 'SIGKILL');
    } catch {
      /* already gone */
    }
    await redis.close();
  }
}

// Every role meets both signals and both deliveries (a pairwise cover of role × signal ×
// delivery: the handler is the same code for both signals, so the full product of 12 CLI
// starts would prove no more than these 6).
const CASES: { args: string[]; signal: NodeJS.Signals; toGroup: boolean }[] = [
  { args: ['ingress'], signal: 'SIGTERM', toGroup: false },
  { args: ['ingress'], signal: 'SIGINT', toGroup: true },
  { args: ['ingress', '--processes', '2'], signal: 'SIGINT', toGroup: false },
  { args: ['ingress', '--processes', '2'], signal: 'SIGTERM', toGroup: true },
  { args: ['worker'], signal: 'SIGTERM', toGroup: true },
  { args: ['worker'], signal: 'SIGINT', toGroup: false },
];

for (const { args, signal, toGroup } of CASES) {
  test(`${signal} to ${toGroup ? 'the process group of ' : ''}"${args.join(' ')}" during its Redis check: exit 0, logged once`, async () => {
    const ended = await signalWhileConnecting(args, signal, toGroup);
    assert.equal(ended.code, 0, `exit code\n${ended.stdout}\n${ended.stderr}`);
    const stops = ended.stdout.split('\n').filter((line) => line.includes('"msg":"stopped before starting"'));
    assert.equal(stops.length, 1, ended.stdout);
    assert.match(stops[0]!, new RegExp(`"signal":"${signal}"`));
    assert.doesNotMatch(ended.stdout, /shutting down|second signal/);
  });
}

test('a short command owns its signals from its start: SIGTERM during its Redis connection ends it by the signal', async () => {
  const ended = await signalWhileConnecting(['failed', 'list'], 'SIGTERM', false);
  assert.equal(ended.signal, 'SIGTERM', `${ended.code} ${ended.stdout}\n${ended.stderr}`);
  assert.doesNotMatch(ended.stdout, /stopped before starting/);
});

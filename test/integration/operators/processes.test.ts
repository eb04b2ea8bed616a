import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createServer, type Server } from 'node:net';
import { randomBytes } from 'node:crypto';
import { loadConfig } from '@mirrorplane/core';
import { CLI, MirrorplaneProcess, RedisServer, freePort, freePorts, waitFor, useStack } from '../../helpers/index.js';
import { runTimed } from './helpers.js';

// Ports and signals of the long-running roles.

let redis: RedisServer;
useStack({}, (s) => {
  redis = s.redis;
});

async function occupy(): Promise<{ server: Server; port: number }> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { server, port: (server.address() as { port: number }).port };
}

/** A port in use whose predecessor was free a moment ago (for "the second process's port is taken"). */
async function occupyAfterFree(): Promise<{ server: Server; port: number }> {
  for (let i = 0; ; i++) {
    const probe = await occupy();
    const port = probe.port + 1;
    const server = createServer();
    const ok = await new Promise<boolean>((resolve) => {
      server.once('error', () => resolve(false));
      server.listen(port, '127.0.0.1', () => resolve(true));
    });
    await new Promise<void>((resolve) => probe.server.close(() => resolve()));
    if (ok) return { server, port };
    if (i > 50) throw new Error('no pair of free ports found');
  }
}

test("an ingress of several processes keeps its admin ports clear of the worker's and the dashboard's defaults", () => {
  const admin = (env: Record<string, string>, role: 'ingress' | 'worker' = 'ingress') =>
    loadConfig({ role, env: { STAGING_URL: 'http://s', ...env } }).adminPort;
  assert.equal(admin({}), 9090);
  assert.equal(admin({}, 'worker'), 9091);
  assert.equal(admin({ INGRESS_PROCESSES: '2' }), 9100, 'processes at 9100, 9101: not 9091');
  assert.equal(admin({ INGRESS_PROCESSES: '4', ADMIN_PORT: '7000' }), 7000, 'an explicit ADMIN_PORT is kept');
});

test('a port in use names its flag and variable, exits 2, no stack trace, for every role', async () => {
  const taken = await occupy();
  try {
    const env = {
      REDIS_URL: redis.url,
      MIRRORPLANE_PREFIX: `p${randomBytes(3).toString('hex')}`,
      STAGING_URL: 'http://127.0.0.1:9',
      LOG_LEVEL: 'silent',
      INGRESS_HOST: '127.0.0.1',
    };
    const cases: { args: string[]; env: Record<string, string>; names: RegExp }[] = [
      { args: ['ingress'], env: { ADMIN_PORT: String(taken.port), INGRESS_PORT: '0' }, names: /\(ADMIN_PORT \/ --admin-port\): address already in use/ },
      { args: ['ingress', '--admin-port', String(taken.port)], env: { INGRESS_PORT: '0' }, names: /\(ADMIN_PORT \/ --admin-port\)/ },
      { args: ['ingress'], env: { ADMIN_PORT: '0', INGRESS_PORT: String(taken.port) }, names: /\(INGRESS_PORT \/ --port\): address already in use/ },
      { args: ['worker'], env: { ADMIN_PORT: String(taken.port) }, names: /\(ADMIN_PORT \/ --admin-port\): address already in use/ },
      { args: ['dashboard', '--port', String(taken.port)], env: {}, names: /\(dashboard --port\): address already in use/ },
    ];
    for (const c of cases) {
      const r = await runTimed(c.args, { ...env, ...c.env }, 60_000);
      const what = `${c.args.join(' ')}: ${r.stderr}`;
      assert.equal(r.killed, false, `kept running: ${what}`);
      assert.equal(r.code, 2, what);
      assert.match(r.stderr, new RegExp(`cannot listen on 127\\.0\\.0\\.1:${taken.port}`), what);
      assert.match(r.stderr, c.names, what);
      assert.doesNotMatch(r.stderr, /\n\s+at /, `stack trace: ${what}`);
      assert.doesNotMatch(r.stdout, /starting a replacement/, `crash loop: ${what}`);
    }
    // The second process's admin port is taken: the cluster stops instead of crash-looping.
    const second = await occupyAfterFree();
    try {
      const r = await runTimed(['ingress', '--processes', '2'], { ...env, ADMIN_PORT: String(second.port - 1), INGRESS_PORT: '0', LOG_LEVEL: 'info' }, 60_000);
      const what = `ingress --processes 2: ${r.stderr}`;
      assert.equal(r.killed, false, `kept running: ${what}`);
      assert.equal(r.code, 2, what);
      assert.match(r.stderr, new RegExp(`cannot listen on 127\\.0\\.0\\.1:${second.port} \\(ADMIN_PORT / --admin-port\\)`), what);
      assert.doesNotMatch(r.stderr, /\n\s+at /, `stack trace: ${what}`);
      assert.doesNotMatch(r.stdout, /starting a replacement/, `crash loop: ${what}`);
    } finally {
      second.server.close();
    }
  } finally {
    taken.server.close();
  }
});

test('SIGTERM to the whole process group of ingress --processes 2 (what systemd does) exits 0 cleanly', async () => {
  // The second process takes ADMIN_PORT + 1: both must be free.
  const [adminPort] = (await freePorts(2)) as [number];
  const child = spawn(process.execPath, [CLI, 'ingress', '--processes', '2'], {
    env: {
      PATH: process.env.PATH ?? '',
      REDIS_URL: redis.url,
      MIRRORPLANE_PREFIX: `g${randomBytes(3).toString('hex')}`,
      INGRESS_HOST: '127.0.0.1',
      INGRESS_PORT: String(await freePort()),
      ADMIN_PORT: String(adminPort),
      LOG_LEVEL: 'info',
    },
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: true,
  });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => {
    stdout += d.toString();
  });
  child.stderr.on('data', (d: Buffer) => {
    stderr += d.toString();
  });
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  try {
    await waitFor('two ingress processes listening', () => (stdout.match(/"msg":"ingress listening"/g)?.length ?? 0) === 2, 60_000).catch((error: Error) => {
      throw new Error(`${error.message}\n--- stdout:\n${stdout.slice(-2000)}\n--- stderr:\n${stderr.slice(-2000)}`);
    });
    process.kill(-child.pid!, 'SIGTERM');
    assert.equal(await exited, 0, `${stdout}\n${stderr}`);
    assert.equal(stdout.match(/"msg":"ingress stopped"/g)?.length, 2);
    assert.doesNotMatch(stdout, /second signal/);
    assert.match(stdout, /"failed":false,"msg":"ingress processes stopped"/);
  } finally {
    try {
      process.kill(-child.pid!, 'SIGKILL');
    } catch {
      /* already gone */
    }
  }
});

test('MirrorplaneProcess helper still stops a single ingress with SIGTERM', async () => {
  const ingress = new MirrorplaneProcess(['ingress'], { REDIS_URL: redis.url, INGRESS_PORT: '0', ADMIN_PORT: '0', INGRESS_HOST: '127.0.0.1' });
  await ingress.waitForLog('ingress listening');
  assert.equal(await ingress.stop('SIGTERM'), 0);
});

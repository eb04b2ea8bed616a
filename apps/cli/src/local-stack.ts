import { commandHint } from './format.js';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Ingress } from '@mirrorplane/ingress';
import { ReplayWorker } from '@mirrorplane/worker';
import { SampleBackend } from '@mirrorplane/sample-backend';
import { MirrorplaneError } from '@mirrorplane/core';
import { buildPipeline } from '@mirrorplane/runtime';
import { configure, createLogger, runUntilSignal, type Flags } from './process.js';

function freePort(preferred: number): Promise<number> {
  return new Promise((resolve) => {
    const server = createServer();
    server.once('error', () => {
      const any = createServer();
      any.listen(0, '127.0.0.1', () => {
        const port = (any.address() as { port: number }).port;
        any.close(() => resolve(port));
      });
    });
    server.listen(preferred, '127.0.0.1', () => server.close(() => resolve(preferred)));
  });
}

async function waitForRedis(port: number, child: ChildProcess): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) throw new MirrorplaneError('MP_ERR_REDIS_UNAVAILABLE', `redis-server exited with code ${child.exitCode}`);
    const r = spawnSync('redis-cli', ['-p', String(port), 'ping'], { encoding: 'utf8' });
    if (r.stdout?.trim() === 'PONG') return;
    await new Promise((res) => setTimeout(res, 100));
  }
  throw new MirrorplaneError('MP_ERR_REDIS_UNAVAILABLE', `redis-server on port ${port} did not answer within 10 s`);
}

/**
 * `mirrorplane start`: everything on one machine for a first look. Starts a private
 * redis-server when REDIS_URL is unset, a sample staging backend when STAGING_URL is unset,
 * then the ingress and one worker in this process.
 */
export async function startLocalStack(flags: Flags, io: { out: (s: string) => void }): Promise<void> {
  const env = { ...process.env };
  let redis: ChildProcess | null = null;
  let redisDir: string | null = null;
  if (!env.REDIS_URL && !flags.redisUrl) {
    const found = spawnSync('redis-server', ['--version'], { encoding: 'utf8' });
    if (found.error) {
      throw new MirrorplaneError(
        'MP_ERR_REDIS_UNAVAILABLE',
        'REDIS_URL is unset and redis-server is not installed. Install Redis (Debian/Ubuntu: apt-get install -y redis-server; macOS: brew install redis) or point REDIS_URL at one.',
      );
    }
    const port = await freePort(6379);
    redisDir = mkdtempSync(join(tmpdir(), 'mirrorplane-redis-'));
    redis = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--dir', redisDir, '--save', '', '--appendonly', 'no'], {
      stdio: 'ignore',
      // Its own process group: Ctrl-C must not stop Redis before the worker has acknowledged its work.
      detached: true,
    });
    const child = redis;
    process.on('exit', () => child.kill('SIGTERM'));
    await waitForRedis(port, redis);
    env.REDIS_URL = `redis://127.0.0.1:${port}`;
    io.out(`started redis-server on 127.0.0.1:${port} (data is not kept)\n`);
  }
  let staging: SampleBackend | null = null;
  // A config file may name the default origin itself; then there is no sample staging to start.
  if (!env.STAGING_URL && !flags.stagingUrl && !configure('cli', flags, env).origins.default) {
    staging = new SampleBackend({
      name: 'staging',
      idPrefix: 'stg_',
      onRequest: (r) => io.out(`staging received ${r.method} ${r.url} (${r.body.length} bytes) -> ${r.status}\n`),
    });
    const port = await staging.listen(await freePort(8081));
    env.STAGING_URL = `http://127.0.0.1:${port}`;
    io.out(`started a sample staging backend on 127.0.0.1:${port}\n`);
  }
  const ingressConfig = configure('ingress', flags, env);
  const workerConfig = configure('worker', { ...flags, adminPort: String(ingressConfig.adminPort === 0 ? 0 : ingressConfig.adminPort + 1) }, env);
  const logger = createLogger(ingressConfig, 'start');
  const ingress = new Ingress(ingressConfig, logger.child({ component: 'ingress' }));
  const built = await buildPipeline(workerConfig, logger.child({ component: 'worker' }));
  const worker = new ReplayWorker(workerConfig, logger.child({ component: 'worker' }), { pipeline: built.pipeline });
  for (const metric of built.metrics) worker.metrics.registerMetric(metric);
  runUntilSignal(logger, async () => {
    await ingress.close();
    await worker.close();
    await staging?.close();
    if (redis) {
      redis.kill('SIGTERM');
      await new Promise((r) => (redis.exitCode !== null ? r(null) : redis.once('exit', r)));
    }
    if (redisDir) rmSync(redisDir, { recursive: true, force: true });
  });
  const { port } = await ingress.listen();
  await worker.start();
  io.out(
    `\nMirrorplane is running: ingress on port ${port}, replaying to ${workerConfig.stagingUrl}\n` +
      `  try:    curl -X POST localhost:${port}/orders -H 'content-type: application/json' -d '{"item":"book"}'\n` +
      `  status: ${commandHint('status', workerConfig)}\n` +
      `  stop:   Ctrl-C\n\n`,
  );
}

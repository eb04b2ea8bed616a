import { commandHint } from './format.js';
import { Ingress } from '@mirrorplane/ingress';
import { ReplayWorker } from '@mirrorplane/worker';
import { SampleBackend } from '@mirrorplane/sample-backend';
import { PrerequisiteError } from '@mirrorplane/core';
import { buildPipeline, freePort, LocalRedisServer, redisServerInstalled } from '@mirrorplane/runtime';
import { configure, createLogger, runUntilSignal, type Flags } from './process.js';
import { preflight } from './preflight.js';

/**
 * `mirrorplane start`: everything on one machine for a first look. Starts a private
 * redis-server when REDIS_URL is unset, a sample staging backend when STAGING_URL is unset,
 * then the ingress and one worker in this process.
 */
export async function startLocalStack(flags: Flags, io: { out: (s: string) => void }, processEnv: Readonly<NodeJS.ProcessEnv>): Promise<void> {
  const env = { ...processEnv };
  let redis: LocalRedisServer | null = null;
  if (!env.REDIS_URL && !flags.redisUrl) {
    if (!redisServerInstalled()) {
      throw new PrerequisiteError(
        'REDIS_URL is unset and redis-server is not installed. Install Redis (Debian/Ubuntu: apt-get install -y redis-server; macOS: brew install redis) or point REDIS_URL at one.',
      );
    }
    // Its own process group: Ctrl-C must not stop Redis before the worker has acknowledged its work.
    redis = await LocalRedisServer.start({ preferredPort: 6379, ownProcessGroup: true });
    const child = redis.child;
    process.on('exit', () => child?.kill('SIGTERM'));
    env.REDIS_URL = redis.url;
    io.out(`started redis-server on 127.0.0.1:${redis.port} (data is not kept)\n`);
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
      await redis.stop();
      await redis.close();
    }
  });
  // Like the ingress and worker commands: check the database and record the deployment, so
  // `status` finds it.
  await preflight(ingressConfig, logger);
  const { port } = await ingress.listen();
  await worker.start();
  io.out(
    `\nMirrorplane is running: ingress on port ${port}, replaying to ${workerConfig.stagingUrl}\n` +
      `  try:    curl -X POST localhost:${port}/orders -H 'content-type: application/json' -d '{"item":"book"}'\n` +
      `  status: ${commandHint('status', workerConfig)}\n` +
      `          (inside this checkout, before mirrorplane is on the PATH: npx --no-install mirrorplane status …)\n` +
      `  stop:   Ctrl-C\n\n`,
  );
}

// The whole loop on one machine: redis-server, a fast staging server, the real ingress and
// worker (the CLI), as end-to-end and soak use it.
import { randomBytes } from 'node:crypto';
import { keysFor } from '@mirrorplane/core';
import { freePort, sleep, startCli, startRedis, startServer } from './processes.mjs';
import { runWrk } from './wrk.mjs';

export async function startStack({ concurrency = 64, admin = false, ingressProcesses = 1, workers = 1 } = {}) {
  const redis = await startRedis();
  const staging = await startServer('staging');
  const prefix = `bench-${randomBytes(3).toString('hex')}`;
  const keys = keysFor(prefix);
  const port = await freePort();
  const ingressAdmin = admin ? await freePort() : 0;
  const common = { REDIS_URL: redis.url, MIRRORPLANE_PREFIX: prefix, LOG_LEVEL: 'info' };
  const ingress = await startCli('ingress', {
    ...common,
    INGRESS_HOST: '127.0.0.1',
    INGRESS_PORT: String(port),
    ADMIN_PORT: String(ingressAdmin),
    INGRESS_PROCESSES: String(ingressProcesses),
  });
  const workerProcs = [];
  const workerAdmins = [];
  for (let i = 0; i < workers; i += 1) {
    const adminPort = admin ? await freePort() : 0;
    workerAdmins.push(adminPort);
    workerProcs.push(await startCli('worker', { ...common, STAGING_URL: staging.url, WORKER_CONCURRENCY: String(concurrency), ADMIN_PORT: String(adminPort) }));
  }
  const client = redis.client();
  return {
    redis,
    staging,
    ingress,
    workers: workerProcs,
    client,
    keys,
    prefix,
    url: `http://127.0.0.1:${port}`,
    ingressAdmin,
    workerAdmins,
    /** Waits until every accepted entry was replayed and acknowledged. */
    async drained(timeoutMs = 120_000) {
      const deadline = Date.now() + timeoutMs;
      while (Date.now() < deadline) {
        const [length, pending] = await Promise.all([client.xlen(keys.stream), client.xpending(keys.stream, keys.group).catch(() => [0])]);
        if (length === 0 && Number(pending[0]) === 0) return true;
        await sleep(20);
      }
      return false;
    },
    async stop() {
      await client.quit().catch(() => undefined);
      for (const w of workerProcs) await w.stop();
      await ingress.stop();
      await staging.stop();
      await redis.stop();
    },
  };
}

/**
 * The loop's peak: wrk -c64 against the ingress while the worker replays what it accepts,
 * for `seconds`. The half of it is the "half of peak load" of the end-to-end and soak runs.
 */
export async function measurePeak(stack, seconds = 5) {
  const pids = [stack.ingress.pid, ...stack.workers.map((w) => w.pid), stack.redis.pid];
  const result = await runWrk({ url: stack.url, connections: 64, seconds, pids });
  await stack.drained();
  return result;
}

import type { Queue } from 'bullmq';
import type { Redis } from 'ioredis';
import { keysFor, type Config } from '@mirrorplane/core';
import { checkDeployment, closeRedis, createLogger, createRetryQueue, openRedis, type DeploymentCheck, type RetryJobData } from '@mirrorplane/runtime';
import { contextLine } from './format.js';
import { VERSION } from './version.js';

/** Whether the last connection opened for a config found a deployment at its prefix. */
const deploymentFound = new WeakMap<Config, boolean>();

/** Said under the context line when no ingress or worker has ever started at the prefix. */
export const NO_DEPLOYMENT_NOTE =
  '(no deployment recorded at this prefix: no ingress or worker has started here; check --prefix and the database in the URL)\n';

/**
 * The line every human output of an operator command opens with (Redis URL, masked, and
 * prefix), followed by NO_DEPLOYMENT_NOTE when the command's connection (withOperatorConnection)
 * found no deployment there: an empty answer from the wrong prefix must not read as "all clear".
 */
export function operatorContext(config: Config): string {
  return deploymentFound.get(config) === false ? contextLine(config) + NO_DEPLOYMENT_NOTE : contextLine(config);
}

/** What an operator command works with: one connection for commands, the retry queue on another. */
export interface OperatorConnection {
  redis: Redis;
  queue: Queue<RetryJobData>;
  deployment: DeploymentCheck;
}

/**
 * Opens the connections of an operator command, bounded by REDIS_CONNECT_TIMEOUT_MS (each
 * command too), checks the database exists and the deployment's stored settings agree with
 * ours, runs `fn`, and closes everything. Writes nothing by itself: the queue is opened with
 * `skipMetasUpdate` (BullMQ otherwise writes its meta key on open), and the deployment is
 * only read. `purpose: 'watch'` reconnects for ever, for live views. When `signal` has
 * aborted by the end, the connections are dropped at once instead of closed politely.
 */
export async function withOperatorConnection<T>(
  config: Config,
  fn: (ctx: OperatorConnection) => Promise<T>,
  purpose: 'cli' | 'watch' = 'cli',
  options: { signal?: AbortSignal } = {},
): Promise<T> {
  const logger = createLogger({ logLevel: 'silent' }, 'cli');
  const redis = await openRedis(config, purpose, logger);
  let bull: Redis | null = null;
  let queue: Queue<RetryJobData> | null = null;
  try {
    bull = await openRedis(config, purpose, logger);
    const keys = keysFor(config.prefix);
    queue = createRetryQueue(keys, bull, { skipMetasUpdate: true });
    queue.on('error', () => undefined);
    const deployment = await checkDeployment(redis, config, 'read', VERSION);
    deploymentFound.set(config, deployment.exists);
    return await fn({ redis, queue, deployment });
  } finally {
    if (options.signal?.aborted) {
      // Interrupted (Ctrl-C): drop the connections now; a polite QUIT could wait on a Redis that hangs.
      void queue?.close().catch(() => undefined);
      redis.disconnect();
      bull?.disconnect();
    } else {
      await queue?.close().catch(() => undefined);
      await closeRedis(redis);
      if (bull) await closeRedis(bull);
    }
  }
}

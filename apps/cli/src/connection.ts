import type { Queue } from 'bullmq';
import type { Redis } from 'ioredis';
import { keysFor, type Config } from '@mirrorplane/core';
import { checkDeployment, closeRedis, createLogger, createRetryQueue, openRedis, type DeploymentCheck, type RetryJobData } from '@mirrorplane/runtime';
import { VERSION } from './version.js';

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

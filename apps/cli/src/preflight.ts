import type { Config } from '@mirrorplane/core';
import { checkDeployment, closeRedis, openRedis, type Logger } from '@mirrorplane/runtime';
import { VERSION } from './version.js';

/**
 * What a role (ingress, worker) checks before it starts: Redis answers within
 * REDIS_CONNECT_TIMEOUT_MS, the database in REDIS_URL exists, and the deployment's stored
 * settings (partitions, partition key) agree with this process's; the first process of a
 * deployment stores them. Throws `RedisUnavailableError`, `RedisDatabaseError` or
 * `DeploymentMismatchError`, which end the process with a message before anything runs.
 */
export async function preflight(config: Config, logger: Logger): Promise<void> {
  const redis = await openRedis(config, 'cli', logger);
  try {
    const { stored } = await checkDeployment(redis, config, 'claim', VERSION);
    logger.info({ prefix: config.prefix, deployment: stored }, 'deployment checked');
  } finally {
    await closeRedis(redis);
  }
}

import { RedisUnavailableError, errorMessage, type Config } from '@mirrorplane/core';
import { checkDeployment, closeRedis, createLogger, isOutOfMemory, maskRedisUrl, openRedis, type Logger } from '@mirrorplane/runtime';
import { describeFailure } from './failure.js';
import { VERSION } from './version.js';

/** How often a role that started without Redis tries the checks again. */
const RECHECK_MS = 1000;

async function check(config: Config, logger: Logger): Promise<void> {
  // Its own failures are reported once by preflight, not per reconnect.
  const redis = await openRedis(config, 'cli', createLogger({ logLevel: 'silent' }, 'preflight'));
  try {
    const { stored } = await checkDeployment(redis, config, 'claim', VERSION);
    logger.info({ prefix: config.prefix, deployment: stored }, 'deployment checked');
  } finally {
    await closeRedis(redis);
  }
}

/**
 * What a role (ingress, worker) checks before it starts: the database in REDIS_URL exists,
 * and the deployment's stored settings (partitions, partition key) agree with this
 * process's; the first process of a deployment stores them. A wrong database or a mismatch
 * throws (`RedisDatabaseError`, `DeploymentMismatchError`) before anything runs.
 *
 * Redis unreachable at start is not a reason to stay down (the ingress answers 503 until it
 * is back, the worker waits): the role starts, and the checks run as soon as Redis answers.
 * Nor is a full Redis (maxmemory, noeviction): the record is read first and only missing fields
 * are written, so a recorded deployment starts; a new one whose record Redis refuses (OOM) logs
 * "Redis is full: deployment not recorded yet, will retry" and is recorded once memory is freed;
 * a misconfiguration found then ends the process with exit code 2.
 */
export async function preflight(config: Config, logger: Logger): Promise<void> {
  try {
    await check(config, logger);
    return;
  } catch (error) {
    if (isOutOfMemory(error)) {
      logger.warn({ redis: maskRedisUrl(config.redisUrl), err: errorMessage(error) }, 'Redis is full: deployment not recorded yet, will retry');
    } else {
      if (!(error instanceof RedisUnavailableError)) throw error;
      logger.warn({ redis: maskRedisUrl(config.redisUrl), err: error.message }, 'Redis is not reachable at start; checking the deployment once it is');
    }
  }
  const retry = () => {
    check(config, logger).then(
      () => undefined,
      (error: unknown) => {
        if (error instanceof RedisUnavailableError || isOutOfMemory(error)) {
          setTimeout(retry, RECHECK_MS).unref();
          return;
        }
        const failure = describeFailure(error, config.redisUrl);
        logger.fatal({ err: failure.message }, 'misconfigured deployment; exiting');
        logger.flush();
        process.stderr.write(`mirrorplane: ${failure.message}\n`);
        process.exit(failure.exitCode);
      },
    );
  };
  setTimeout(retry, RECHECK_MS).unref();
}

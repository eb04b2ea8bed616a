import type { Cluster, Redis, RedisOptions } from 'ioredis';
import type { Logger } from 'pino';
import { errorMessage, RedisUnavailableError, type Config } from '@mirrorplane/core';
import { connectRedis } from './cluster.js';
import { readGroup } from './stream-info.js';
import { redisTlsOptions, redisTlsProblem } from './redis-tls.js';

/** A connection to one Redis or to a Redis Cluster; every key of a deployment shares one hash tag. */
export type RedisClient = Redis | Cluster;

/**
 * What a connection is for decides how it behaves while Redis is away:
 * - `append`: the ingress hot path. No offline queue (a command fails at once when Redis is
 *   down, so the ingress can answer 503 without waiting), a command timeout; the ingress
 *   batches its writes per event-loop turn.
 * - `commands`: worker and CLI commands. Commands wait for the reconnect instead of failing,
 *   so an outage pauses work rather than losing acknowledgements.
 * - `blocking`: a connection for `XREADGROUP … BLOCK`, never shared.
 * - `bullmq`: what BullMQ requires (`maxRetriesPerRequest: null`).
 * - `cli`: an operator command: gives up reconnecting after a few tries, each command bounded
 *   by `redisConnectTimeoutMs`.
 * - `watch`: a live view (`status --watch`): reconnects forever, but a command while Redis is
 *   away fails at once (no offline queue) and each is bounded, so the view can say it is stale.
 */
export type ConnectionPurpose = 'append' | 'commands' | 'blocking' | 'bullmq' | 'cli' | 'watch';

export function createRedis(
  config: Pick<Config, 'redisUrl' | 'appendTimeoutMs'> & Partial<Pick<Config, 'redisConnectTimeoutMs' | 'redisTls'>>,
  purpose: ConnectionPurpose,
  logger: Logger,
): Redis {
  // Read first: a missing or expired file throws naming its REDIS_TLS_* setting (TlsFileError).
  const tls = redisTlsOptions(config.redisTls);
  const options: RedisOptions = {
    connectionName: `mirrorplane-${purpose}`,
    // Reconnect forever with a capped backoff: a process outlives a Redis restart.
    retryStrategy: (times) => Math.min(50 * 2 ** Math.min(times, 6), 2000),
    lazyConnect: false,
  };
  switch (purpose) {
    case 'append':
      Object.assign(options, {
        enableOfflineQueue: false,
        // The ingress batches its appends per event-loop turn (it corks this socket), which
        // costs less per request than auto-pipelining's per-tick pipeline of one command.
        enableAutoPipelining: false,
        maxRetriesPerRequest: 0,
        commandTimeout: config.appendTimeoutMs,
      });
      break;
    case 'commands':
      Object.assign(options, { enableAutoPipelining: true, maxRetriesPerRequest: null });
      break;
    case 'blocking':
    case 'bullmq':
      Object.assign(options, { maxRetriesPerRequest: null });
      break;
    case 'cli':
      // An operator command should fail fast with a clear message, not wait for a Redis that is not there.
      Object.assign(options, {
        maxRetriesPerRequest: 1,
        connectTimeout: config.redisConnectTimeoutMs ?? 5000,
        commandTimeout: config.redisConnectTimeoutMs ?? 10_000,
        retryStrategy: (times: number) => (times > 3 ? null : 200),
        // Sentinel: ioredis retries the sentinels for ever by default; openRedis's deadline ends it.
        sentinelRetryStrategy: (times: number) => Math.min(times * 100, 1000),
      });
      break;
    case 'watch':
      Object.assign(options, {
        enableOfflineQueue: false,
        maxRetriesPerRequest: 0,
        connectTimeout: config.redisConnectTimeoutMs ?? 5000,
        commandTimeout: config.redisConnectTimeoutMs ?? 10_000,
        retryStrategy: (times: number) => Math.min(100 * times, 1000),
      });
      break;
  }
  const redis = connectRedis(config.redisUrl, options, tls);
  // ioredis emits an error on every failed reconnect; log the first of a run and the recovery.
  let down = false;
  redis.on('error', (error) => {
    // ioredis reports a failed SELECT and goes on in database 0, another deployment's keys:
    // stop this connection rather than read or write there.
    if (/DB index is out of range|invalid DB index/i.test(errorMessage(error))) {
      logger.error({ purpose, err: errorMessage(error) }, 'the database in REDIS_URL does not exist; closing the connection instead of using database 0');
      redis.disconnect();
      return;
    }
    if (!down) {
      down = true;
      // A certificate that expired or was replaced while running: say which setting fixes it.
      const tlsProblem = redisTlsProblem(error);
      if (tlsProblem)
        logger.error({ purpose, code: 'MP_ERR_REDIS_TLS', setting: tlsProblem.setting, err: tlsProblem.message }, 'redis TLS handshake failed; reconnecting');
      else logger.warn({ purpose, err: errorMessage(error) }, 'redis connection lost; reconnecting');
    }
  });
  redis.on('ready', () => {
    if (down) logger.info({ purpose }, 'redis connection restored');
    down = false;
  });
  return redis;
}

/** Closes a connection: QUIT when it answers within `ms`, a hard disconnect otherwise. */
export async function closeRedis(redis: Redis, ms = 1000): Promise<void> {
  if (redis.status === 'end') return;
  if (redis.status !== 'ready') {
    redis.disconnect();
    return;
  }
  let timer: NodeJS.Timeout | undefined;
  try {
    await Promise.race([
      redis.quit(),
      new Promise((_, reject) => {
        timer = setTimeout(() => reject(new RedisUnavailableError('quit timed out')), ms);
      }),
    ]);
  } catch {
    redis.disconnect();
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Creates the consumer group (from the start of the stream, so nothing appended earlier is skipped).
 *
 * Redis at `maxmemory` with `noeviction` answers OOM to XGROUP CREATE (it is `denyoom`) before it
 * looks for the group, even when the group exists. So the group is looked up first (XINFO GROUPS
 * is read-only and works on a full Redis) and created only when missing; a full Redis then
 * throws its OOM error, which the caller treats as transient.
 */
export async function ensureGroup(redis: Redis, stream: string, group: string): Promise<void> {
  if (await groupExists(redis, stream, group)) return;
  try {
    await redis.xgroup('CREATE', stream, group, '0', 'MKSTREAM');
  } catch (error) {
    if (!String((error as Error).message).startsWith('BUSYGROUP')) throw error;
  }
}

async function groupExists(redis: Redis, stream: string, group: string): Promise<boolean> {
  // No stream yet (null): XGROUP CREATE … MKSTREAM makes both.
  return (await readGroup(redis, stream, group)) !== null;
}

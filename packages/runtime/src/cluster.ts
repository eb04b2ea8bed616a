import type { ConnectionOptions } from 'node:tls';
import { Cluster, Redis, type ClusterOptions, type RedisOptions } from 'ioredis';
import { parseRedisUrl } from '@mirrorplane/core';

/**
 * Opens a connection for a Redis connection string (see `parseRedisUrl`): one Redis, a
 * Redis Cluster (`redis+cluster://`) or a master found through Sentinel
 * (`redis+sentinel://…/name`). `options` are what the connection's purpose asks for; for a
 * cluster they apply to each node's connection, and the cluster-level ones (offline queue,
 * auto-pipelining, reconnects) to the cluster.
 *
 * A Cluster answers the same commands as a Redis and every key of a deployment shares
 * the hash tag `{prefix}`, so the stream, the counters and BullMQ's keys sit in one slot:
 * scripts and MULTI work as on one Redis. The result is typed `Redis` so that callers
 * need not care; what they use (commands, `status`, events, `quit`) both classes have.
 */
export function connectRedis(url: string, options: RedisOptions, tls: ConnectionOptions = {}): Redis {
  const target = parseRedisUrl(url);
  // `tls` (CA, client certificate, server name: see redisTlsOptions) applies to every TLS
  // connection: the Redis, each Cluster node, each sentinel.
  if (target.mode === 'single') return new Redis(url, target.tls ? { ...options, tls } : options);
  const auth = {
    ...(target.username !== null ? { username: target.username } : {}),
    ...(target.password !== null ? { password: target.password } : {}),
    ...(target.tls ? { tls } : {}),
  };
  if (target.mode === 'sentinel') {
    return new Redis({
      ...options,
      ...auth,
      sentinels: target.nodes.map((n) => ({ host: n.host, port: n.port })),
      name: target.masterName as string,
      db: target.db,
      ...(target.sentinelPassword !== null ? { sentinelPassword: target.sentinelPassword } : {}),
      ...(target.tls ? { enableTLSForSentinelMode: true, sentinelTLS: tls } : {}),
    });
  }
  const { retryStrategy, enableOfflineQueue, enableAutoPipelining, lazyConnect, ...nodeOptions } = options;
  const clusterOptions: ClusterOptions = {
    redisOptions: { ...nodeOptions, ...auth },
    ...(retryStrategy ? { clusterRetryStrategy: (times: number) => retryStrategy(times) ?? null } : {}),
    ...(enableOfflineQueue !== undefined ? { enableOfflineQueue } : {}),
    ...(enableAutoPipelining !== undefined ? { enableAutoPipelining } : {}),
    ...(lazyConnect !== undefined ? { lazyConnect } : {}),
    // Every key of a deployment is in one slot: reads go to its master, like writes.
    scaleReads: 'master',
  };
  return new Cluster(
    target.nodes.map((n) => ({ host: n.host, port: n.port })),
    clusterOptions,
  ) as unknown as Redis;
}

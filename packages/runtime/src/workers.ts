import { errorMessage, RedisUnavailableError, workerKey, workersSetKey, type Keys } from '@mirrorplane/core';
import type { RedisClient } from './redis.js';
import { readConsumers } from './stream-info.js';

/**
 * Worker heartbeats: which workers are alive, and what each holds.
 *
 * Each worker writes `{prefix}:worker:<consumer>` (both keys named in core's keys.ts) (JSON, below) every HEARTBEAT_MS with a time
 * to live of three periods, and adds its consumer name to the set `{prefix}:workers`. A worker
 * whose key expired is dead (or cut off from Redis). Every key shares the deployment's hash
 * tag, so one Redis Cluster shard holds them all.
 */
export interface WorkerHeartbeat {
  /** The worker's consumer name in the group. */
  consumer: string;
  host: string;
  pid: number;
  /** The worker's package version. */
  version: string;
  /** WORKER_CONCURRENCY of the worker. */
  concurrency: number;
  /** Replays running in the worker now (stream entries and retry jobs). */
  inFlight: number;
  /** Stream entries among `inFlight`: compare with the consumer's pending count in XPENDING. */
  inFlightEntries: number;
  /** Finished entries whose acknowledgement Redis has not taken yet (also pending in XPENDING). */
  unacked: number;
  /** When the worker started (ms since the epoch). */
  startedAt: number;
  /** When this heartbeat was written (ms since the epoch, the worker's clock). */
  lastSeen: number;
  /** The staging origins the worker replays to, by name (absent in heartbeats of older workers). */
  origins?: string[];
  /**
   * The rate caps of the worker's own config (`rateLimit`, STAGING_RATE_LIMIT), by origin name, as
   * `<per second>,<burst>`: what operator commands show when they run without that config.
   */
  rateLimits?: Record<string, string>;
}

/**
 * Writes a heartbeat that expires after `ttlMs`. Throws RedisUnavailableError carrying what Redis answered (OOM with Redis full:
 * SET and SADD allocate); the caller logs and goes on.
 */
export async function writeHeartbeat(redis: RedisClient, prefix: string, heartbeat: WorkerHeartbeat, ttlMs: number): Promise<void> {
  // A pipeline, not MULTI: on a full Redis a refused command inside MULTI aborts the transaction
  // (EXECABORT); here each command answers for itself and the first error is reported.
  await redis
    .pipeline()
    .set(workerKey(prefix, heartbeat.consumer), JSON.stringify(heartbeat), 'PX', ttlMs)
    .sadd(workersSetKey(prefix), heartbeat.consumer)
    .exec()
    .then((results) => {
      const bad = results?.find(([error]) => error);
      if (bad) throw new RedisUnavailableError(`writing the heartbeat failed: ${errorMessage(bad[0])}`, { cause: bad[0] });
    });
}

/** Removes a worker's heartbeat (a clean shutdown). */
export async function removeHeartbeat(redis: RedisClient, prefix: string, consumer: string): Promise<void> {
  await redis.del(workerKey(prefix, consumer));
  await redis.srem(workersSetKey(prefix), consumer);
}

/**
 * The workers alive now (heartbeat not expired), by consumer name. Names whose heartbeat
 * expired are removed from the set on the way (SREM frees memory, so it works on a full Redis)
 * unless `options.prune` is false, as read-only operator commands ask: they write nothing.
 */
export async function listWorkers(redis: RedisClient, prefix: string, options: { prune?: boolean } = {}): Promise<WorkerHeartbeat[]> {
  const names = (await redis.smembers(workersSetKey(prefix))).sort();
  if (names.length === 0) return [];
  const values = await redis.mget(...names.map((n) => workerKey(prefix, n)));
  const alive: WorkerHeartbeat[] = [];
  const gone: string[] = [];
  names.forEach((name, i) => {
    const value = values[i];
    if (value === null || value === undefined) {
      gone.push(name);
      return;
    }
    try {
      alive.push(JSON.parse(value) as WorkerHeartbeat);
    } catch {
      gone.push(name);
    }
  });
  if (gone.length > 0 && options.prune !== false) await redis.srem(workersSetKey(prefix), ...gone).catch(() => undefined);
  return alive;
}

/** Deletes consumer ARGV[2] of group ARGV[1] of stream KEYS[1] only when it has nothing pending; 1 when deleted. */
const DELETE_IF_IDLE = `
local pending = redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2])
if #pending > 0 then return 0 end
redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
return 1
`;

/** A consumer removed from a group by `pruneDeadConsumers`. */
export interface PrunedConsumer {
  consumer: string;
  stream: string;
}

/**
 * Removes from each partition's group the consumers that are dead: no heartbeat, nothing
 * pending, and idle for at least `minIdleMs` (so a worker that has just started and not yet
 * written its first heartbeat, or whose heartbeat a full Redis refused, is not removed while
 * it reads). XGROUP DELCONSUMER drops a consumer's pending entries, so a consumer holding any
 * is never removed: its entries are claimed by the live workers first.
 * Returns what was removed.
 */
export async function pruneDeadConsumers(redis: RedisClient, prefix: string, parts: readonly Keys[], minIdleMs: number): Promise<PrunedConsumer[]> {
  const alive = new Set((await listWorkers(redis, prefix)).map((w) => w.consumer));
  const pruned: PrunedConsumer[] = [];
  for (const keys of parts) {
    // No stream or no group yet: nothing to prune.
    for (const c of await readConsumers(redis, keys.stream, keys.group)) {
      const name = c.name;
      if (alive.has(name) || c.pending !== 0 || c.idleMs < minIdleMs) continue;
      // Checked again and removed in one script: the consumer may have read since XINFO answered.
      const removed = Number(await redis.eval(DELETE_IF_IDLE, 1, keys.stream, keys.group, name));
      if (removed === 1) pruned.push({ consumer: name, stream: keys.stream });
    }
  }
  return pruned;
}

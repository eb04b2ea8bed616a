import type { Queue } from 'bullmq';
import type { Keys } from '@mirrorplane/core';
import { readStatus, type Status } from './operations.js';
import type { RedisClient } from './redis.js';
import type { RetryJobData } from './retry-queue.js';
import { InternalError } from '@mirrorplane/core';

/**
 * The status of a deployment over all its partitions: counts summed, the oldest backlog age
 * the largest, a consumer's pending summed over the partitions' groups. The retry queue and
 * the failed set are shared, so they are counted once.
 */
export async function readDeploymentStatus(redis: RedisClient, queue: Queue<RetryJobData>, keys: readonly Keys[], now = Date.now()): Promise<Status> {
  const statuses = await Promise.all(keys.map((k) => readStatus(redis, queue, k, now)));
  const first = statuses[0];
  if (!first) throw new InternalError('readDeploymentStatus needs at least one partition');
  if (statuses.length === 1) return first;
  const consumers = new Map<string, Status['consumers'][number]>();
  for (const s of statuses) {
    for (const c of s.consumers) {
      const seen = consumers.get(c.name);
      consumers.set(c.name, seen ? { name: c.name, pending: seen.pending + c.pending, idleMs: Math.min(seen.idleMs, c.idleMs) } : { ...c });
    }
  }
  const ages = statuses.map((s) => s.oldestBacklogAgeMs).filter((a): a is number => a !== null);
  return {
    backlog: statuses.reduce((n, s) => n + s.backlog, 0),
    pending: statuses.reduce((n, s) => n + s.pending, 0),
    retrying: first.retrying,
    failed: first.failed,
    replayed: statuses.reduce((n, s) => n + s.replayed, 0),
    accepted: statuses.every((s) => s.accepted !== null) ? statuses.reduce((n, s) => n + (s.accepted as number), 0) : null,
    oldestBacklogAgeMs: ages.length === 0 ? null : Math.max(...ages),
    consumers: [...consumers.values()],
  };
}

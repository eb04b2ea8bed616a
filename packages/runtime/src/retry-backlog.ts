import { retryStateKey, type Keys } from '@mirrorplane/core';
import type { RedisClient } from './redis.js';

/**
 * The BullMQ states of a retry job that is not finished: waiting for its turn (`wait`,
 * `paused`, `prioritized`), waiting for its backoff delay or for an ID mapping (`delayed`),
 * being replayed (`active`). `waiting-children` is never used by us but is unfinished too.
 * The failed set is not here: a failed job is finished (it waits for an operator, not for
 * the system), and `mirrorplane failed purge` is how an operator frees it.
 */
const LISTS = ['wait', 'paused', 'active'] as const;
const SORTED_SETS = ['delayed', 'prioritized', 'waiting-children'] as const;

/**
 * Counts the unfinished jobs of the retry queue (see above) with one `LLEN`/`ZCARD` per
 * state, read straight from BullMQ's keys (`retryStateKey`): the
 * ingress has no BullMQ connection, and these six O(1) commands are cheaper than BullMQ's
 * count script. Rejects when Redis does not answer (the caller keeps its last verdict).
 */
export async function countUnfinishedRetries(redis: RedisClient, keys: Keys): Promise<number> {
  const counts = await Promise.all([
    ...LISTS.map((state) => redis.llen(retryStateKey(keys, state))),
    ...SORTED_SETS.map((state) => redis.zcard(retryStateKey(keys, state))),
  ]);
  return counts.reduce((a, b) => a + b, 0);
}

import type { Job, Queue } from 'bullmq';
import { NotFoundError, streamIdTime, type Keys } from '@mirrorplane/core';
import type { RetryJobData } from './retry-queue.js';
import type { RedisClient } from './redis.js';
import { readConsumers, readGroup } from './stream-info.js';

/** The state of a deployment, as `mirrorplane status` prints it. */
export interface Status {
  /** Accepted, not yet taken by a worker. */
  backlog: number;
  /** Taken by a worker, not finished. */
  pending: number;
  /** Waiting in the retry queue (delayed or ready) or being retried now. */
  retrying: number;
  failed: number;
  /** Completed replays since the deployment began. */
  replayed: number;
  /** Entries ever appended to the stream (the group's entries-read + lag, Redis 7), null when unknown. */
  accepted: number | null;
  /** Age of the oldest backlog entry, null when the backlog is empty. */
  oldestBacklogAgeMs: number | null;
  consumers: { name: string; pending: number; idleMs: number }[];
}

/** Reads the status of a deployment; consistent enough for operators, not a snapshot. */
export async function readStatus(redis: RedisClient, queue: Queue<RetryJobData>, keys: Keys, now = Date.now()): Promise<Status> {
  const [group, length, replayed, counts] = await Promise.all([
    readGroup(redis, keys.stream, keys.group),
    redis.xlen(keys.stream),
    redis.get(keys.replayed),
    queue.getJobCounts('wait', 'delayed', 'active', 'prioritized', 'paused', 'waiting-children', 'failed'),
  ]);
  const pending = group?.pending ?? 0;
  const lag = group?.lag ?? null;
  // Finished entries are deleted, so what is in the stream and not pending is backlog; the
  // group's lag (Redis 7) says the same and is used when it is known.
  const backlog = lag ?? Math.max(0, length - pending);
  const read = group?.entriesRead ?? null;
  const accepted = lag !== null && read !== null ? read + lag : null;
  let oldestBacklogAgeMs: number | null = null;
  if (backlog > 0) {
    const start = group ? `(${group.lastDeliveredId}` : '-';
    const first = await redis.xrange(keys.stream, start, '+', 'COUNT', 1);
    const id = first[0]?.[0];
    if (id) oldestBacklogAgeMs = Math.max(0, now - streamIdTime(id));
  }
  const consumers: Status['consumers'] = group ? (await readConsumers(redis, keys.stream, keys.group)).map((c) => ({ ...c })) : [];
  return {
    backlog,
    pending,
    retrying: (counts.wait ?? 0) + (counts.delayed ?? 0) + (counts.active ?? 0) + (counts.prioritized ?? 0) + (counts.paused ?? 0) + (counts['waiting-children'] ?? 0),
    failed: counts.failed ?? 0,
    replayed: Number(replayed ?? 0),
    accepted,
    oldestBacklogAgeMs,
    consumers,
  };
}

/** One entry of the failed set, as `mirrorplane failed list --json` prints it. */
export interface FailedEntry {
  id: string;
  method: string | null;
  url: string | null;
  attempts: number;
  lastError: string;
  failedAt: string | null;
}

function describeFailed(job: Job<RetryJobData>): FailedEntry {
  const entry = job.data.entry;
  // A job made to carry a failure reason never replayed; its attempts are those made before.
  const replays = job.data.failReason !== undefined ? 0 : job.attemptsMade;
  return {
    id: String(job.id),
    method: entry?.method ?? null,
    url: entry?.target ?? null,
    attempts: job.data.priorAttempts + replays,
    lastError: job.failedReason ?? job.data.failReason ?? '',
    failedAt: job.finishedOn ? new Date(job.finishedOn).toISOString() : null,
  };
}

export async function listFailed(queue: Queue<RetryJobData>, limit: number): Promise<FailedEntry[]> {
  const jobs = await queue.getFailed(0, Math.max(0, limit - 1));
  return jobs.filter((j): j is Job<RetryJobData> => Boolean(j)).map(describeFailed);
}

/**
 * Puts failed entries back for a fresh set of attempts. With `ids` null, every failed entry.
 * Throws `NotFoundError` naming ids that are not in the failed set (after replaying the rest).
 */
export async function replayFailed(queue: Queue<RetryJobData>, ids: readonly string[] | null): Promise<number> {
  let count = 0;
  const missing: string[] = [];
  const retry = async (job: Job<RetryJobData>) => {
    if (job.data.failReason !== undefined) {
      // The reason was the verdict of the first try; a replay must actually replay.
      const { failReason: _reason, ...data } = job.data;
      await job.updateData({ ...data, priorAttempts: job.data.priorAttempts });
    }
    await job.retry('failed', { resetAttemptsMade: true, resetAttemptsStarted: true });
    count += 1;
  };
  if (ids === null) {
    for (;;) {
      const jobs = (await queue.getFailed(0, 499)).filter((j): j is Job<RetryJobData> => Boolean(j));
      if (jobs.length === 0) break;
      for (const job of jobs) await retry(job);
    }
  } else {
    for (const id of ids) {
      const job = (await queue.getJob(id)) as Job<RetryJobData> | undefined;
      if (!job || !(await job.isFailed())) missing.push(id);
      else await retry(job);
    }
  }
  if (missing.length > 0) {
    throw Object.assign(new NotFoundError(`not in the failed set: ${missing.join(', ')} (replayed ${count})`), { replayed: count });
  }
  return count;
}

/** Removes every entry of the failed set; returns how many. */
export async function purgeFailed(queue: Queue<RetryJobData>): Promise<number> {
  let removed = 0;
  for (;;) {
    const ids = await queue.clean(0, 1000, 'failed');
    removed += ids.length;
    if (ids.length < 1000) return removed;
  }
}

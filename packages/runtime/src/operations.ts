import type { Job, Queue } from 'bullmq';
import { streamIdTime, type Keys, type Redactor } from '@mirrorplane/core';
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
    retrying:
      (counts.wait ?? 0) + (counts.delayed ?? 0) + (counts.active ?? 0) + (counts.prioritized ?? 0) + (counts.paused ?? 0) + (counts['waiting-children'] ?? 0),
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

/** A failed job as people read it: secret query values and quoted secrets hidden by `redactor`. */
export function describeFailed(job: Job<RetryJobData>, redactor: Redactor): FailedEntry {
  const entry = job.data.entry;
  // A job made to carry a failure reason never replayed; its attempts are those made before.
  const replays = job.data.failReason !== undefined ? 0 : job.attemptsMade;
  return {
    id: String(job.id),
    method: entry?.method ?? null,
    url: entry ? redactor.target(entry.target) : null,
    attempts: job.data.priorAttempts + replays,
    lastError: redactor.text(job.failedReason ?? job.data.failReason ?? ''),
    failedAt: job.finishedOn ? new Date(job.finishedOn).toISOString() : null,
  };
}

/** The first `limit` entries of the failed set, redacted for display. */
export async function listFailed(queue: Queue<RetryJobData>, limit: number, redactor: Redactor): Promise<FailedEntry[]> {
  const jobs = await queue.getFailed(0, Math.max(0, limit - 1));
  return jobs.filter((j): j is Job<RetryJobData> => Boolean(j)).map((job) => describeFailed(job, redactor));
}

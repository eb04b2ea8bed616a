import type { Job, Queue } from 'bullmq';
import type { Redactor } from '@mirrorplane/core';
import { describeFailed, type FailedEntry } from './operations.js';
import type { RetryJobData } from './retry-queue.js';

/**
 * Operator actions on the failed set, each on a snapshot: the ids in the set when the
 * action starts are read once, then each is acted on once, whatever joins or leaves the set
 * meanwhile (an entry replayed now that fails again during the command is not replayed
 * twice). Counts are exact: every snapshot id is counted in exactly one outcome.
 */

/** Which failed entries an action takes; every given condition must hold. */
export interface FailedFilter {
  /** Only entries that failed at least this many milliseconds ago. */
  olderThanMs?: number;
  /** Only entries whose last error matches. */
  error?: RegExp;
  /** Only these ids (a missing one is reported as `missing`). */
  ids?: readonly string[];
  /** A snapshot taken earlier (`snapshotFailedIds`), for a confirmation that must act on what was shown. */
  snapshot?: readonly string[];
}

/** What an action did with each id of its snapshot. */
export interface FailedActionResult {
  /** Ids in the failed set when the command started (or named), before filters. */
  snapshot: number;
  /** Taken by the filters (acted on, or would be with a dry run). */
  matched: number;
  /** Acted on: replayed or removed (0 with a dry run). */
  done: number;
  /** Left out by the filters. */
  filteredOut: number;
  /** In the snapshot but no longer failed when their turn came (replayed or removed by someone else). */
  gone: number;
  /** Named ids not in the failed set. */
  missing: string[];
  dryRun: boolean;
  /** The matched entries (at most `sampleLimit`), for a dry run's listing. */
  sample: FailedEntry[];
}

/** The ids of the failed set now, newest first. */
export async function snapshotFailedIds(queue: Queue<RetryJobData>): Promise<string[]> {
  return (await queue.getRanges(['failed'], 0, -1, false)).map(String);
}

function matches(job: Job<RetryJobData>, filter: FailedFilter, now: number): boolean {
  if (filter.olderThanMs !== undefined && (job.finishedOn === undefined || now - job.finishedOn < filter.olderThanMs)) return false;
  if (filter.error && !filter.error.test(job.failedReason ?? job.data.failReason ?? '')) return false;
  return true;
}

/** How a failed-set action runs: `dryRun` acts on nothing; `redactor` hides secrets in the sample it lists. */
export interface FailedActionOptions {
  dryRun?: boolean;
  now?: number;
  redactor: Redactor;
}

async function actOnFailed(
  queue: Queue<RetryJobData>,
  filter: FailedFilter,
  options: FailedActionOptions,
  act: (job: Job<RetryJobData>) => Promise<void>,
  sampleLimit = 100,
): Promise<FailedActionResult> {
  const dryRun = options.dryRun === true;
  const now = options.now ?? Date.now();
  const ids = filter.ids ? [...new Set(filter.ids)] : filter.snapshot ? [...filter.snapshot] : await snapshotFailedIds(queue);
  const result: FailedActionResult = { snapshot: ids.length, matched: 0, done: 0, filteredOut: 0, gone: 0, missing: [], dryRun, sample: [] };
  for (const id of ids) {
    const job = (await queue.getJob(id)) as Job<RetryJobData> | undefined;
    if (!job || !(await job.isFailed())) {
      if (filter.ids) result.missing.push(id);
      else result.gone += 1;
      continue;
    }
    if (!matches(job, filter, now)) {
      result.filteredOut += 1;
      continue;
    }
    result.matched += 1;
    if (result.sample.length < sampleLimit) result.sample.push(describeFailed(job, options.redactor));
    if (dryRun) continue;
    await act(job);
    result.done += 1;
  }
  return result;
}

/** Puts failed entries back for a fresh set of attempts, each snapshot id once. */
export function replayFailedSnapshot(queue: Queue<RetryJobData>, filter: FailedFilter, options: FailedActionOptions): Promise<FailedActionResult> {
  return actOnFailed(queue, filter, options, async (job) => {
    if (job.data.failReason !== undefined) {
      // The reason was the verdict of the first try; a replay must actually replay.
      const { failReason: _reason, ...data } = job.data;
      await job.updateData({ ...data, priorAttempts: job.data.priorAttempts });
    }
    if (job.data.firstTriedAt !== undefined) {
      // A fresh retry window: it counts from the first try of this replay.
      const { firstTriedAt: _first, ...data } = job.data;
      await job.updateData(data);
    }
    await job.retry('failed', { resetAttemptsMade: true, resetAttemptsStarted: true });
  });
}

/** Removes failed entries for good, each snapshot id once. */
export function purgeFailedSnapshot(queue: Queue<RetryJobData>, filter: FailedFilter, options: FailedActionOptions): Promise<FailedActionResult> {
  return actOnFailed(queue, filter, options, (job) => job.remove());
}

/** Failed entries grouped by their last error, largest group first, over the whole set (read in pages). */
export async function groupFailedByError(
  queue: Queue<RetryJobData>,
  redactor: Redactor,
  page = 1000,
): Promise<{ error: string; count: number; example: string; newest: string | null }[]> {
  const groups = new Map<string, { error: string; count: number; example: string; newest: string | null }>();
  for (let start = 0; ; start += page) {
    const jobs = (await queue.getFailed(start, start + page - 1)).filter((j): j is Job<RetryJobData> => Boolean(j));
    for (const e of jobs.map((job) => describeFailed(job, redactor))) {
      // Digits vary per entry (ports, ids, durations); the kind of error does not.
      const kind = e.lastError.replace(/\d+/g, 'N').slice(0, 200);
      const g = groups.get(kind);
      if (g) g.count += 1;
      else groups.set(kind, { error: e.lastError.slice(0, 200), count: 1, example: e.id, newest: e.failedAt });
    }
    if (jobs.length < page) break;
  }
  return [...groups.values()].sort((a, b) => b.count - a.count);
}

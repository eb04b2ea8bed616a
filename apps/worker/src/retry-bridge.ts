import type { Queue } from 'bullmq';
import { errorMessage, ReplayFailedError } from '@mirrorplane/core';
import { retryJobName, type FailedReason, type Logger, type RetryJobData } from '@mirrorplane/runtime';

/** The BullMQ backoff type of retry jobs: the delay is the one the retry policy chose. */
export const POLICY_BACKOFF = 'mirrorplane-policy';

/**
 * BullMQ's `settings.backoffStrategy` for retry jobs: the delay the classification chose, or -1
 * (no more tries) for any other error, which a job of this backoff type never throws.
 */
export function policyBackoff(_attemptsMade: number, _type?: string, error?: Error): number {
  return error instanceof ReplayFailedError ? Math.max(1, error.delayMs) : -1;
}

/** How many tries BullMQ allows a job: the policy decides (by throwing Unrecoverable), not BullMQ. */
const UNBOUNDED_ATTEMPTS = 1_000_000;

/** Why a stream entry leaves the stream for the retry queue. */
export type HandOverReason = 'retry' | 'wait' | FailedReason;

/**
 * The bridge from the stream to the retry queue: moves an entry to a job (delayed for a retry
 * or a wait, or made to fail at once to carry a failure into the failed set). The job id is the
 * entry id, so a repeat after a crash adds nothing. Resolves true when the job exists; false
 * when Redis refused it (the entry stays pending and is taken over after CLAIM_IDLE_MS).
 */
export async function handOver(queue: Queue<RetryJobData>, logger: Logger, id: string, data: RetryJobData, why: HandOverReason, delayMs = 0): Promise<boolean> {
  try {
    // An encrypted entry's method and target are not in clear, so neither is the job name.
    const name = data.entry === null && data.raw?.e !== undefined ? 'encrypted entry' : retryJobName(data.entry);
    await queue.add(name, data, {
      jobId: id,
      attempts: why === 'retry' || why === 'wait' ? UNBOUNDED_ATTEMPTS : 1,
      backoff: { type: POLICY_BACKOFF },
      delay: delayMs,
      removeOnComplete: true,
      removeOnFail: false,
    });
    return true;
  } catch (error) {
    logger.error({ entryId: id, err: errorMessage(error) }, 'could not hand the entry to the retry queue; it stays pending');
    return false;
  }
}

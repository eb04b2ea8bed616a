import { ReplayLaterError, errorMessage } from '@mirrorplane/core';
import type { ReplayOutcome } from './replay.js';
import { nextRetryDelay, type RetryPolicy } from './retry-schedule.js';

/**
 * What to do with an entry after one replay attempt. The stream path and the retry path both
 * act on this, so a given answer from staging is treated the same whichever path tried it.
 * - `replayed`: staging answered with a completing status: finish, count as replayed.
 * - `dropped`: a `pre` stage dropped the request: finish, count as dropped.
 * - `post-error`: staging completed the replay, a `post` stage failed: finish, count as replayed.
 * - `later`: a stage asked to try later (ReplayLaterError): wait `delayMs`, spend no attempt.
 * - `retry`: a retryable failure and the retry policy allows another try after `delayMs`.
 * - `failed`: the entry goes to the failed set: `exhausted` (retryable, policy spent) or
 *   `unretryable` (an answer or error no retry can change).
 */
export type Disposition =
  | { kind: 'replayed'; status: number; ms: number }
  | { kind: 'dropped' }
  | { kind: 'post-error'; message: string; ms: number }
  | { kind: 'later'; delayMs: number }
  | { kind: 'retry'; delayMs: number; message: string; ms: number }
  | { kind: 'failed'; reason: 'exhausted' | 'unretryable'; message: string; ms: number };

/** One attempt's result: what `StagingClient.replay` resolved to, or what it threw. */
export type AttemptResult = { ok: true; outcome: ReplayOutcome } | { ok: false; error: unknown };

/**
 * Classifies one attempt.
 * @param attempt the attempt that was made, 1-based
 * @param firstTriedAt when the entry's first attempt began (ms since the epoch)
 * @param ms how long the attempt took (ms)
 */
export function classifyReplay(result: AttemptResult, attempt: number, policy: RetryPolicy, firstTriedAt: number, ms: number, now = Date.now()): Disposition {
  if (result.ok) return result.outcome;
  const error = result.error;
  if (error instanceof ReplayLaterError) return { kind: 'later', delayMs: error.delayMs };
  const message = errorMessage(error);
  if ((error as { completed?: boolean } | null)?.completed === true) return { kind: 'post-error', message, ms };
  if ((error as { retryable?: boolean } | null)?.retryable !== true) return { kind: 'failed', reason: 'unretryable', message, ms };
  const delayMs = nextRetryDelay(policy, attempt, firstTriedAt, now);
  return delayMs === null ? { kind: 'failed', reason: 'exhausted', message, ms } : { kind: 'retry', delayMs, message, ms };
}

/** Runs one attempt and returns its result, never throwing. */
export async function attempt(run: () => Promise<ReplayOutcome>): Promise<AttemptResult> {
  try {
    return { ok: true, outcome: await run() };
  } catch (error) {
    return { ok: false, error };
  }
}

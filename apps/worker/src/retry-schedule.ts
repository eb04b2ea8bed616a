/**
 * The retry policy: when a replay that failed with a retryable answer is tried again.
 *
 * After try `n` (1-based) fails, the next try waits
 *
 *     delay(n) = random in [cap(n) / 2, cap(n)],   cap(n) = min(initialDelayMs · 2^(n-1), maxDelayMs)
 *
 * ("equal jitter": never less than half the exponential step, never more than maxDelayMs). There
 * is a next try only when it would start within `windowMs` of the first try, and, when
 * `maxAttempts` is not 0, only while fewer than `maxAttempts` tries were made. Otherwise the
 * entry goes to the failed set with reason `exhausted`.
 *
 * With the defaults (1 s, 30 s, 10 min, no try cap) an entry is tried at about 0, 0.5-1, 1.5-3,
 * 3.5-7, 7.5-15, 15.5-31 s… then every 15-30 s until 10 minutes after its first try: about 25
 * tries, enough to outlast a staging restart.
 */
export interface RetryPolicy {
  /** Cap of the first delay (ms); REPLAY_BACKOFF_MS. */
  readonly initialDelayMs: number;
  /** Cap of every delay (ms); RETRY_MAX_DELAY_MS. */
  readonly maxDelayMs: number;
  /** No try starts later than this after the first one (ms); RETRY_WINDOW_MS. */
  readonly windowMs: number;
  /** Tries in all, 0 for no cap (the window alone decides); REPLAY_ATTEMPTS. */
  readonly maxAttempts: number;
}

/** The exponential step after try `attempt` (1-based), before jitter: ms. */
export function retryCap(policy: RetryPolicy, attempt: number): number {
  // 2^(attempt-1) overflows to Infinity for large attempts; min() keeps the cap finite.
  return Math.min(policy.initialDelayMs * 2 ** Math.max(0, attempt - 1), policy.maxDelayMs);
}

/**
 * The delay (ms) before the try after `attempt` failed, or null when there is none (the
 * window or the try cap is spent).
 *
 * @param attempt the try that just failed, 1-based
 * @param firstTriedAt when the first try began (ms since the epoch)
 * @param now the current time (ms since the epoch)
 * @param random a number in [0, 1) (Math.random by default; tests pass their own)
 */
export function nextRetryDelay(policy: RetryPolicy, attempt: number, firstTriedAt: number, now: number, random: number = Math.random()): number | null {
  if (policy.maxAttempts > 0 && attempt >= policy.maxAttempts) return null;
  const cap = retryCap(policy, attempt);
  const delay = Math.round(cap / 2 + (cap / 2) * Math.min(Math.max(random, 0), 1));
  if (now + delay > firstTriedAt + policy.windowMs) return null;
  return delay;
}

/** The policy the config describes. */
export function retryPolicyOf(config: { replayBackoffMs: number; retryMaxDelayMs: number; retryWindowMs: number; replayAttempts: number }): RetryPolicy {
  return Object.freeze({
    initialDelayMs: config.replayBackoffMs,
    maxDelayMs: Math.max(config.retryMaxDelayMs, 1),
    windowMs: config.retryWindowMs,
    maxAttempts: config.replayAttempts,
  });
}

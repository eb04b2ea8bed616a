import { z } from 'zod';
import { InvalidValueError } from './errors.js';

/**
 * A cap on the replays a staging origin receives, shared by every worker of a deployment: a
 * token bucket holding at most `burst` tokens, refilled at `perSecond` tokens a second; each
 * request sent to the origin (live replay, retry, copy, `mirrorplane replay --staging`) takes
 * one. Over any interval of T seconds an origin receives at most `perSecond × T + burst`.
 */
export interface RateLimit {
  /** Tokens added a second (requests a second in the long run), > 0. */
  readonly perSecond: number;
  /** Bucket size: requests that may go at once after a quiet spell, ≥ 1. */
  readonly burst: number;
}

/** The most a cap may allow a second, and the largest burst. */
export const RATE_LIMIT_MAX = 1_000_000;

/** The burst of a cap given without one: one second's worth, at least 1. */
export function defaultBurst(perSecond: number): number {
  return Math.max(1, Math.ceil(perSecond));
}

/** A cap checked for range; throws InvalidValueError naming what is wrong. */
export function rateLimitOf(perSecond: number, burst?: number): RateLimit {
  if (!Number.isFinite(perSecond) || perSecond <= 0 || perSecond > RATE_LIMIT_MAX) {
    throw new InvalidValueError(
      `expected a rate above 0 and at most ${RATE_LIMIT_MAX} a second (off lifts the cap; 0 is not a cap), got ${JSON.stringify(perSecond)}`,
    );
  }
  const b = burst ?? defaultBurst(perSecond);
  if (!Number.isSafeInteger(b) || b < 1 || b > RATE_LIMIT_MAX) {
    throw new InvalidValueError(`expected a burst from 1 to ${RATE_LIMIT_MAX} (whole requests), got ${JSON.stringify(burst)}`);
  }
  return Object.freeze({ perSecond, burst: b });
}

/**
 * `STAGING_RATE_LIMIT` and the text the CLI stores as a live override: `off`, `<perSecond>` or
 * `<perSecond>,<burst>` (`200`, `200,50`, `0.5,1`; decimals, no exponent). Returns null for
 * `off`; throws InvalidValueError for anything else, 0 included (a cap of 0 would send nothing:
 * refused rather than read as either paused or uncapped). The one parser of the CLI, the config
 * and the workers; `formatRateLimit` writes what it reads back.
 */
export function parseRateLimit(text: string): RateLimit | null {
  const t = text.trim().toLowerCase();
  if (t === 'off') return null;
  const m = /^(\d+(?:\.\d+)?)(?:\/s)?(?:\s*,\s*(\d+))?$/.exec(t);
  if (!m) throw new InvalidValueError(`expected off, <per second> or <per second>,<burst> (like 200 or 200,50), got ${JSON.stringify(text)}`);
  return rateLimitOf(Number(m[1]), m[2] === undefined ? undefined : Number(m[2]));
}

/** The text form `parseRateLimit` reads back to the same cap (plain decimals, never an exponent). */
export function formatRateLimit(limit: RateLimit | null): string {
  return limit === null ? 'off' : `${plainDecimal(limit.perSecond)},${limit.burst}`;
}

/** A finite non-negative number in plain decimal notation (`1e-7` → `0.0000001`), exactly the digits JavaScript prints. */
export function plainDecimal(n: number): string {
  const s = String(n);
  const e = s.indexOf('e');
  if (e === -1) return s;
  const exp = Number(s.slice(e + 1));
  const [int = '', frac = ''] = s.slice(0, e).split('.');
  const digits = int + frac;
  const point = int.length + exp;
  if (point <= 0) return `0.${'0'.repeat(-point)}${digits}`;
  if (point >= digits.length) return digits + '0'.repeat(point - digits.length);
  return `${digits.slice(0, point)}.${digits.slice(point)}`;
}

/** One origin's cap in the config file's `rateLimit` map. */
export const RateLimitOptions = z
  .strictObject({
    perSecond: z
      .number({ error: 'expected requests a second (a number above 0)' })
      .gt(0, 'expected requests a second (a number above 0)')
      .max(RATE_LIMIT_MAX, `expected at most ${RATE_LIMIT_MAX}`),
    burst: z
      .number({ error: 'expected a whole number of requests, at least 1' })
      .int('expected a whole number of requests, at least 1')
      .min(1, 'expected a whole number of requests, at least 1')
      .max(RATE_LIMIT_MAX, `expected at most ${RATE_LIMIT_MAX}`)
      .optional(),
  })
  .transform((o) => rateLimitOf(o.perSecond, o.burst));
export type RateLimitOptions = z.input<typeof RateLimitOptions>;

/**
 * Seconds a backlog of `entries` needs to drain at the cap, or null when there is no cap. The
 * estimate ignores the burst and assumes staging keeps up with the cap.
 */
export function drainSeconds(entries: number, limit: RateLimit | null): number | null {
  if (limit === null) return null;
  return entries / limit.perSecond;
}

import { listWorkers } from './workers.js';
import { errorMessage, formatRateLimit, parseRateLimit, StagingTransportError, rateBucketKey, rateLimitsKey, type RateLimit } from '@mirrorplane/core';
import type { RedisClient } from './redis.js';
import type { Logger } from './logger.js';

/**
 * One token bucket per staging origin, in Redis, shared by every process of a deployment.
 * KEYS[1] the bucket (hash `t` tokens, `ts` last refill, ms). ARGV: per second, burst, wanted
 * (a negative number gives tokens back, up to the burst). Redis's own clock (TIME) is the one
 * clock, so workers on hosts with skewed clocks share one bucket correctly. Returns
 * `{granted, ms until the next whole token}`.
 *
 * Invariant: tokens granted minus tokens given back ≤ burst + perSecond × elapsed seconds, so
 * requests sent (each holding one granted token) never exceed the cap plus the burst.
 */
const TAKE_SCRIPT = `
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local want = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local s = redis.call('HMGET', KEYS[1], 't', 'ts')
local tokens = tonumber(s[1])
local ts = tonumber(s[2])
if tokens == nil or ts == nil then tokens = burst; ts = now end
if now > ts then tokens = tokens + (now - ts) * rate / 1000 end
if tokens > burst then tokens = burst end
local granted = 0
if want < 0 then
  tokens = tokens - want
  if tokens > burst then tokens = burst end
else
  granted = math.floor(tokens)
  if granted > want then granted = want end
  if granted < 0 then granted = 0 end
  tokens = tokens - granted
end
redis.call('HSET', KEYS[1], 't', string.format('%.6f', tokens), 'ts', now)
redis.call('PEXPIRE', KEYS[1], math.ceil(burst * 1000 / rate) + 60000)
local wait = 0
if tokens < 1 then wait = math.ceil((1 - tokens) * 1000 / rate) end
return {granted, wait}
`;

/** How often the live overrides (`mirrorplane rate-limit set`) are read again, in ms. */
export const RATE_LIMIT_REFRESH_MS = 1000;
/** The longest a waiting request sleeps before asking again: a raised cap is seen within this (ms). */
const MAX_WAIT_MS = 250;

/** What a rate-capped sender needs: take a token for an origin, give back what it did not use. */
export interface OriginGate {
  /** The cap in force for `origin`, or null when it is not capped. */
  limitOf(origin: string): RateLimit | null;
  /** Resolves once one token of `origin` is taken (at once when the origin is not capped); throws a retryable error once closed. */
  take(origin: string): Promise<void>;
  /** Gives `n` unused tokens back to `origin`'s bucket (never beyond its burst). */
  refund(origin: string, n: number): void;
}

export interface RateLimiterOptions {
  redis: RedisClient;
  prefix: string;
  /** Caps from the config, by origin (`Config.rateLimits`). */
  limits: Readonly<Record<string, RateLimit>>;
  logger: Logger;
}

type TakeCommand = { mirrorplaneRateTake(key: string, rate: number, burst: number, want: number): Promise<[number, number]> };

/**
 * The rate caps of a deployment's staging origins. Caps come from the config and are
 * overridden live by the `{p}:rate-limits` hash (`mirrorplane rate-limit set`), which `start()`
 * re-reads every RATE_LIMIT_REFRESH_MS: a changed cap takes effect within about a second,
 * without a restart. Never throws from its background refresh: a failed read keeps the last caps.
 */
export class RateLimiter implements OriginGate {
  readonly #redis: RedisClient;
  readonly #prefix: string;
  readonly #configured: Readonly<Record<string, RateLimit>>;
  readonly #logger: Logger;
  /** Live overrides by origin; null: uncapped by override. */
  #overrides = new Map<string, RateLimit | null>();
  #timer: NodeJS.Timeout | null = null;
  #closed = false;
  /** Callers of `refunded`, by origin. */
  readonly #refundWaits = new Map<string, { promise: Promise<void>; wake: () => void }>();
  /** Waits on a token, by origin (for metrics). */
  readonly waits = new Map<string, number>();

  constructor(o: RateLimiterOptions) {
    this.#redis = o.redis;
    this.#prefix = o.prefix;
    this.#configured = o.limits;
    this.#logger = o.logger;
    if (!('mirrorplaneRateTake' in this.#redis)) this.#redis.defineCommand('mirrorplaneRateTake', { numberOfKeys: 1, lua: TAKE_SCRIPT });
  }

  limitOf(origin: string): RateLimit | null {
    const o = this.#overrides.get(origin);
    if (o !== undefined) return o;
    return this.#configured[origin] ?? null;
  }

  /** Every origin with a cap from the config or an override, and the cap in force (null: override turned it off). */
  limits(): Map<string, RateLimit | null> {
    const out = new Map<string, RateLimit | null>();
    for (const name of Object.keys(this.#configured)) out.set(name, this.limitOf(name));
    for (const name of this.#overrides.keys()) out.set(name, this.limitOf(name));
    return out;
  }

  /** Reads the overrides once, then every RATE_LIMIT_REFRESH_MS until close(). */
  async start(): Promise<void> {
    await this.refresh();
    if (this.#closed) return;
    this.#timer = setInterval(() => void this.refresh(), RATE_LIMIT_REFRESH_MS);
    this.#timer.unref();
  }

  /** Reads the overrides now. A bad value is logged and ignored (the config's cap stays). */
  async refresh(): Promise<void> {
    let raw: Record<string, string>;
    try {
      raw = await this.#redis.hgetall(rateLimitsKey(this.#prefix));
    } catch (error) {
      this.#logger.debug({ err: errorMessage(error) }, 'reading the rate-limit overrides failed; keeping the last ones');
      return;
    }
    const next = new Map<string, RateLimit | null>();
    for (const [origin, text] of Object.entries(raw)) {
      try {
        next.set(origin, parseRateLimit(text));
      } catch (error) {
        this.#logger.warn({ origin, err: errorMessage(error) }, 'ignoring a bad rate-limit override');
      }
    }
    this.#overrides = next;
  }

  /**
   * Takes up to `want` tokens of `origin` at once; resolves with how many were granted and the
   * ms until the next whole token. Uncapped: all of them. Throws when Redis refuses.
   */
  async tryTake(origin: string, want: number): Promise<{ granted: number; waitMs: number }> {
    const limit = this.limitOf(origin);
    if (limit === null || want <= 0) return { granted: Math.max(0, want), waitMs: 0 };
    const [granted, waitMs] = await (this.#redis as unknown as TakeCommand).mirrorplaneRateTake(
      rateBucketKey(this.#prefix, origin),
      limit.perSecond,
      limit.burst,
      want,
    );
    return { granted: Number(granted), waitMs: Number(waitMs) };
  }

  async take(origin: string): Promise<void> {
    let backoff = 50;
    for (;;) {
      if (this.limitOf(origin) === null) return;
      // Stopping: what still waits was handed back (or will be retried); it must not go uncapped.
      if (this.#closed) throw new StagingTransportError(`stopping before a rate token of origin ${origin} was granted`);
      let waitMs: number;
      try {
        const r = await this.tryTake(origin, 1);
        if (r.granted >= 1) return;
        waitMs = Math.min(MAX_WAIT_MS, Math.max(1, r.waitMs));
        this.waits.set(origin, (this.waits.get(origin) ?? 0) + 1);
        backoff = 50;
      } catch (error) {
        // Redis down: nothing is sent until it answers (the cap holds), tried again with a backoff.
        this.#logger.debug({ origin, err: errorMessage(error) }, 'taking a rate token failed; retrying');
        waitMs = backoff;
        backoff = Math.min(backoff * 2, 2000);
      }
      await new Promise((r) => setTimeout(r, waitMs));
    }
  }

  refund(origin: string, n: number): void {
    const limit = this.limitOf(origin);
    if (limit === null || n <= 0) return;
    void (this.#redis as unknown as TakeCommand)
      .mirrorplaneRateTake(rateBucketKey(this.#prefix, origin), limit.perSecond, limit.burst, -n)
      .catch(() => undefined)
      .then(() => {
        const waiting = this.#refundWaits.get(origin);
        this.#refundWaits.delete(origin);
        waiting?.wake();
      });
  }

  /** Resolves once this process has given tokens of `origin` back to its bucket (the next refund after the call). */
  refunded(origin: string): Promise<void> {
    // One promise shared by every caller until the next refund: waiting callers add nothing.
    let w = this.#refundWaits.get(origin);
    if (!w) {
      let wake = (): void => undefined;
      const promise = new Promise<void>((r) => (wake = r));
      w = { promise, wake };
      this.#refundWaits.set(origin, w);
    }
    return w.promise;
  }

  /** Stops the refresh; a `take` still waiting throws a retryable StagingTransportError (nothing goes uncapped). */
  close(): void {
    this.#closed = true;
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = null;
  }
}

/** Writes a live override of `origin`'s cap (null: uncapped until cleared). */
export async function setRateLimitOverride(redis: RedisClient, prefix: string, origin: string, limit: RateLimit | null): Promise<void> {
  await redis.hset(rateLimitsKey(prefix), origin, formatRateLimit(limit));
}

/** Removes the live override of `origin`: the config's cap applies again. Resolves whether one was set. */
export async function clearRateLimitOverride(redis: RedisClient, prefix: string, origin: string): Promise<boolean> {
  return (await redis.hdel(rateLimitsKey(prefix), origin)) > 0;
}

/** The overrides as stored, by origin. */
export async function readRateLimitOverrides(redis: RedisClient, prefix: string): Promise<Record<string, string>> {
  return redis.hgetall(rateLimitsKey(prefix));
}

/** One origin's cap as operators see it. */
export interface RateCap {
  origin: string;
  /** In force now; null: uncapped. */
  limit: RateLimit | null;
  /**
   * Where it comes from: the config as this process loaded it (`config`), the config a live
   * worker runs with, from its heartbeat (`worker`), or a live override in Redis (`override`).
   */
  source: 'config' | 'worker' | 'override';
}

/**
 * The caps in force by origin: the live overrides in Redis over the caps the live workers run
 * with (their heartbeats) over `configured` (this process's config), so that an operator
 * command run without the workers' config still shows their caps. An override or a heartbeat
 * cap that cannot be read is skipped (the workers ignore such an override too).
 */
export async function readRateCaps(redis: RedisClient, prefix: string, configured: Readonly<Record<string, RateLimit>>): Promise<RateCap[]> {
  const overrides = await readRateLimitOverrides(redis, prefix);
  const out = new Map<string, RateCap>();
  for (const [origin, limit] of Object.entries(configured)) out.set(origin, { origin, limit, source: 'config' });
  for (const worker of await listWorkers(redis, prefix, { prune: false })) {
    for (const [origin, text] of Object.entries(worker.rateLimits ?? {})) {
      try {
        out.set(origin, { origin, limit: parseRateLimit(text), source: 'worker' });
      } catch {
        // A heartbeat from a version that wrote another form: not shown.
      }
    }
  }
  for (const [origin, text] of Object.entries(overrides)) {
    try {
      out.set(origin, { origin, limit: parseRateLimit(text), source: 'override' });
    } catch {
      // Ignored by the workers as well.
    }
  }
  return [...out.values()].sort((a, b) => (a.origin === 'default' ? -1 : b.origin === 'default' ? 1 : a.origin.localeCompare(b.origin)));
}

import { compareStreamIds, errorMessage, nextStreamId, type Keys, type StreamRetention } from '@mirrorplane/core';
import type { Logger } from './logger.js';
import type { RedisClient } from './redis.js';
import { readGroup } from './stream-info.js';

/** Entries read per XRANGE when an entry-count limit needs the id at its cut. */
const COUNT_CHUNK = 1000;
/** At most this many chunks per pass, so one pass stays short; the next pass goes on. */
const MAX_CHUNKS = 50;

/**
 * The smallest id that is not finished, as a MINID bound: the oldest pending entry, or the
 * entry after the group's last-delivered id (everything after it is backlog). Null when the
 * group does not exist: then nothing is known to be finished.
 */
export async function unfinishedBound(redis: RedisClient, keys: Keys): Promise<string | null> {
  const group = await readGroup(redis, keys.stream, keys.group);
  if (!group) return null;
  const summary = (await redis.xpending(keys.stream, keys.group)) as [number, string | null, string | null, unknown];
  if (Number(summary[0]) > 0 && summary[1]) return summary[1];
  return nextStreamId(group.lastDeliveredId);
}

/**
 * Trims finished entries beyond the retention, and never an unfinished one: every cut is a
 * `XTRIM MINID` at or below the oldest unfinished entry. Returns how many entries went.
 */
export async function trimStream(redis: RedisClient, keys: Keys, retention: StreamRetention, now = Date.now()): Promise<number> {
  const bound = await unfinishedBound(redis, keys);
  if (bound === null) return 0;
  let trimmed = 0;
  if (retention.maxAgeMs !== null) {
    const byAge = `${Math.max(0, now - retention.maxAgeMs)}-0`;
    const cut = compareStreamIds(byAge, bound) < 0 ? byAge : bound;
    trimmed += Number(await redis.xtrim(keys.stream, 'MINID', cut));
  }
  if (retention.maxEntries !== null) {
    // Streams have no offsets: the id at the count's cut is found by reading the oldest
    // entries (only those strictly before the unfinished bound), a chunk at a time.
    for (let chunk = 0; chunk < MAX_CHUNKS; chunk++) {
      const excess = Number(await redis.xlen(keys.stream)) - retention.maxEntries;
      if (excess <= 0) break;
      const oldest = (await redis.xrange(keys.stream, '-', `(${bound}`, 'COUNT', Math.min(excess, COUNT_CHUNK))) as [string, unknown][];
      const last = oldest[oldest.length - 1];
      if (!last) break;
      trimmed += Number(await redis.xtrim(keys.stream, 'MINID', nextStreamId(last[0])));
      if (oldest.length < Math.min(excess, COUNT_CHUNK)) break;
    }
  }
  return trimmed;
}

export interface StreamTrimmerOptions {
  redis: RedisClient;
  keys: readonly Keys[];
  retention: StreamRetention;
  logger: Logger;
  intervalMs?: number;
}

/**
 * Runs `trimStream` every second over each partition's stream. Every worker runs one:
 * trims are idempotent, so several at once only repeat each other's work.
 */
export class StreamTrimmer {
  readonly #o: StreamTrimmerOptions;
  #timer: NodeJS.Timeout | null = null;
  #running: Promise<void> | null = null;

  constructor(options: StreamTrimmerOptions) {
    this.#o = options;
  }

  start(): void {
    this.#timer = setInterval(() => {
      this.#running ??= this.#pass().finally(() => {
        this.#running = null;
      });
    }, this.#o.intervalMs ?? 1000);
  }

  async #pass(): Promise<void> {
    for (const keys of this.#o.keys) {
      try {
        const n = await trimStream(this.#o.redis, keys, this.#o.retention);
        if (n > 0) this.#o.logger.debug({ stream: keys.stream, trimmed: n }, 'trimmed finished entries beyond the retention');
      } catch (error) {
        this.#o.logger.warn({ stream: keys.stream, err: errorMessage(error) }, 'trimming the stream failed; will try again');
      }
    }
  }

  async close(): Promise<void> {
    if (this.#timer) clearInterval(this.#timer);
    await this.#running;
  }
}

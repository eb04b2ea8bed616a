import type { Redis } from 'ioredis';
import { ORDER_MEMBER_LUA, errorMessage, splitId, type Keys, type OrderKeys } from '@mirrorplane/core';
import type { Logger } from '@mirrorplane/runtime';

export interface AckBatcherOptions {
  redis: Redis;
  /** Every partition's keys, by partition number. */
  parts: readonly Keys[];
  /** Delete finished entries (XDEL) as well as acknowledge them; false with STREAM_RETENTION. */
  deleteFinished: boolean;
  /**
   * Per-key ordering (ORDER_BY): each partition's ordering keys, and what to do once an
   * acknowledgement that released keys went through (the next parked entry of each may run).
   */
  order?: { keys: readonly OrderKeys[]; released(sets: string[]): void };
  logger: Logger;
}

/** Where a finished entry sits in per-key ordering: its key's set and its member there. */
export interface OrderRelease {
  set: string;
  member: string;
}

const RETRY_MIN_MS = 100;
/** Ids per script call: Lua's unpack() has a stack limit of a few thousand values. */
const ACK_BATCH = 1000;

/** XACK, then XDEL when ARGV[2] is 1, of the ids ARGV[3…] of stream KEYS[1], group ARGV[1]. */
const ACK_SCRIPT = `
local ids = {}
for i = 3, #ARGV do ids[#ids + 1] = ARGV[i] end
redis.call('XACK', KEYS[1], ARGV[1], unpack(ids))
if ARGV[2] == '1' then redis.call('XDEL', KEYS[1], unpack(ids)) end
return #ids
`;

/**
 * The same, with per-key ordering, in one step: an entry leaves its key's set (the next one of
 * its key may run) only together with its acknowledgement, never before it is durable (a
 * worker dying or stopping in between would leave it pending, claimed and replayed after later
 * entries of its key). Every id acknowledged also leaves `unkeyed` (an entry ended without
 * being registered: deleted, poison, dropped) so it never holds the partition back.
 * KEYS: stream, unkeyed, heads, set_1…set_k. ARGV: group, del, n, id_1…id_n, member_1…member_k.
 */
const ACK_ORDER_SCRIPT = `${ORDER_MEMBER_LUA}local n = tonumber(ARGV[3])
local ids = {}
for i = 4, 3 + n do ids[#ids + 1] = ARGV[i] end
redis.call('XACK', KEYS[1], ARGV[1], unpack(ids))
if ARGV[2] == '1' then redis.call('XDEL', KEYS[1], unpack(ids)) end
for _, id in ipairs(ids) do
  local m = sortable(id)
  redis.call('ZREM', KEYS[2], m)
  redis.call('HDEL', KEYS[3], 'u:' .. m)
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
for j = 4, #KEYS do
  local m = ARGV[3 + n + j - 3]
  redis.call('ZREM', KEYS[j], m)
  redis.call('HDEL', KEYS[3], m)
  local h = redis.call('ZRANGE', KEYS[j], 0, 0)
  -- Stamping the next one's wait allocates (refused on a full Redis): optional, a check stamps it too.
  if h[1] and not redis.call('HGET', KEYS[3], h[1]) then redis.pcall('HSET', KEYS[3], h[1], now) end
end
return #ids
`;

interface AckCommand {
  mirrorplaneAck(stream: string, group: string, del: '0' | '1', ...ids: string[]): Promise<number>;
  /** Keys counted first (no fixed number of keys). */
  mirrorplaneAckOrder(numKeys: number, ...keysAndArgs: string[]): Promise<number>;
}
const RETRY_MAX_MS = 2000;

/**
 * Acknowledges finished entries: those finished in one event-loop turn go to Redis together.
 *
 * A finished entry is never replayed again because its acknowledgement failed: until Redis
 * takes it, the id stays here (`has()` says so, the claimer refreshes it instead of replaying
 * it) and the acknowledgement is sent again with a capped backoff.
 *
 * Redis at `maxmemory` with `noeviction` refuses every command flagged `denyoom` and, inside
 * MULTI, every command at all (queuing allocates): a MULTI fails whole on a full Redis. XACK and
 * XDEL are not `denyoom` (they free memory), so they go together in one script (atomic, and run
 * on a full Redis since the script calls only those two), one call per partition and batch (a
 * partition's keys share a hash tag); the replayed counter (INCRBY, `denyoom`) is sent apart and
 * kept for later when refused.
 */
export class AckBatcher {
  readonly #redis: Redis;
  readonly #parts: readonly Keys[];
  readonly #delete: boolean;
  readonly #logger: Logger;
  readonly #order: AckBatcherOptions['order'];
  /** Ordering releases of ids waiting for their acknowledgement (ORDER_BY). */
  readonly #releases = new Map<string, OrderRelease>();
  /** Finished ids not yet acknowledged, by qualified id → when they finished (ms since the epoch). */
  readonly #waiting = new Map<string, number>();
  /**
   * Ids acknowledged recently → when Redis confirmed it (ms since the epoch): an XAUTOCLAIM sent
   * before the acknowledgement can answer with the entry after the acknowledgement went through,
   * and the claimer must not start it again. Trimmed by `forgetBefore`.
   */
  readonly #recent = new Map<string, number>();
  /** Ids queued since the last flush began. */
  #queued: string[] = [];
  /** Replays finished and not yet added to the counter. */
  #replayed = 0;
  #scheduled = false;
  #flushing: Promise<void> = Promise.resolve();
  #retryTimer: NodeJS.Timeout | null = null;
  #backoff = RETRY_MIN_MS;
  #failing = false;
  #closed = false;

  constructor(options: AckBatcherOptions) {
    this.#redis = options.redis;
    this.#parts = options.parts;
    this.#delete = options.deleteFinished;
    this.#logger = options.logger;
    this.#order = options.order;
    if (!('mirrorplaneAck' in this.#redis)) this.#redis.defineCommand('mirrorplaneAck', { numberOfKeys: 1, lua: ACK_SCRIPT });
    if (!('mirrorplaneAckOrder' in this.#redis)) this.#redis.defineCommand('mirrorplaneAckOrder', { lua: ACK_ORDER_SCRIPT });
  }

  /** Finished entries whose acknowledgement Redis has not taken yet. */
  get waiting(): number {
    return this.#waiting.size;
  }

  /** Whether `id` finished here and waits for its acknowledgement. */
  has(id: string): boolean {
    return this.#waiting.has(id);
  }

  /** Whether `id` waits for its acknowledgement, or Redis confirmed it at or after `since` (ms since the epoch). */
  finishedSince(id: string, since: number): boolean {
    if (this.#waiting.has(id)) return true;
    const at = this.#recent.get(id);
    return at !== undefined && at >= since;
  }

  /** Forgets recently finished ids older than `before` (ms since the epoch). */
  forgetBefore(before: number): void {
    // Insertion order is acknowledgement order, so the oldest come first.
    for (const [id, at] of this.#recent) {
      if (at >= before) break;
      this.#recent.delete(id);
    }
  }

  /** Ids waiting for their acknowledgement since before `before` (ms since the epoch). */
  waitingSince(before: number): string[] {
    const out: string[] = [];
    for (const [id, since] of this.#waiting) if (since < before) out.push(id);
    return out;
  }

  /**
   * Marks `id` (a qualified id) finished; `replayed` counts it in the replayed counter. `release`:
   * its place in per-key ordering, left in the same step as the acknowledgement.
   */
  finish(id: string, replayed: boolean, release?: OrderRelease | null): void {
    if (replayed) this.#replayed += 1;
    if (release) this.#releases.set(id, release);
    if (this.#waiting.has(id)) return;
    this.#waiting.set(id, Date.now());
    this.#queued.push(id);
    if (!this.#scheduled) {
      this.#scheduled = true;
      setImmediate(() => {
        this.#scheduled = false;
        this.#flushing = this.#flushing.then(() => this.#flush());
      });
    }
  }

  /** Sends what is queued now; resolves when Redis answered (taken or refused). */
  flush(): Promise<void> {
    this.#flushing = this.#flushing.then(() => this.#flush());
    return this.#flushing;
  }

  /** Sends every waiting acknowledgement again, until all are taken or `deadline` passes. */
  async drain(deadline: number): Promise<void> {
    this.#closed = true;
    if (this.#retryTimer) clearTimeout(this.#retryTimer);
    for (let wait = RETRY_MIN_MS; ; wait = Math.min(wait * 2, RETRY_MAX_MS)) {
      this.#queued = [...this.#waiting.keys()];
      await this.flush();
      if ((this.#waiting.size === 0 && this.#replayed === 0) || Date.now() + wait > deadline) return;
      await new Promise((r) => setTimeout(r, wait));
    }
  }

  async #flush(): Promise<void> {
    const ids = this.#queued;
    this.#queued = [];
    let failed = false;
    for (const [p, qualified] of byPartition(ids)) {
      const keys = this.#parts[p] as Keys;
      const raw = qualified.map(rawIdOf);
      try {
        // XACK and XDEL together: a finished entry leaves Redis, so memory follows the backlog.
        const redis = this.#redis as unknown as AckCommand;
        const released: string[] = [];
        for (let i = 0; i < raw.length; i += ACK_BATCH) {
          const batch = raw.slice(i, i + ACK_BATCH);
          if (this.#order) {
            const ok = this.#order.keys[p] as OrderKeys;
            const rel = qualified
              .slice(i, i + ACK_BATCH)
              .map((q) => this.#releases.get(q))
              .filter((r): r is OrderRelease => r !== undefined);
            const keyList = [keys.stream, ok.unkeyed, ok.heads, ...rel.map((r) => r.set)];
            await redis.mirrorplaneAckOrder(
              keyList.length,
              ...keyList,
              keys.group,
              this.#delete ? '1' : '0',
              String(batch.length),
              ...batch,
              ...rel.map((r) => r.member),
            );
            released.push(...rel.map((r) => r.set));
          } else {
            await redis.mirrorplaneAck(keys.stream, keys.group, this.#delete ? '1' : '0', ...batch);
          }
        }
        if (released.length > 0) this.#order?.released(released);
        const now = Date.now();
        const releases = this.#releases.size > 0;
        for (const q of qualified) {
          if (releases) this.#releases.delete(q);
          this.#waiting.delete(q);
          this.#recent.delete(q);
          this.#recent.set(q, now);
        }
        // Bounded even if no claim round trims it (claim rounds are at most 5 s apart).
        this.forgetBefore(now - 60_000);
      } catch (error) {
        failed = true;
        if (!this.#failing) {
          this.#logger.error(
            { count: qualified.length, err: errorMessage(error) },
            'acknowledging finished entries failed; retrying (they are not replayed again)',
          );
        }
      }
    }
    if (this.#replayed > 0) {
      const count = this.#replayed;
      this.#replayed = 0;
      try {
        // Status sums every partition's counter, so one partition's counter takes them all.
        await this.#redis.incrby((this.#parts[0] as Keys).replayed, count);
      } catch (error) {
        // Refused (Redis full, say): kept and added with a later flush; the entries are acknowledged anyway.
        this.#replayed += count;
        failed = true;
        if (!this.#failing) this.#logger.warn({ count, err: errorMessage(error) }, 'counting replays failed; will add them later');
      }
    }
    if (failed) {
      this.#failing = true;
      this.#scheduleRetry();
    } else if (this.#failing && this.#waiting.size === 0) {
      this.#failing = false;
      this.#backoff = RETRY_MIN_MS;
      this.#logger.info('acknowledgements go through again');
    }
  }

  #scheduleRetry(): void {
    if (this.#retryTimer !== null || this.#closed) return;
    const wait = this.#backoff;
    this.#backoff = Math.min(this.#backoff * 2, RETRY_MAX_MS);
    this.#retryTimer = setTimeout(() => {
      this.#retryTimer = null;
      // Everything still waiting goes again, not only the last batch.
      const queued = new Set(this.#queued);
      for (const id of this.#waiting.keys()) if (!queued.has(id)) this.#queued.push(id);
      void this.flush();
    }, wait);
  }
}

/** Qualified ids (see `qualifyId`) grouped by partition, kept qualified. */
function byPartition(ids: readonly string[]): Map<number, string[]> {
  const out = new Map<number, string[]>();
  for (const q of ids) {
    // splitId's answer without its object per id (this runs for every acknowledgement).
    const tilde = q.indexOf('~');
    const partition = tilde === -1 ? 0 : splitId(q).partition;
    const list = out.get(partition);
    if (list) list.push(q);
    else out.set(partition, [q]);
  }
  return out;
}

/** The stream id of a qualified id (`splitId(q).id`). */
function rawIdOf(q: string): string {
  return q.indexOf('~') === -1 ? q : splitId(q).id;
}

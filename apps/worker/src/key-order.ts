import type { Redis } from 'ioredis';
import {
  decodeEntry,
  errorMessage,
  openEntryFields,
  orderKeyDigest,
  orderKeyOf,
  orderKeys,
  orderMember,
  splitId,
  type EntryCipher,
  type MirroredRequest,
  type OrderBy,
  type OrderKeys,
  ORDER_MEMBER_LUA,
} from '@mirrorplane/core';
import type { Logger } from '@mirrorplane/runtime';
import type { StreamReply } from './read-loop.js';

/**
 * Per-key ordering across workers (ORDER_BY). Each partition keeps, in Redis, one sorted set
 * per key of its unfinished entries in acceptance order (members are sortable stream ids, all
 * at score 0), and one set of entries delivered whose key is not registered yet (`unkeyed`).
 *
 * - Reading: one script delivers entries (XREADGROUP, non-blocking) and adds them to `unkeyed`
 *   in the same step, so no entry is ever delivered and invisible. The worker then computes
 *   each entry's key and registers it (adds it to its key's set, removes it from `unkeyed`).
 * - Running: an entry runs when it is the first of its key's set and no entry older than it is
 *   in `unkeyed` (an older entry of the same key could still be on its way to the set). Within
 *   one stream, an older entry was delivered by an earlier command, so it is always in one of
 *   the two sets until it finishes: that is the whole argument. Entries of one key must share
 *   a stream (with partitions, PARTITION_KEY is the order key; loadConfig checks it).
 * - Finishing (replayed, dropped, failed) removes the entry from its set only once the end is
 *   durable, never before: a stream entry in the script that acknowledges it (AckBatcher), a
 *   retry job after BullMQ recorded it completed or failed. A worker that stops or dies in
 *   between leaves the entry first of its key, so when it is claimed and replayed again it is
 *   still in turn. Every acknowledgement also takes the entry out of `unkeyed`.
 * - An entry handed to the retry queue stays first of its key until its retry job finishes,
 *   holding the later ones back for at most ORDER_MAX_WAIT_MS after it became first; then they
 *   overtake it (counted). The same bound covers an entry whose worker died (its claim normally
 *   comes first, at CLAIM_IDLE_MS), an entry that vanished from the stream, and an older entry
 *   left in `unkeyed` (its wait counted from when a later entry first found it there).
 * - Waiting entries hold no slot and no rate token (they are parked, at most `maxParked`); the lowest parked
 *   entry of each key is checked again every POLL_MS, and at once when one of its key finishes
 *   here. Parked entries are refreshed with the running ones, so no other worker claims them.
 */

const SORTABLE = ORDER_MEMBER_LUA;

/** KEYS: stream, unkeyed. ARGV: group, consumer, count. The XREADGROUP reply, each entry recorded as unkeyed. */
const READ_SCRIPT = `${SORTABLE}
local r = redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', ARGV[3], 'STREAMS', KEYS[1], '>')
if r then
  for _, e in ipairs(r[1][2]) do redis.call('ZADD', KEYS[2], 0, sortable(e[1])) end
end
return r
`;

/**
 * 1: runnable; 2: runnable by overtaking entries stuck longer than the wait; 0: wait.
 * `now` from Redis's clock: every worker measures ORDER_MAX_WAIT_MS on the same one.
 */
const CHECK = `
local function now()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function check(unkeyed, key, heads, me, maxWait, forget)
  local t = now()
  local skipped = 0
  -- An older entry not registered yet may be of this key: wait for it, at most the wait (it
  -- may belong to a dead worker, or have been deleted before anyone registered it).
  for _, u in ipairs(redis.call('ZRANGE', unkeyed, 0, 99)) do
    if u >= me then break end
    local since = tonumber(redis.call('HGET', heads, 'u:' .. u))
    if not since then
      redis.call('HSET', heads, 'u:' .. u, t)
      return 0
    end
    if maxWait > 0 and t - since > maxWait then
      skipped = skipped + 1
      if forget > 0 and t - since > forget then
        redis.call('ZREM', unkeyed, u)
        redis.call('HDEL', heads, 'u:' .. u)
      end
    else
      return 0
    end
  end
  for _, m in ipairs(redis.call('ZRANGE', key, 0, 99)) do
    local since = tonumber(redis.call('HGET', heads, m))
    if m == me then
      if not since then redis.call('HSET', heads, m, t) end
      if skipped > 0 then return 2 end
      return 1
    end
    if not since then
      redis.call('HSET', heads, m, t)
      return 0
    end
    if maxWait > 0 and t - since > maxWait then
      skipped = skipped + 1
      -- First for longer than any retry can last: its entry is gone; stop walking past it.
      if forget > 0 and t - since > forget then
        redis.call('ZREM', key, m)
        redis.call('HDEL', heads, m)
      end
    else
      return 0
    end
  end
  return 0
end
`;

/** KEYS: unkeyed, key set, heads. ARGV: member, has key (1/0), max wait, forget after. Registers, then checks. */
const REGISTER_SCRIPT = `${CHECK}
redis.call('HDEL', KEYS[3], 'u:' .. ARGV[1])
if ARGV[2] == '0' then
  redis.call('ZREM', KEYS[1], ARGV[1])
  return 1
end
redis.call('ZADD', KEYS[2], 0, ARGV[1])
redis.call('ZREM', KEYS[1], ARGV[1])
return check(KEYS[1], KEYS[2], KEYS[3], ARGV[1], tonumber(ARGV[3]), tonumber(ARGV[4]))
`;

/** KEYS: unkeyed, key set, heads. ARGV: member, max wait, forget after. */
const CHECK_SCRIPT = `${CHECK}
return check(KEYS[1], KEYS[2], KEYS[3], ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]))
`;

/** KEYS: key set, heads. ARGV: member. Removes a finished entry; the next one's wait starts now. */
const DONE_SCRIPT = `
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
local h = redis.call('ZRANGE', KEYS[1], 0, 0)
if h[1] and not redis.call('HGET', KEYS[2], h[1]) then
  local t = redis.call('TIME')
  redis.call('HSET', KEYS[2], h[1], tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
end
return 1
`;

/** How often the first parked entry of each key is checked again, in ms. */
const POLL_MS = 20;

type Scripts = {
  mpOrderReadBuffer(stream: string, unkeyed: string, group: string, consumer: string, count: number): Promise<unknown>;
  mpOrderRegister(unkeyed: string, key: string, heads: string, member: string, hasKey: string, maxWait: number, forget: number): Promise<number>;
  mpOrderCheck(unkeyed: string, key: string, heads: string, member: string, maxWait: number, forget: number): Promise<number>;
  mpOrderDone(key: string, heads: string, member: string): Promise<number>;
};

/** One entry waiting for its turn here. */
interface Parked {
  id: string;
  fields: Buffer[];
  attempt: number;
  prepaid: boolean;
  /** Where its key's set is, and its member there. */
  set: string;
  member: string;
  partition: number;
  /** When it was parked or last refreshed (ms), for the claimer's refresh. */
  since: number;
}

export interface KeyOrderOptions {
  /** For the scripts (not the blocking reader). */
  commands: Redis;
  prefix: string;
  partitions: number;
  orderBy: OrderBy;
  cipher: EntryCipher | null;
  /** ORDER_MAX_WAIT_MS; 0: wait for ever. */
  maxWaitMs: number;
  /**
   * A first entry overtaken and first for longer than this (ms) is removed from its set: no retry
   * lasts that long (RETRY_WINDOW_MS + ORDER_MAX_WAIT_MS + CLAIM_IDLE_MS), so its entry is gone
   * (purged, say) and walking past it on every check would only cost. 0: never.
   */
  forgetMs: number;
  /** Entries parked at most (read no more while full). */
  maxParked: number;
  /** Runs an entry whose turn came (the worker's own start). */
  run: (id: string, fields: Buffer[], attempt: number, prepaid: boolean) => void;
  /** Whether `id` runs or waits for its acknowledgement here (not to be admitted twice). */
  busy: (id: string) => boolean;
  /** Gives back a rate token an entry took and will not use. */
  refund: () => void;
  /** An entry ran ahead of older ones of its key that were stuck longer than the wait. */
  overtook: () => void;
  logger: Logger;
}

/** Per-key ordering for one worker: reads through the script, parks what must wait, runs what may. See the file comment. */
export class KeyOrder {
  readonly #o: KeyOrderOptions;
  readonly #parts: OrderKeys[];
  readonly #redis: Redis & Scripts;
  /** Parked entries by id. */
  readonly #parked = new Map<string, Parked>();
  /** Parked ids by key set, oldest first. */
  readonly #byKey = new Map<string, Parked[]>();
  #timer: NodeJS.Timeout | null = null;
  #polling = false;

  constructor(o: KeyOrderOptions) {
    this.#o = o;
    this.#parts = Array.from({ length: o.partitions }, (_, p) => orderKeys(o.prefix, p));
    const r = o.commands as Redis & Scripts;
    if (!('mpOrderRead' in r)) {
      r.defineCommand('mpOrderRead', { numberOfKeys: 2, lua: READ_SCRIPT });
      r.defineCommand('mpOrderRegister', { numberOfKeys: 3, lua: REGISTER_SCRIPT });
      r.defineCommand('mpOrderCheck', { numberOfKeys: 3, lua: CHECK_SCRIPT });
      r.defineCommand('mpOrderDone', { numberOfKeys: 2, lua: DONE_SCRIPT });
    }
    this.#redis = r;
  }

  /** Entries parked here now. */
  get parked(): number {
    return this.#parked.size;
  }

  /** Room for more entries to be read. */
  get room(): number {
    return this.#o.maxParked - this.#parked.size;
  }

  has(id: string): boolean {
    return this.#parked.has(id);
  }

  /** Parked ids parked or refreshed before `before` (ms). */
  stale(before: number): string[] {
    const out: string[] = [];
    for (const p of this.#parked.values()) if (p.since < before) out.push(p.id);
    return out;
  }

  touch(id: string, now = Date.now()): void {
    const p = this.#parked.get(id);
    if (p) p.since = now;
  }

  /** Every parked id (handed back at shutdown). */
  ids(): string[] {
    return [...this.#parked.keys()];
  }

  start(): void {
    this.#timer = setInterval(() => void this.#poll(), POLL_MS);
    this.#timer.unref();
  }

  close(): void {
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = null;
  }

  /** One read of partition `p` through the script (delivers and records as unkeyed in one step). */
  async read(p: number, group: string, consumer: string, count: number): Promise<StreamReply> {
    const k = this.#parts[p] as OrderKeys;
    return (await this.#redis.mpOrderReadBuffer(k.stream, k.unkeyed, group, consumer, count)) as StreamReply;
  }

  /** The key set and member of an entry, or null when it has no key (or cannot be decoded: it is not ordered). */
  #place(id: string, request: MirroredRequest | null): { set: string; member: string; partition: number } | null {
    const { id: raw, partition } = splitId(id);
    const k = this.#parts[partition] as OrderKeys;
    const key = request === null ? null : orderKeyOf(this.#o.orderBy, request);
    if (key === null) return null;
    const digest = this.#o.cipher ? (text: string) => (this.#o.cipher as EntryCipher).digestName(text) : undefined;
    return { set: k.key(orderKeyDigest(key, digest)), member: orderMember(raw), partition };
  }

  #decode(id: string, fields: Buffer[]): MirroredRequest | null {
    try {
      return decodeEntry(id, openEntryFields(splitId(id).id, fields, this.#o.cipher)).request;
    } catch {
      return null;
    }
  }

  /**
   * Registers an entry read or claimed, then runs it now or parks it. Never throws: a failure
   * leaves the entry pending (taken over after CLAIM_IDLE_MS, registered again then).
   */
  admit(id: string, fields: Buffer[], attempt: number, prepaid: boolean): void {
    if (this.#parked.has(id) || this.#o.busy(id)) {
      if (prepaid) this.#o.refund();
      return;
    }
    void this.#admit(id, fields, attempt, prepaid);
  }

  async #admit(id: string, fields: Buffer[], attempt: number, prepaid: boolean): Promise<void> {
    const { id: raw, partition } = splitId(id);
    const k = this.#parts[partition] as OrderKeys;
    const place = this.#place(id, this.#decode(id, fields));
    let verdict: number;
    try {
      verdict = place
        ? Number(await this.#redis.mpOrderRegister(k.unkeyed, place.set, k.heads, place.member, '1', this.#o.maxWaitMs, this.#o.forgetMs))
        : Number(await this.#redis.mpOrderRegister(k.unkeyed, k.unkeyed, k.heads, orderMember(raw), '0', this.#o.maxWaitMs, this.#o.forgetMs));
    } catch (error) {
      this.#o.logger.warn({ entryId: id, err: errorMessage(error) }, 'registering an entry for ordering failed; it will be taken over later');
      if (prepaid) this.#o.refund();
      return;
    }
    if (verdict === 2) this.#o.overtook();
    if (verdict > 0 || place === null) {
      this.#o.run(id, fields, attempt, prepaid);
      return;
    }
    // A token held while parked would be spent later, on top of what the bucket refilled
    // meanwhile (the cap's bound perSecond × T + burst would not hold): given back now, the entry
    // takes one when its turn comes.
    if (prepaid) this.#o.refund();
    const parked: Parked = { id, fields, attempt, prepaid: false, set: place.set, member: place.member, partition, since: Date.now() };
    this.#parked.set(id, parked);
    const queue = this.#byKey.get(place.set) ?? [];
    // Kept oldest first: an entry claimed later may be older than those parked.
    let i = queue.length;
    while (i > 0 && (queue[i - 1] as Parked).member > parked.member) i--;
    queue.splice(i, 0, parked);
    this.#byKey.set(place.set, queue);
  }

  /**
   * Where a finished entry leaves per-key ordering (null: it has no key), for the acknowledgement
   * that ends it to release it in the same step (see AckBatcher). `request` null: decoded from `fields`.
   */
  placeOf(id: string, request: MirroredRequest | null, fields?: Buffer[]): { set: string; member: string } | null {
    const place = this.#place(id, request ?? (fields ? this.#decode(id, fields) : null));
    return place === null ? null : { set: place.set, member: place.member };
  }

  /** Acknowledgements that released these key sets went through: the next parked entry of each may run. */
  released(sets: readonly string[]): void {
    const next: Parked[] = [];
    for (const set of new Set(sets)) {
      const first = this.#byKey.get(set)?.[0];
      if (first) next.push(first);
    }
    if (next.length > 0) void this.#check(next);
  }

  /**
   * An entry that left the stream earlier (handed to the retry queue) finished for good, and
   * BullMQ recorded it so (the job completed or failed): the next one of its key may run. Never
   * throws; refused, the next one waits up to ORDER_MAX_WAIT_MS.
   */
  async finish(id: string, request: MirroredRequest | null, fields?: Buffer[]): Promise<void> {
    const place = this.#place(id, request ?? (fields ? this.#decode(id, fields) : null));
    if (place === null) return;
    const k = this.#parts[place.partition] as OrderKeys;
    try {
      await this.#redis.mpOrderDone(place.set, k.heads, place.member);
    } catch (error) {
      this.#o.logger.warn(
        { entryId: id, err: errorMessage(error) },
        'releasing an entry for ordering failed; the next of its key waits up to ORDER_MAX_WAIT_MS',
      );
      return;
    }
    this.released([place.set]);
  }

  async #poll(): Promise<void> {
    if (this.#polling || this.#byKey.size === 0) return;
    this.#polling = true;
    try {
      await this.#check([...this.#byKey.values()].map((q) => q[0] as Parked));
    } finally {
      this.#polling = false;
    }
  }

  /** Checks the given parked entries (each the oldest of its key here) and runs those whose turn came. */
  async #check(candidates: Parked[]): Promise<void> {
    if (candidates.length === 0) return;
    const pipeline = this.#redis.pipeline() as unknown as Scripts & { exec(): Promise<[Error | null, unknown][] | null> };
    for (const c of candidates) {
      const k = this.#parts[c.partition] as OrderKeys;
      void pipeline.mpOrderCheck(k.unkeyed, c.set, k.heads, c.member, this.#o.maxWaitMs, this.#o.forgetMs);
    }
    let results: [Error | null, unknown][] | null;
    try {
      results = await pipeline.exec();
    } catch (error) {
      this.#o.logger.debug({ err: errorMessage(error) }, 'checking parked entries failed; will try again');
      return;
    }
    candidates.forEach((c, i) => {
      const [error, verdict] = results?.[i] ?? [null, 0];
      if (error || Number(verdict) === 0 || this.#parked.get(c.id) !== c) return;
      if (Number(verdict) === 2) this.#o.overtook();
      this.#parked.delete(c.id);
      const queue = this.#byKey.get(c.set);
      const at = queue?.indexOf(c) ?? -1;
      if (queue && at !== -1) queue.splice(at, 1);
      if (queue?.length === 0) this.#byKey.delete(c.set);
      this.#o.run(c.id, c.fields, c.attempt, c.prepaid);
    });
  }

  /** Forgets every parked entry (shutdown: they were handed back); gives back their prepaid tokens. */
  drop(): string[] {
    const ids = this.ids();
    for (const p of this.#parked.values()) if (p.prepaid) this.#o.refund();
    this.#parked.clear();
    this.#byKey.clear();
    return ids;
  }
}

import type { Redis } from 'ioredis';
import { errorMessage, qualifyId, type Keys } from '@mirrorplane/core';
import { ensureGroup, type Logger } from '@mirrorplane/runtime';
import type { SlotAccounting } from './slot-accounting.js';

/** One XREADGROUP/XAUTOCLAIM reply with Buffer ids and fields (fields null: deleted since). */
export type StreamReply = [Buffer, [Buffer, Buffer[] | null][]][] | null;

/** ioredis has Buffer-returning variants of every command; its types omit these two. */
export interface BufferCommands {
  xreadgroupBuffer(...args: (string | number)[]): Promise<unknown>;
  xautoclaimBuffer(...args: (string | number)[]): Promise<unknown>;
}

export interface ReadLoopOptions {
  /** A connection of its own: XREADGROUP … BLOCK holds it. */
  reader: Redis;
  /** For remaking a missing group. */
  commands: Redis;
  parts: readonly Keys[];
  consumer: string;
  slots: SlotAccounting;
  /** Free slots that make the loop read again. */
  refillAt: number;
  /**
   * Called with each entry read, by qualified id; fields null when the entry was deleted.
   * `prepaid`: a rate token of the default origin was taken for it (see `tokens`).
   */
  onEntry: (id: string, fields: Buffer[] | null, prepaid: boolean) => void;
  /**
   * The default origin's rate cap, when it has one: the loop takes tokens before it reads and
   * reads at most as many entries as it was granted, so capped entries wait in the stream (the
   * backlog), not in slots. Tokens not used by an entry read are given back.
   */
  tokens?: ReadTokens;
  /**
   * Reads partition `p` another way than XREADGROUP (per-key ordering's read script, which
   * cannot block): the loop then polls every partition, sleeping briefly after an empty round.
   */
  read?: (p: number, count: number) => Promise<StreamReply>;
  /** Entries the loop may read beyond the free slots' count, at most (parked entries hold no slot). */
  room?: () => number;
  /** Whether the loop must end. */
  stopping: () => boolean;
  /** Resolves when the loop must end, to cut an idle wait short. */
  stopped: Promise<void>;
  logger: Logger;
}

/** Rate tokens for the read loop (`RateLimiter.tryTake`/`refund` of the default origin). */
export interface ReadTokens {
  /** Whether a cap is in force now (when not, reads are not sized by tokens). */
  capped(): boolean;
  take(want: number): Promise<{ granted: number; waitMs: number }>;
  refund(n: number): void;
  /**
   * Resolves once tokens were given back to the bucket (by this worker): a token refunded when
   * its entry was routed to another origin is read with again at once, not after the refill
   * wait, so requests to other origins do not queue behind the default origin's cap.
   */
  refunded?(): Promise<void>;
}

const READ_BLOCK_MS = 1000;
/** A capped read blocks for less: the tokens it holds meanwhile are not available to other workers. */
const CAPPED_BLOCK_MS = 100;
/** The longest a capped loop sleeps before asking for tokens again: a raised cap is seen within this (ms). */
const MAX_TOKEN_WAIT_MS = 250;
/** With several partitions, how long a worker waits after a round that found nothing. */
const IDLE_POLL_MS = 50;

export { READ_BLOCK_MS };

/**
 * Reads the stream through the consumer group while slots are free: one blocking read at a time
 * on one partition, a round over them on several. Never throws: a failed read is logged and
 * tried again with a capped backoff. Reads only as many entries as there are free slots, so an
 * entry read always gets a slot.
 */
export function runReadLoop(o: ReadLoopOptions): Promise<void> {
  return o.parts.length === 1 && !o.read ? runBlocking(o) : runRoundRobin(o);
}

/** Free slots, bounded by the room the caller has (per-key ordering's parking). */
function freeOf(o: ReadLoopOptions): number {
  return o.room ? Math.min(o.slots.free, o.room()) : o.slots.free;
}

async function runBlocking(o: ReadLoopOptions): Promise<void> {
  const keys = o.parts[0] as Keys;
  let backoff = 100;
  while (!o.stopping()) {
    const free = o.slots.free;
    // Under load slots free up one at a time; reading each time would cost an XREADGROUP
    // per entry. Reading once a quarter of the slots is free costs one per many entries.
    if (free < o.refillAt) {
      await o.slots.changed();
      continue;
    }
    const granted = await grant(o, free);
    if (granted === null) continue;
    let reply: StreamReply;
    try {
      reply = (await (o.reader as unknown as BufferCommands).xreadgroupBuffer(
        'GROUP',
        keys.group,
        o.consumer,
        'COUNT',
        granted.count,
        'BLOCK',
        granted.prepaid ? CAPPED_BLOCK_MS : READ_BLOCK_MS,
        'STREAMS',
        keys.stream,
        '>',
      )) as StreamReply;
      backoff = 100;
    } catch (error) {
      if (granted.prepaid) o.tokens?.refund(granted.count);
      if (o.stopping()) break;
      backoff = await readFailed(o, keys, error, backoff);
      continue;
    }
    const used = deliver(o, reply, 0, granted.prepaid);
    if (granted.prepaid && used < granted.count) o.tokens?.refund(granted.count - used);
  }
}

/**
 * How many entries the next read may take: `free`, or with a cap in force the tokens granted
 * (at most `free`). Null when no token was granted: the loop has waited (or failed and backed
 * off) and asks again.
 */
async function grant(o: ReadLoopOptions, free: number): Promise<{ count: number; prepaid: boolean } | null> {
  if (!o.tokens?.capped()) return { count: free, prepaid: false };
  let waitMs: number;
  try {
    const r = await o.tokens.take(free);
    if (r.granted > 0) return { count: r.granted, prepaid: true };
    waitMs = Math.min(MAX_TOKEN_WAIT_MS, Math.max(1, r.waitMs));
  } catch (error) {
    o.logger.warn({ err: errorMessage(error) }, 'taking rate tokens failed; retrying');
    waitMs = 500;
  }
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([new Promise((r) => (timer = setTimeout(r, waitMs))), o.stopped, ...(o.tokens.refunded ? [o.tokens.refunded()] : [])]);
  clearTimeout(timer);
  return null;
}

/**
 * Several partitions: a blocking read on one would hold the free slots while the others
 * have work (and a cluster cannot block on streams of several slots at once). So each
 * round reads every partition without blocking, starting one further each time and
 * sharing the free slots evenly; an idle round sleeps briefly before the next.
 */
async function runRoundRobin(o: ReadLoopOptions): Promise<void> {
  const n = o.parts.length;
  let start = 0;
  let backoff = 100;
  while (!o.stopping()) {
    if (o.slots.free < o.refillAt) {
      await o.slots.changed();
      continue;
    }
    if (freeOf(o) <= 0) {
      // Parking is full: entries wait for their turn; look again shortly.
      await Promise.race([new Promise((r) => setTimeout(r, IDLE_POLL_MS)), o.stopped]);
      continue;
    }
    const granted = await grant(o, freeOf(o));
    if (granted === null) continue;
    let budget = granted.count;
    let got = 0;
    let failed = false;
    for (let i = 0; i < n && !o.stopping(); i++) {
      const p = (start + i) % n;
      const free = Math.min(freeOf(o), budget);
      if (free <= 0) break;
      const keys = o.parts[p] as Keys;
      const count = Math.max(1, Math.ceil(free / (n - i)));
      try {
        const reply = o.read
          ? await o.read(p, count)
          : ((await (o.reader as unknown as BufferCommands).xreadgroupBuffer(
              'GROUP',
              keys.group,
              o.consumer,
              'COUNT',
              count,
              'STREAMS',
              keys.stream,
              '>',
            )) as StreamReply);
        const used = deliver(o, reply, p, granted.prepaid);
        got += used;
        budget -= used;
      } catch (error) {
        if (o.stopping()) break;
        backoff = await readFailed(o, keys, error, backoff);
        failed = true;
        break;
      }
    }
    if (granted.prepaid && budget > 0) o.tokens?.refund(budget);
    start = (start + 1) % n;
    if (!failed) backoff = 100;
    if (got === 0 && !failed && !o.stopping()) {
      await Promise.race([new Promise((r) => setTimeout(r, IDLE_POLL_MS)), o.stopped]);
    }
  }
}

/** Hands each entry of a reply to `onEntry`; returns how many were there to replay (deleted ones use no token). */
function deliver(o: ReadLoopOptions, reply: StreamReply, p: number, prepaid: boolean): number {
  let count = 0;
  for (const [, entries] of reply ?? []) {
    for (const [idBuffer, fields] of entries) {
      if (fields !== null) count += 1;
      o.onEntry(qualifyId(idBuffer.toString(), p), fields, prepaid && fields !== null);
    }
  }
  return count;
}

/** Logs a failed read (or remakes a missing group) and waits; returns the next backoff. */
async function readFailed(o: ReadLoopOptions, keys: Keys, error: unknown, backoff: number): Promise<number> {
  const message = errorMessage(error);
  if (message.includes('NOGROUP')) {
    // The stream was deleted (or never existed): make the group again and go on.
    await ensureGroup(o.commands, keys.stream, keys.group).catch(() => undefined);
  } else {
    o.logger.warn({ err: message }, 'reading the stream failed; retrying');
  }
  await Promise.race([new Promise((r) => setTimeout(r, backoff)), o.stopped]);
  return Math.min(backoff * 2, 2000);
}

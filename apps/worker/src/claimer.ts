import type { Redis } from 'ioredis';
import { compareStreamIds, errorMessage, qualifyId, splitId, type Keys } from '@mirrorplane/core';
import type { Logger } from '@mirrorplane/runtime';
import type { AckBatcher } from './ack-batcher.js';
import type { BufferCommands } from './read-loop.js';
import type { SlotAccounting } from './slot-accounting.js';

export interface ClaimerOptions {
  commands: Redis;
  parts: readonly Keys[];
  consumer: string;
  claimIdleMs: number;
  /** Deliveries after which an entry goes to the failed set instead of being replayed again. */
  poisonAfter: number;
  slots: SlotAccounting;
  acks: AckBatcher;
  /** Starts a claimed entry (it takes its slot itself); `delivered` is its delivery count. */
  start: (id: string, fields: Buffer[], delivered: number) => void;
  /** Hands an entry delivered too often to the failed set. */
  poison: (id: string, fields: Buffer[], delivered: number) => void;
  /** Called for each entry claimed from another consumer. */
  claimed: () => void;
  /**
   * Entries delivered here that wait for their turn holding no slot (per-key ordering): refreshed
   * like running ones, never started again when XAUTOCLAIM returns them.
   */
  parked?: { has(id: string): boolean; stale(before: number): string[]; touch(id: string, now?: number): void };
  logger: Logger;
}

/**
 * Takes over entries other workers left pending for CLAIM_IDLE_MS (they died), and keeps this
 * worker's own entries from looking abandoned: those being replayed, and those finished whose
 * acknowledgement Redis has not taken yet (a full Redis). An entry that holds a slot here or
 * waits for its acknowledgement is never started again, however often XAUTOCLAIM returns it.
 */
export class Claimer {
  readonly #o: ClaimerOptions;
  /** When the last round ended (ms, this process's clock); null before the first. */
  #lastRoundAt: number | null = null;
  /** No claiming before this time (ms): after a stall, owners refresh first. */
  #quietUntil = 0;

  constructor(options: ClaimerOptions) {
    this.#o = options;
  }

  /**
   * A Redis command (or the gap between two rounds) that took this long means Redis or this
   * process stalled (a paused Redis, a stopped process, swapping): idle times in the pending
   * list then say nothing about whether owners are alive (Redis's clock ran on while no owner
   * could refresh). CLAIM_IDLE_MS / 2, the age at which owners refresh.
   */
  get #stallMs(): number {
    return this.#o.claimIdleMs / 2;
  }

  /**
   * One round: refresh, then claim. Never throws. After a stall (this round began more than
   * CLAIM_IDLE_MS after the previous one ended, or a command of it took more than CLAIM_IDLE_MS
   * / 2) it claims nothing for CLAIM_IDLE_MS, so that every live owner refreshes its entries
   * first; entries taken over in the reply that revealed the stall are not started (see `#claim`).
   */
  async run(): Promise<void> {
    const started = Date.now();
    try {
      if (this.#lastRoundAt !== null && started - this.#lastRoundAt > this.#o.claimIdleMs)
        this.#stalled(`${started - this.#lastRoundAt} ms since the previous round`);
      await this.refreshOwn();
      if (Date.now() - started > this.#stallMs) this.#stalled(`refreshing took ${Date.now() - started} ms`);
      if (Date.now() >= this.#quietUntil) await this.#claim();
    } catch (error) {
      this.#o.logger.warn({ err: errorMessage(error) }, 'claiming abandoned entries failed; will try again');
    } finally {
      this.#lastRoundAt = Date.now();
    }
  }

  #stalled(why: string): void {
    const quiet = Date.now() + this.#o.claimIdleMs;
    if (Date.now() >= this.#quietUntil)
      this.#o.logger.warn({ why, quietMs: this.#o.claimIdleMs }, 'Redis or this worker stalled; claiming nothing until owners have refreshed their entries');
    this.#quietUntil = Math.max(this.#quietUntil, quiet);
  }

  /**
   * Resets the idle time of this worker's entries older than CLAIM_IDLE_MS / 2 (XCLAIM … JUSTID,
   * which works on a full Redis). XCLAIM's min-idle (CLAIM_IDLE_MS / 4) keeps the refresh from
   * taking an entry another worker claimed a moment ago (its idle time was just reset); it is
   * tried again next round. Touches only slots still held when Redis answered, and only the
   * entries Redis gave back: an entry that finished meanwhile gets no slot back, one not
   * refreshed stays due.
   */
  async refreshOwn(now = Date.now()): Promise<void> {
    const o = this.#o;
    const before = now - o.claimIdleMs / 2;
    const running = o.slots.stale(before, (key) => !key.startsWith('job:'));
    const parked = o.parked?.stale(before) ?? [];
    const ids = [...running, ...parked, ...o.acks.waitingSince(before)];
    if (ids.length === 0) return;
    const refreshed = new Set<string>();
    for (const [p, raw] of byPartition(ids)) {
      const keys = o.parts[p] as Keys;
      const got = (await o.commands.xclaim(keys.stream, keys.group, o.consumer, Math.floor(o.claimIdleMs / 4), ...raw, 'JUSTID')) as unknown as string[];
      for (const id of got) refreshed.add(qualifyId(String(id), p));
    }
    const touched = Date.now();
    for (const id of running) if (refreshed.has(id)) o.slots.touch(id, touched);
    for (const id of parked) if (refreshed.has(id)) o.parked?.touch(id, touched);
  }

  async #claim(): Promise<void> {
    const o = this.#o;
    // An entry acknowledged from here on may still come back in a claim reply sent before the
    // acknowledgement: it is recognised by when its acknowledgement was confirmed. One
    // acknowledged before now cannot come back (Redis took the XACK before this round's claims).
    const round = Date.now();
    o.acks.forgetBefore(round);
    for (const [p, keys] of o.parts.entries()) {
      let cursor = '0-0';
      do {
        const free = o.slots.free;
        if (free <= 0 || o.slots.closed) return;
        const sent = Date.now();
        const reply = (await (o.commands as unknown as BufferCommands).xautoclaimBuffer(
          keys.stream,
          keys.group,
          o.consumer,
          o.claimIdleMs,
          cursor,
          'COUNT',
          Math.min(free, 100),
        )) as [Buffer, [Buffer, Buffer[] | null][], Buffer[]?];
        if (Date.now() - sent > this.#stallMs) {
          // Redis answered late: it was stalled while the claim waited, so what it took may still
          // run at a live owner that could not refresh. Not started: the owner's refresh takes
          // it back (its idle time grows past CLAIM_IDLE_MS / 4); an owner that is really gone
          // leaves it idle, and it is claimed again after the quiet period.
          this.#stalled(`a claim took ${Date.now() - sent} ms`);
          if (reply[1].length > 0) o.logger.info({ entries: reply[1].length }, 'claimed entries during a Redis stall; not starting them');
          return;
        }
        cursor = reply[0].toString();
        // Ids in the pending list whose entries were deleted: nothing to replay, just clear them.
        for (const gone of reply[2] ?? []) o.acks.finish(qualifyId(gone.toString(), p), false);
        const entries = reply[1];
        if (entries.length === 0) continue;
        const fresh = entries.filter(([id]) => {
          const q = qualifyId(id.toString(), p);
          return !o.slots.has(q) && !o.parked?.has(q) && !o.acks.finishedSince(q, round);
        });
        if (fresh.length === 0) continue;
        const deliveries = await this.#deliveryCounts(
          keys,
          p,
          fresh.map(([id]) => id.toString()),
        );
        for (const [idBuffer, fields] of fresh) {
          const id = qualifyId(idBuffer.toString(), p);
          // Checked again: it may have finished while the delivery counts were read.
          if (o.slots.has(id) || o.parked?.has(id) || o.acks.finishedSince(id, round)) continue;
          if (fields === null) {
            o.acks.finish(id, false);
            continue;
          }
          o.claimed();
          const delivered = deliveries.get(id) ?? 2;
          if (delivered > o.poisonAfter) {
            // An entry that keeps its workers from finishing it (a crash on it, say) must not
            // circle for ever.
            o.poison(id, fields, delivered);
            continue;
          }
          o.logger.info({ entryId: id, attempt: delivered }, 'took over an abandoned entry');
          o.start(id, fields, delivered);
        }
      } while (cursor !== '0-0');
    }
  }

  /** Delivery counts of entries of partition `p`, by their qualified ids. */
  async #deliveryCounts(keys: Keys, p: number, raw: string[]): Promise<Map<string, number>> {
    const out = new Map<string, number>();
    const sorted = raw.slice().sort(compareStreamIds);
    const rows = (await this.#o.commands.xpending(
      keys.stream,
      keys.group,
      sorted[0] as string,
      sorted[sorted.length - 1] as string,
      raw.length + 10,
      this.#o.consumer,
    )) as [string, string, number, number][];
    for (const [id, , , count] of rows) out.set(qualifyId(id, p), Number(count));
    return out;
  }
}

/** Qualified ids (see `qualifyId`) grouped by partition, as stream ids. */
export function byPartition(ids: readonly string[]): Map<number, string[]> {
  const out = new Map<number, string[]>();
  for (const q of ids) {
    const { id, partition } = splitId(q);
    const list = out.get(partition);
    if (list) list.push(id);
    else out.set(partition, [id]);
  }
  return out;
}

import { InternalError } from '@mirrorplane/core';

/**
 * The worker's concurrency slots.
 *
 * Invariant: a slot is held exactly while a replay of that key runs in this process.
 * - `acquire(key)` takes a slot only when one is free and the key holds none: an entry
 *   delivered again (by XAUTOCLAIM, or a read racing a claim) is counted once.
 * - `release(key)` is idempotent: a second release, or one for a key never acquired, does nothing.
 * - `touch(key)` and `stale()` never add a key: refreshing an entry that finished while the
 *   refresh was on its way to Redis cannot bring its slot back (the leak of issue 11, fault 1).
 * - after `close()`, nothing is acquired; releases still work, and `whenEmpty()` resolves once
 *   the last running replay releases its slot.
 *
 * Keys are strings: stream entries by their qualified id, retry jobs by `job:<id>`, so a
 * retry job and a stream entry of the same id never share a slot.
 */
export class SlotAccounting {
  readonly capacity: number;
  /** Held keys → when they were acquired or last touched (ms since the epoch). */
  readonly #held = new Map<string, number>();
  #closed = false;
  #waiters: (() => void)[] = [];

  /** @param capacity slots in all (WORKER_CONCURRENCY), at least 1. */
  constructor(capacity: number) {
    if (!Number.isInteger(capacity) || capacity < 1) throw new InternalError(`slot capacity must be a positive integer, got ${capacity}`);
    this.capacity = capacity;
  }

  get held(): number {
    return this.#held.size;
  }

  get free(): number {
    return this.capacity - this.#held.size;
  }

  get closed(): boolean {
    return this.#closed;
  }

  has(key: string): boolean {
    return this.#held.has(key);
  }

  /** Takes a slot for `key`; false when closed, full, or the key already holds one. */
  acquire(key: string, now = Date.now()): boolean {
    if (this.#closed || this.#held.has(key) || this.#held.size >= this.capacity) return false;
    this.#held.set(key, now);
    return true;
  }

  /**
   * Takes a slot for `key` even beyond capacity (a retry job BullMQ already started: it runs
   * whether or not a slot is free, so it must be counted). False only when the key holds one.
   */
  acquireOver(key: string, now = Date.now()): boolean {
    if (this.#held.has(key)) return false;
    this.#held.set(key, now);
    return true;
  }

  /** Frees `key`'s slot; returns whether it held one. Wakes the waiters. */
  release(key: string): boolean {
    if (!this.#held.delete(key)) return false;
    this.#wake();
    return true;
  }

  /** Marks a held key as recently refreshed; does nothing for a key that holds no slot. */
  touch(key: string, now = Date.now()): void {
    if (this.#held.has(key)) this.#held.set(key, now);
  }

  /** Held keys acquired or touched before `before` (ms since the epoch), matching `filter`. */
  stale(before: number, filter: (key: string) => boolean = () => true): string[] {
    const out: string[] = [];
    for (const [key, since] of this.#held) if (since < before && filter(key)) out.push(key);
    return out;
  }

  keys(filter: (key: string) => boolean = () => true): string[] {
    return [...this.#held.keys()].filter(filter);
  }

  /** Resolves at the next release or at close(). */
  changed(): Promise<void> {
    if (this.#closed) return Promise.resolve();
    return new Promise((resolve) => this.#waiters.push(resolve));
  }

  /** Stops acquiring; wakes every waiter. */
  close(): void {
    this.#closed = true;
    this.#wake();
  }

  /** Resolves when no slot is held (polls `changed()`). */
  async whenEmpty(): Promise<void> {
    while (this.#held.size > 0) await new Promise<void>((resolve) => this.#waiters.push(resolve));
  }

  #wake(): void {
    const waiters = this.#waiters;
    this.#waiters = [];
    for (const w of waiters) w();
  }
}

import { performance } from 'node:perf_hooks';

/** Something that gives up at a moment (`at`, `performance.now()` milliseconds) unless it finished first. */
export interface Expiring {
  readonly at: number;
  readonly finished: boolean;
  /** Called once `at` has passed while not finished. */
  expire(): void;
}

/**
 * Deadlines of one fixed length, kept in the order they were set, so one timer serves them
 * all. A timer per operation (`AbortSignal.timeout`, ioredis's `commandTimeout`) creates a
 * timer object, links it into the timer list and unlinks it, per request; in profiles of the
 * worker and the ingress under load that was several per cent of the CPU, for a deadline that
 * almost never fires.
 *
 * Items must be added with `at` = now + the queue's length (`deadlineAt()`), so they expire in
 * the order they were added. The timer is unref'd: pending deadlines never keep a process alive.
 */
export class ExpiryQueue<T extends Expiring> {
  /** The deadline's length (ms). */
  readonly ms: number;
  #items: T[] = [];
  #head = 0;
  #timer: NodeJS.Timeout | null = null;

  constructor(ms: number) {
    this.ms = ms;
  }

  /** Items held: those not finished, plus finished ones behind an unfinished one (until it finishes or expires). */
  get size(): number {
    return this.#items.length - this.#head;
  }

  /** The `at` of an item added now (`performance.now()` + `ms`). */
  deadlineAt(): number {
    return performance.now() + this.ms;
  }

  /** Watches `item` until it finishes or its `at` passes. */
  add(item: T): void {
    this.prune();
    this.#items.push(item);
    if (this.#timer === null) this.#arm(item.at - performance.now());
  }

  #arm(ms: number): void {
    this.#timer = setTimeout(this.#fire, Math.max(1, Math.ceil(ms)));
    this.#timer.unref();
  }

  /**
   * Drops the finished items at the head (called on each `add`, each timer run, and by the owner
   * when an item finishes, so the last ones do not wait for the next). Work mostly finishes in the order it started (an
   * append's replies come in order on its connection), so the queue holds about what is in
   * flight, not every item of the last `ms` (which would keep each one, and all it refers to,
   * alive until the timer fires).
   */
  prune(): void {
    const items = this.#items;
    // Each slot passed is emptied at once: an item left in the array stays alive with all it refers to.
    while (this.#head < items.length && (items[this.#head] as T).finished) items[this.#head++] = undefined as unknown as T;
    if (this.#head === items.length) {
      items.length = 0;
      this.#head = 0;
    } else if (this.#head > 1024 && this.#head * 2 > items.length) {
      this.#items = items.slice(this.#head);
      this.#head = 0;
    }
  }

  readonly #fire = (): void => {
    this.#timer = null;
    const now = performance.now();
    const items = this.#items;
    while (this.#head < items.length) {
      const item = items[this.#head] as T;
      if (!item.finished && item.at > now) break;
      items[this.#head++] = undefined as unknown as T;
      if (!item.finished) item.expire();
    }
    this.prune();
    const next = this.#items[this.#head];
    if (next !== undefined) this.#arm(next.at - now);
  };

  /** Stops the timer; items not finished never expire. */
  close(): void {
    if (this.#timer !== null) clearTimeout(this.#timer);
    this.#timer = null;
    this.#items = [];
    this.#head = 0;
  }
}

import { performance } from 'node:perf_hooks';
/**
 * Deadlines of one fixed length, kept in the order they were set, so one timer serves them
 * all. `AbortSignal.timeout` arms a timer and a weak reference per call; profiles of a busy
 * worker put it at about 5 % of the CPU, for a deadline that almost never fires.
 */
export class DeadlineQueue {
  readonly #ms: number;
  #items: Deadline[] = [];
  #head = 0;
  #timer: NodeJS.Timeout | null = null;

  constructor(ms: number) {
    this.#ms = ms;
  }

  /** A deadline `ms` from now; call `finish()` when the work is done in time. */
  start(): Deadline {
    const deadline = new Deadline(performance.now() + this.#ms);
    this.#items.push(deadline);
    if (this.#timer === null) this.#arm(this.#ms);
    return deadline;
  }

  #arm(ms: number): void {
    this.#timer = setTimeout(this.#fire, Math.max(1, Math.ceil(ms)));
    // Pending deadlines must not keep a stopping process alive.
    this.#timer.unref();
  }

  readonly #fire = (): void => {
    this.#timer = null;
    const now = performance.now();
    const items = this.#items;
    while (this.#head < items.length) {
      const d = items[this.#head] as Deadline;
      if (!d.finished && d.at > now) break;
      this.#head += 1;
      if (!d.finished) d.expire();
    }
    // Deadlines are set in order, so the expired ones are a prefix: drop it now and then.
    if (this.#head > 1024 && this.#head * 2 > items.length) {
      this.#items = items.slice(this.#head);
      this.#head = 0;
    }
    const next = this.#items[this.#head];
    if (next !== undefined) this.#arm(next.at - now);
  };

  /** Stops the timer; unfinished deadlines never fire. */
  close(): void {
    if (this.#timer !== null) clearTimeout(this.#timer);
    this.#timer = null;
    this.#items = [];
    this.#head = 0;
  }
}

/**
 * What an exchange needs of a cancellation: the part of `AbortSignal` it uses, so an
 * `AbortSignal` fits, and so does a `Deadline` (which costs no `AbortController`: creating one
 * and its signal measured several microseconds per replay, more than the deadline's bookkeeping).
 */
export interface Cancellation {
  readonly aborted: boolean;
  readonly reason: unknown;
  addEventListener(type: 'abort', listener: () => void): void;
  removeEventListener(type: 'abort', listener: () => void): void;
}

/** One replay's deadline; it is its own `Cancellation` (`signal`). */
export class Deadline implements Cancellation {
  readonly at: number;
  #finished = false;
  aborted = false;
  reason: unknown = undefined;
  #listeners: (() => void)[] = [];

  constructor(at: number) {
    this.at = at;
  }

  /** Aborted when the deadline passes; read it when the work starts. */
  get signal(): Cancellation {
    return this;
  }

  get finished(): boolean {
    return this.#finished;
  }

  addEventListener(type: 'abort', listener: () => void): void {
    // As on an EventTarget, a listener already attached is not attached twice.
    if (type === 'abort' && !this.#finished && !this.#listeners.includes(listener)) this.#listeners.push(listener);
  }

  removeEventListener(type: 'abort', listener: () => void): void {
    const at = this.#listeners.indexOf(listener);
    if (at !== -1) this.#listeners.splice(at, 1);
  }

  /** The work ended in time (or failed on its own): the deadline will not fire. */
  finish(): void {
    this.#finished = true;
    this.#listeners = [];
  }

  expire(): void {
    if (this.#finished) return;
    this.#finished = true;
    this.aborted = true;
    this.reason = new DOMException('The operation was aborted due to timeout', 'TimeoutError');
    const listeners = this.#listeners;
    this.#listeners = [];
    for (const listener of listeners) listener();
  }
}

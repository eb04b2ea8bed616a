import { ExpiryQueue } from '@mirrorplane/runtime';

/**
 * Replay deadlines of one fixed length, served by one timer (see `ExpiryQueue`). Each is its
 * own cancellation: `AbortSignal.timeout` armed a timer and a weak reference per replay, about
 * 5 % of a busy worker's CPU.
 */
export class DeadlineQueue extends ExpiryQueue<Deadline> {
  /** A deadline `ms` from now; call `finish()` when the work is done in time. */
  start(): Deadline {
    const deadline = new Deadline(this.deadlineAt());
    this.add(deadline);
    return deadline;
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

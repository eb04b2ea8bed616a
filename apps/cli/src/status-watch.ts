import type { Status } from '@mirrorplane/runtime';
import { formatDuration as formatDurationMs } from './format.js';

/** One reading of the status with the rates derived from the readings before it. */
export interface StatusFrame extends Status {
  at: string;
  /** Entries appended per second (null until two readings, or before Redis 7). */
  acceptedPerSec: number | null;
  /** Completed replays per second. */
  replayedPerSec: number | null;
  /** Entries reaching the failed set per second. */
  failedPerSec: number | null;
  /**
   * Seconds until the backlog is empty at the current net drain rate; 0 when it is empty,
   * null when it does not shrink (or before two readings).
   */
  drainSeconds: number | null;
}

export interface WatchStatusOptions {
  read: () => Promise<Status>;
  write: (text: string) => void;
  /** Milliseconds between readings (default 1000; the CLI's --interval is in seconds). */
  intervalMs?: number;
  /** Stop after this many readings (default: until `signal` aborts). */
  count?: number;
  json?: boolean;
  /** Clear the screen before each frame (a terminal); otherwise frames follow one another. */
  clear?: boolean;
  format: (status: Status) => string;
  signal?: AbortSignal;
  /** Turns a failed reading's error into the line shown (the URL and the cause). */
  describeError?: (error: unknown) => string;
  /** The first line of a human frame (which Redis and prefix). */
  context?: string;
}

interface Sample {
  t: number;
  accepted: number | null;
  replayed: number;
  failed: number;
  backlog: number;
}

/** Rates are computed over this window, so one slow reading does not make them jump. */
const WINDOW_MS = 10_000;

/** Keeps the readings of the last window and derives rates from them. */
export class RateWindow {
  readonly #samples: Sample[] = [];
  /**
   * Entries seen reaching the failed set since the first reading: a counter that only grows,
   * built from the growth of the set between readings (the set shrinks when entries are
   * replayed or purged; a shrink counts nothing, growth after it counts in full).
   */
  #failedSeen = 0;
  /** The size of the failed set at the previous reading (not the counter). */
  #lastFailedSize: number | null = null;

  /**
   * Adds a reading taken at `t` (ms, monotonic) and returns the rates per second over the
   * window: null until two readings; failed/s is 0 when the failed set did not grow.
   */
  add(status: Status, t: number): Omit<StatusFrame, keyof Status | 'at'> {
    if (this.#lastFailedSize !== null) this.#failedSeen += Math.max(0, status.failed - this.#lastFailedSize);
    this.#lastFailedSize = status.failed;
    this.#samples.push({ t, accepted: status.accepted, replayed: status.replayed, failed: this.#failedSeen, backlog: status.backlog });
    while (this.#samples.length > 2 && t - (this.#samples[1] as Sample).t >= WINDOW_MS) this.#samples.shift();
    const first = this.#samples[0] as Sample;
    const seconds = (t - first.t) / 1000;
    if (seconds <= 0) return { acceptedPerSec: null, replayedPerSec: null, failedPerSec: null, drainSeconds: status.backlog === 0 ? 0 : null };
    const now = this.#samples[this.#samples.length - 1] as Sample;
    const rate = (a: number, b: number) => Math.max(0, b - a) / seconds;
    const acceptedPerSec = first.accepted !== null && now.accepted !== null ? rate(first.accepted, now.accepted) : null;
    // The backlog shrinks by what workers take minus what arrives: its own slope is the net drain rate.
    const net = (first.backlog - now.backlog) / seconds;
    return {
      acceptedPerSec,
      replayedPerSec: rate(first.replayed, now.replayed),
      failedPerSec: rate(first.failed, now.failed),
      drainSeconds: now.backlog === 0 ? 0 : net > 0 ? now.backlog / net : null,
    };
  }
}

function formatRate(n: number | null): string {
  return n === null ? '-' : n >= 100 ? n.toFixed(0) : n.toFixed(1);
}

/** `12 s`, `3 min 4 s`, `2 h 5 min`. */
export function formatDuration(seconds: number): string {
  const ms = Math.round(seconds) * 1000;
  return ms === 0 ? '0 s' : formatDurationMs(ms);
}

export function formatFrame(frame: StatusFrame, format: (status: Status) => string): string {
  const drain =
    frame.drainSeconds === null
      ? frame.backlog === 0
        ? 'empty'
        : 'not draining'
      : frame.drainSeconds === 0
        ? 'empty'
        : `drains in ~${formatDuration(frame.drainSeconds)}`;
  return (
    `mirrorplane status  ${frame.at}\n\n${format(frame)}\n` +
    `accepted/s  ${formatRate(frame.acceptedPerSec)}   replayed/s  ${formatRate(frame.replayedPerSec)}   failed/s  ${formatRate(frame.failedPerSec)}\n` +
    `backlog     ${drain}\n`
  );
}

const ABORTED: unique symbol = Symbol('aborted');

/**
 * `promise`, or `ABORTED` as soon as `signal` aborts (the promise is left to settle on its
 * own; its rejection is swallowed, never unhandled).
 */
function untilAborted<T>(promise: Promise<T>, signal: AbortSignal | undefined): Promise<T | typeof ABORTED> {
  if (!signal) return promise;
  if (signal.aborted) {
    promise.catch(() => undefined);
    return Promise.resolve(ABORTED);
  }
  return new Promise((resolve, reject) => {
    const onAbort = () => {
      promise.catch(() => undefined);
      resolve(ABORTED);
    };
    signal.addEventListener('abort', onAbort, { once: true });
    promise.then(
      (value) => {
        signal.removeEventListener('abort', onAbort);
        resolve(value);
      },
      (error: unknown) => {
        signal.removeEventListener('abort', onAbort);
        reject(error);
      },
    );
  });
}

/** Waits `ms` or until `signal` aborts, removing its listener either way (no listener piles up per frame). */
function sleep(ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise<void>((resolve) => {
    if (signal?.aborted) return resolve();
    const onAbort = () => {
      clearTimeout(timer);
      resolve();
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

/**
 * `mirrorplane status --watch`: reads the status every interval and prints it with the rates
 * of the last ten seconds and the time the backlog needs to drain at that pace.
 * A failed reading never ends the watch: the last good frame is shown again marked STALE
 * with its age and the cause, and the next reading after Redis is back is live again.
 */
export async function watchStatus(options: WatchStatusOptions): Promise<void> {
  const interval = options.intervalMs ?? 1000;
  const window = new RateWindow();
  const describe = options.describeError ?? ((error: unknown) => (error as Error).message);
  let last: StatusFrame | null = null;
  for (let n = 0; options.count === undefined || n < options.count; n++) {
    if (options.signal?.aborted) return;
    const started = Date.now();
    const head = options.clear ? '\x1b[H\x1b[2J' : n > 0 ? '\n' : '';
    try {
      // Ctrl-C ends the view now, even while a reading hangs on a Redis that does not answer.
      const status = await untilAborted(options.read(), options.signal);
      if (status === ABORTED || options.signal?.aborted) return;
      const t = Date.now();
      const frame: StatusFrame = { at: new Date(t).toISOString(), ...status, ...window.add(status, t) };
      last = frame;
      if (options.json) options.write(`${JSON.stringify({ ...frame, stale: false })}\n`);
      else options.write(`${head}${options.context ?? ''}${formatFrame(frame, options.format)}`);
    } catch (error) {
      if (options.signal?.aborted) return;
      const message = describe(error);
      const now = Date.now();
      const age = last ? now - Date.parse(last.at) : null;
      if (options.json) {
        options.write(`${JSON.stringify({ at: new Date(now).toISOString(), stale: true, error: message, lastGoodAt: last?.at ?? null })}\n`);
      } else {
        const banner = `STALE: ${message}; ${last ? `showing the reading of ${last.at} (${formatDurationMs(age as number)} old)` : 'no reading yet'}; retrying\n`;
        options.write(`${head}${options.context ?? ''}${banner}${last ? `\n${formatFrame(last, options.format)}` : ''}`);
      }
    }
    if (options.count !== undefined && n + 1 >= options.count) return;
    await sleep(Math.max(0, interval - (Date.now() - started)), options.signal);
  }
}

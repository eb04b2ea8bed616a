import type { Logger } from 'pino';
import type { RedisClient } from './redis.js';

/** How often a probe pings Redis. */
export const PROBE_INTERVAL_MS = 250;

/**
 * Tells whether Redis answers, not only whether its socket is open: a Redis paused
 * (SIGSTOP), swapping or stuck in a slow command keeps its TCP connection, so ioredis still
 * says `ready`. The probe sends a `PING` every `PROBE_INTERVAL_MS` (one at a time, never
 * stacked) and calls Redis *unresponsive* as soon as one has gone unanswered for
 * `deadlineMs`, without waiting for the command's own timeout. It turns responsive again
 * at the first `PING` that answers. So a hung Redis is seen within
 * `deadlineMs + PROBE_INTERVAL_MS`, and a recovered one within `PROBE_INTERVAL_MS` plus a
 * round trip.
 *
 * On a Redis Cluster a `PING` goes to any node: a paused node that holds none of the
 * deployment's keys would make it unresponsive. Give `keys` (the deployment's streams, one per
 * partition): the probe then sends `EXISTS` of each, which the Cluster client routes to the
 * nodes that hold them (on a single Redis it answers as a `PING` does).
 *
 * `markUnresponsive()` lets the caller report evidence of its own (a command that timed out),
 * so the verdict turns at once; only a `PING` turns it back.
 */
export class RedisProbe {
  readonly #redis: RedisClient;
  readonly #deadlineMs: number;
  readonly #logger: Logger;
  #responsive = true;
  /** When the outstanding PING was sent; null when none is outstanding. */
  #sentAt: number | null = null;
  #timer: NodeJS.Timeout | null = null;

  /** Keys whose nodes are probed (EXISTS); empty: PING. */
  readonly #keys: readonly string[];

  constructor(redis: RedisClient, deadlineMs: number, logger: Logger, keys: readonly string[] = []) {
    this.#redis = redis;
    this.#keys = keys;
    this.#deadlineMs = deadlineMs;
    this.#logger = logger;
  }

  /** False while Redis is known not to answer within the deadline. */
  get responsive(): boolean {
    return this.#responsive;
  }

  start(): void {
    if (this.#timer) return;
    this.#timer = setInterval(() => this.#tick(), PROBE_INTERVAL_MS).unref();
  }

  stop(): void {
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = null;
  }

  markUnresponsive(why: string): void {
    this.#set(false, why);
  }

  #tick(): void {
    const now = performance.now();
    if (this.#sentAt !== null) {
      if (now - this.#sentAt > this.#deadlineMs) this.#set(false, `no answer to the probe within ${this.#deadlineMs} ms`);
      return;
    }
    // A closed connection is already not ready by its status; the probe is about open ones.
    if (this.#redis.status !== 'ready') return;
    this.#sentAt = now;
    (this.#keys.length === 0 ? this.#redis.ping() : Promise.all(this.#keys.map((key) => this.#redis.exists(key)))).then(
      () => {
        this.#sentAt = null;
        this.#set(true, 'probe answered');
      },
      (error: Error) => {
        // The connection's own command timeout may fire before a tick sees the deadline pass.
        if (/timed out/i.test(error.message)) this.#set(false, `no answer to the probe within ${this.#deadlineMs} ms`);
        // Otherwise the connection dropped (its status says so): the next tick decides.
        this.#sentAt = null;
      },
    );
  }

  #set(responsive: boolean, why: string): void {
    if (responsive === this.#responsive) return;
    this.#responsive = responsive;
    if (responsive) this.#logger.info({ why }, 'redis answers again');
    else this.#logger.warn({ why }, 'redis does not answer: not ready, answering 503 at once');
  }
}

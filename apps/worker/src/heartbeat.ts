import { readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import type { Redis } from 'ioredis';
import { errorMessage, type Keys } from '@mirrorplane/core';
import { pruneDeadConsumers, removeHeartbeat, writeHeartbeat, type Logger, type WorkerHeartbeat } from '@mirrorplane/runtime';

export interface HeartbeatOptions {
  redis: Redis;
  prefix: string;
  parts: readonly Keys[];
  consumer: string;
  concurrency: number;
  /** HEARTBEAT_MS: the period; the heartbeat expires after three. */
  periodMs: number;
  /** Idle time (ms) a consumer without heartbeat and pending entries needs before it is pruned. */
  pruneIdleMs: number;
  /** What the worker holds now. */
  load: () => Pick<WorkerHeartbeat, 'inFlight' | 'inFlightEntries' | 'unacked'>;
  /** What the worker is configured with, published for operators (see WorkerHeartbeat). */
  published?: Pick<WorkerHeartbeat, 'origins' | 'rateLimits'>;
  logger: Logger;
}

function packageVersion(): string {
  try {
    return (JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string }).version;
  } catch {
    return 'unknown';
  }
}

/**
 * Writes this worker's heartbeat every period (the first at once, so a new idle worker is
 * listed before it reads anything), and prunes dead consumers from the group. Never throws:
 * a refused write (Redis full: SET allocates) is logged once per failing run.
 */
export class Heartbeat {
  readonly #o: HeartbeatOptions;
  readonly #startedAt = Date.now();
  readonly #version = packageVersion();
  readonly #host = hostname();
  #timer: NodeJS.Timeout | null = null;
  #running: Promise<void> = Promise.resolve();
  #failing = false;

  constructor(options: HeartbeatOptions) {
    this.#o = options;
  }

  /** Writes the first heartbeat and starts the timer. */
  async start(): Promise<void> {
    await this.#beat();
    this.#timer = setInterval(() => {
      this.#running = this.#running.then(() => this.#beat()).then(() => this.#prune());
    }, this.#o.periodMs);
    this.#timer.unref();
  }

  /** The heartbeat as written now. */
  snapshot(): WorkerHeartbeat {
    return {
      consumer: this.#o.consumer,
      host: this.#host,
      pid: process.pid,
      version: this.#version,
      concurrency: this.#o.concurrency,
      ...this.#o.load(),
      startedAt: this.#startedAt,
      lastSeen: Date.now(),
      ...this.#o.published,
    };
  }

  async #beat(): Promise<void> {
    try {
      await writeHeartbeat(this.#o.redis, this.#o.prefix, this.snapshot(), this.#o.periodMs * 3);
      if (this.#failing) this.#o.logger.info('heartbeat written again');
      this.#failing = false;
    } catch (error) {
      if (!this.#failing) this.#o.logger.warn({ err: errorMessage(error) }, 'writing the heartbeat failed; will try again');
      this.#failing = true;
    }
  }

  async #prune(): Promise<void> {
    try {
      const pruned = await pruneDeadConsumers(this.#o.redis, this.#o.prefix, this.#o.parts, this.#o.pruneIdleMs);
      for (const p of pruned) this.#o.logger.info({ consumer: p.consumer }, 'removed a dead consumer from the group');
    } catch (error) {
      this.#o.logger.warn({ err: errorMessage(error) }, 'pruning dead consumers failed; will try again');
    }
  }

  /** Stops the timer and removes the heartbeat (a worker shutting down is no longer alive). */
  async close(): Promise<void> {
    if (this.#timer) clearInterval(this.#timer);
    await this.#running;
    await removeHeartbeat(this.#o.redis, this.#o.prefix, this.#o.consumer);
  }
}

import { Queue, Worker, type ConnectionOptions, type Processor, type QueueOptions, type WorkerOptions } from 'bullmq';
import type { Keys, SerializedEntry } from '@mirrorplane/core';

/** The data of a job in the retry queue. */
export interface RetryJobData {
  /** The entry to replay; null when the stream entry could not be decoded. */
  entry: SerializedEntry | null;
  /** For undecodable entries: the raw fields, base64 by name. */
  raw?: Record<string, string>;
  /** Replay attempts made before the job was created (1 after a failed first replay from the stream). */
  priorAttempts: number;
  /**
   * When the entry's first try began (ms since the epoch): the retry window counts from it.
   * Jobs written before it existed use the job's creation time.
   */
  firstTriedAt?: number;
  /**
   * True when the job waits because a try failed with a retryable answer (not because a stage
   * asked to replay later): its next try is bounded by RETRY_WINDOW_MS when it starts.
   */
  retrying?: boolean;
  /** Set when the job must go straight to the failed set with this reason (no replay). */
  failReason?: string;
}

/** The job name: what the entry was, for the dashboard and `failed list`. */
export function retryJobName(entry: SerializedEntry | null): string {
  return entry ? `${entry.method} ${entry.target}`.slice(0, 200) : 'undecodable entry';
}

/**
 * The retry queue (BullMQ) of a deployment: retries waiting with backoff, and the failed set.
 * The only place that builds it, so its name and key prefix come from `keys` alone.
 * `connection` should be a connection of purpose `bullmq` (no per-request retry limit).
 */
export function createRetryQueue(keys: Keys, connection: ConnectionOptions, options: Omit<QueueOptions, 'connection' | 'prefix'> = {}): Queue<RetryJobData> {
  return new Queue<RetryJobData>(keys.retryQueue, { ...options, connection, prefix: keys.bullPrefix });
}

/**
 * A BullMQ worker on the retry queue of `keys` (the worker process's retry processor): the
 * queue's name and key prefix come from `keys`, as for `createRetryQueue`.
 */
export function createRetryWorker(
  keys: Keys,
  processor: Processor<RetryJobData>,
  connection: ConnectionOptions,
  options: Omit<WorkerOptions, 'connection' | 'prefix'> = {},
): Worker<RetryJobData> {
  return new Worker<RetryJobData>(keys.retryQueue, processor, { ...options, connection, prefix: keys.bullPrefix });
}

/**
 * Redis key names of one deployment. Every key shares the hash tag `{prefix}` so that in
 * Redis Cluster the stream, the counters and the retry queue live on one shard.
 */
export interface Keys {
  /** The stream of accepted entries. */
  readonly stream: string;
  /** The consumer group every worker reads through. */
  readonly group: string;
  /** Completed replays since the deployment began. */
  readonly replayed: string;
  /** The BullMQ prefix; the retry queue's keys are `${bullPrefix}:${retryQueue}:*`. */
  readonly bullPrefix: string;
  /** The BullMQ queue carrying retries and the failed set. */
  readonly retryQueue: string;
}

export function keysFor(prefix: string): Keys {
  const tag = `{${prefix}}`;
  return Object.freeze({
    stream: `${tag}:stream`,
    group: 'workers',
    replayed: `${tag}:replayed`,
    bullPrefix: tag,
    retryQueue: 'retry',
  });
}

import { InvalidValueError } from './errors.js';
import { fnv1a32 } from './hashing.js';
import { TOKEN_CHARS } from './http-token.js';

/**
 * Partitions: with `PARTITIONS=N` a deployment's traffic is spread over N streams, each with
 * its own hash tag so that in a Redis Cluster they land on different shards. Partition 0 is
 * the deployment's own keys (`{prefix}:stream`), so one partition is exactly the layout
 * without partitions; partition i > 0 is `{prefix~i}:stream` with its own replayed counter.
 * The retry queue, the failed set and the metrics lock stay with partition 0.
 *
 * A request goes to the partition of a stable key: by default its request id, or a header
 * (a session id, say) so that one session's requests keep their order in one partition.
 */

/** What decides a request's partition. */
export type PartitionKey = { kind: 'request-id' } | { kind: 'header'; name: string };

const HEADER_KEY = new RegExp(`^header:(${TOKEN_CHARS}+)$`, 'i');

/** Parses PARTITION_KEY: `request-id` or `header:<name>`. */
export function parsePartitionKey(text: string): PartitionKey {
  const t = text.trim();
  if (t.toLowerCase() === 'request-id') return { kind: 'request-id' };
  const m = HEADER_KEY.exec(t);
  if (m) return { kind: 'header', name: (m[1] as string).toLowerCase() };
  throw new InvalidValueError(`expected request-id or header:<name> (header:x-session-id), got ${JSON.stringify(text)}`);
}

/** The partition of a key: FNV-1a, stable across processes and versions, cheap on the hot path. */
export function partitionOf(key: string, partitions: number): number {
  return fnv1a32(key) % partitions;
}

/**
 * Ids inside a worker name their partition, so that entries of two streams with the same
 * stream id stay apart (in flight, as retry jobs, as `x-mirrorplane-id`): partition 0's ids
 * are the stream ids themselves, partition i's are `<stream id>~<i>`.
 */
export function qualifyId(id: string, partition: number): string {
  return partition === 0 ? id : `${id}~${partition}`;
}

export function splitId(qualified: string): { id: string; partition: number } {
  const tilde = qualified.indexOf('~');
  return tilde === -1 ? { id: qualified, partition: 0 } : { id: qualified.slice(0, tilde), partition: Number(qualified.slice(tilde + 1)) };
}

/**
 * The ingress's choice of partition for a request, from its headers (as node:http gives them,
 * names in lower case). Requests without the key take turns, which keeps the partitions even.
 */
export function createPartitioner(partitions: number, key: PartitionKey): (headers: Readonly<Record<string, string | string[] | undefined>>) => number {
  const name = key.kind === 'request-id' ? 'x-request-id' : key.name;
  let turn = 0;
  return (headers) => {
    const value = headers[name];
    const text = typeof value === 'string' ? value : Array.isArray(value) ? value[0] : undefined;
    if (text === undefined || text === '') {
      turn = (turn + 1) % partitions;
      return turn;
    }
    return partitionOf(text, partitions);
  };
}

import type { Socket } from 'node:net';
import type { Redis } from 'ioredis';
import {
  EntryCipher,
  createPartitioner,
  headerObject,
  headerValue,
  partitionKeys,
  pushEntryFields,
  withoutHeaders,
  type Config,
  type HttpProtocol,
} from '@mirrorplane/core';
import type { ParsedRequest } from './http1-parser.js';

/** The header carrying INGRESS_TOKEN; removed before the entry is stored. */
export const INGRESS_TOKEN_HEADER = 'x-mirrorplane-token';

/** Removed from every entry when INGRESS_TOKEN is set: the token never reaches Redis. */
const TOKEN_HEADERS: ReadonlySet<string> = new Set([INGRESS_TOKEN_HEADER]);

/** The fields a partition key reads; an HTTP/2 request's `:authority` is its `host` (as the worker's pipeline sees it). */
function partitionHeaders(raw: readonly string[], protocol: HttpProtocol | undefined): Record<string, string> {
  const headers = headerObject(raw);
  const authority = protocol === 'HTTP/2' ? headers[':authority'] : undefined;
  if (authority !== undefined) headers.host ??= authority;
  return headers;
}

/**
 * Appends one request as one stream entry (`XADD`, sealed when a data key is set) to its
 * partition's stream. Appends of one event-loop turn leave in one write to Redis.
 */
export class EntryAppender {
  readonly #redis: Redis;
  readonly #streams: string[];
  readonly #partitionOf: ((headers: Record<string, string | string[] | undefined>) => number) | null;
  readonly #cipher: EntryCipher | null;
  readonly #stripToken: boolean;
  /** The Redis socket held corked until the end of this event-loop turn, if any. */
  #corked: Socket | null = null;
  readonly #uncork = (): void => {
    const socket = this.#corked;
    this.#corked = null;
    socket?.uncork();
  };

  constructor(config: Config, redis: Redis) {
    this.#redis = redis;
    this.#streams = partitionKeys(config.prefix, config.partitions).map((k) => k.stream);
    this.#partitionOf = config.partitions === 1 ? null : createPartitioner(config.partitions, config.partitionKey);
    this.#cipher = EntryCipher.fromSpec(config.dataKey);
    this.#stripToken = config.ingressToken !== null;
  }

  /** Resolves with the entry id once Redis accepted the entry; rejects with Redis's error. */
  append(
    request: Pick<ParsedRequest, 'method' | 'target' | 'rawHeaders' | 'body' | 'trailers'>,
    clientAddress: string | undefined,
    protocol?: HttpProtocol,
  ): Promise<string | null> {
    const raw = request.rawHeaders;
    const stream = this.#partitionOf === null ? (this.#streams[0] as string) : (this.#streams[this.#partitionOf(partitionHeaders(raw, protocol))] as string);
    const args = pushEntryFields(
      [stream, '*'],
      request.method,
      request.target,
      this.#stripToken ? withoutHeaders(raw, TOKEN_HEADERS) : raw,
      request.body,
      Date.now(),
      headerValue(raw, 'x-request-id'),
      clientAddress,
      request.trailers,
      protocol,
    );
    const fields = this.#cipher === null ? args : [stream, '*', ...this.#cipher.sealFields(args.slice(2))];
    this.#batchWrites();
    return (this.#redis.xadd as (...a: (string | Buffer)[]) => Promise<string | null>)(...fields);
  }

  /**
   * Holds the Redis socket's writes until the end of this event-loop turn. Each request
   * arrives in its own socket callback, so a per-tick batch holds a single XADD; corked
   * until `setImmediate`, every append of the turn leaves in one write: one syscall, and one
   * read for Redis, for all the requests that arrived together.
   */
  #batchWrites(): void {
    if (this.#corked !== null) return;
    const socket = (this.#redis as { stream?: Socket }).stream;
    if (socket === undefined || typeof socket.cork !== 'function') return;
    socket.cork();
    this.#corked = socket;
    setImmediate(this.#uncork);
  }
}

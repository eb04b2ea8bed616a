import type { Socket } from 'node:net';
import { Command, type Redis } from 'ioredis';
import {
  EntryCipher,
  createPartitioner,
  headerObject,
  headerValue,
  MIRRORPLANE_TOKEN_HEADER,
  partitionKeys,
  pushEntryFields,
  withoutHeaders,
  type Config,
  type HttpProtocol,
} from '@mirrorplane/core';
import type { ParsedRequest } from './http1-parser.js';

/** The header carrying INGRESS_TOKEN; removed before the entry is stored. */
export const INGRESS_TOKEN_HEADER = MIRRORPLANE_TOKEN_HEADER;

/** Removed from every entry when INGRESS_TOKEN is set: the token never reaches Redis. */
const TOKEN_HEADERS: ReadonlySet<string> = new Set([INGRESS_TOKEN_HEADER]);

/** The fields a partition key reads; an HTTP/2 request's `:authority` is its `host` (as the worker's pipeline sees it). */
function partitionHeaders(raw: readonly string[], protocol: HttpProtocol | undefined): Record<string, string> {
  const headers = headerObject(raw);
  const authority = protocol === 'HTTP/2' ? headers[':authority'] : undefined;
  if (authority !== undefined) headers.host ??= authority;
  return headers;
}

/** Redis's default `proto-max-bulk-len`: the largest value (bulk string) it takes, 512 MiB. */
export const DEFAULT_MAX_BULK_BYTES = 512 * 1024 * 1024;
/** The small fields of an entry and a sealed value's own bytes: a bound of what an entry adds to its request's parts. */
const ENTRY_OVERHEAD = 64 * 1024;

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
  readonly #maxHeaderBytes: number;
  #maxBulk = DEFAULT_MAX_BULK_BYTES;
  /** Bodies up to this size make entries Redis surely takes (one comparison per append); larger ones are measured. */
  #checkAbove = 0;
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
    this.#maxHeaderBytes = config.maxHeaderBytes;
    this.setRedisLimits(DEFAULT_MAX_BULK_BYTES);
  }

  /**
   * The largest value the Redis server takes (bytes): its `proto-max-bulk-len`. An entry with a
   * larger value would make Redis answer a protocol error and close the connection every
   * append shares. (`client-query-buffer-limit` bounds a command's unparsed bytes, not its
   * values: Redis 7 takes an XADD of values that add up to more, so it is not checked.)
   */
  setRedisLimits(maxBulk: number): void {
    this.#maxBulk = maxBulk;
    // A sealed entry holds body, headers, trailers and target in one value (plus a few bytes);
    // each of the head's parts is under MAX_HEADER_BYTES, and their encoding at most doubles them.
    // (Negative when the head alone may be over it: every entry is measured.)
    this.#checkAbove = maxBulk - ENTRY_OVERHEAD - 8 * this.#maxHeaderBytes;
  }

  /** True when every value of `fields` is within `proto-max-bulk-len`. */
  #fits(fields: readonly (string | Buffer)[]): boolean {
    for (let i = 0; i < fields.length; i++) {
      const value = fields[i] as string | Buffer;
      const n = typeof value === 'string' ? Buffer.byteLength(value, 'utf8') : value.length;
      if (n > this.#maxBulk) return false;
    }
    return true;
  }

  /**
   * Resolves with the entry id once Redis accepted the entry; rejects with Redis's error.
   * Returns null, sending nothing, for an entry over what Redis takes (see `setRedisLimits`).
   */
  append(
    request: Pick<ParsedRequest, 'method' | 'target' | 'rawHeaders' | 'body' | 'trailers'>,
    clientAddress: string | undefined,
    protocol?: HttpProtocol,
  ): Promise<string | null> | null {
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
    if (request.body.length > this.#checkAbove && !this.#fits(fields)) return null;
    this.#batchWrites();
    const command = new EncodedXadd(fields);
    void this.#redis.sendCommand(command);
    return command.promise as Promise<string | null>;
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

/**
 * One `XADD` whose RESP bytes are written in one pass into one buffer: the same bytes ioredis
 * would send for `xadd(...args)` (strings as UTF-8, Buffers as they are), without its per-argument
 * encoding (measured: about 10 µs of client CPU per XADD through `redis.xadd`, 6 µs this way,
 * batches of 32). Everything else stays ioredis's: reply matching, `commandTimeout`, the offline
 * queue and resends (which call `toWritable` again), and Cluster routing, which reads the key from
 * `args` (the stream, kept as the only argument ioredis sees).
 */
export class EncodedXadd extends Command {
  readonly #args: readonly (string | Buffer)[];

  /** `args`: the stream, the id (`*`), then field/value pairs, as `redis.xadd` takes them. */
  constructor(args: readonly (string | Buffer)[]) {
    super('xadd', [args[0] as string | Buffer], { replyEncoding: 'utf8' });
    this.#args = args;
  }

  override toWritable(): Buffer {
    const args = this.#args;
    const head = `*${args.length + 1}\r\n$4\r\nxadd\r\n`;
    const lengths = new Array<number>(args.length);
    let size = head.length;
    for (let i = 0; i < args.length; i++) {
      const arg = args[i] as string | Buffer;
      const n = typeof arg === 'string' ? Buffer.byteLength(arg, 'utf8') : arg.length;
      lengths[i] = n;
      // `$<n>\r\n<bytes>\r\n`
      size += 5 + String(n).length + n;
    }
    const out = Buffer.allocUnsafe(size);
    let at = out.write(head, 0, 'latin1');
    for (let i = 0; i < args.length; i++) {
      const arg = args[i] as string | Buffer;
      at = writeLength(out, at, lengths[i] as number);
      at += typeof arg === 'string' ? out.write(arg, at, 'utf8') : arg.copy(out, at);
      out[at++] = 13;
      out[at++] = 10;
    }
    return out;
  }
}

/** Writes `$<n>\r\n` at `at` (bytes, no string per argument); returns the offset after it. */
function writeLength(out: Buffer, at: number, n: number): number {
  out[at++] = 0x24;
  if (n < 10) out[at++] = 0x30 + n;
  else {
    const digits = String(n);
    for (let k = 0; k < digits.length; k++) out[at++] = digits.charCodeAt(k);
  }
  out[at++] = 13;
  out[at++] = 10;
  return at;
}

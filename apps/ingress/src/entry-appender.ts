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
  RedisUnavailableError,
  withoutHeaders,
  type Config,
  type HttpProtocol,
} from '@mirrorplane/core';
import { ExpiryQueue, type Expiring } from '@mirrorplane/runtime';
import type { ParsedRequest } from './http1-parser.js';

/** Called once per append: null when Redis has the entry, else the reason it has not (Redis's error, or a timeout). */
export type AppendDone = (error: Error | null) => void;

/** ioredis's message for a command past `commandTimeout`, kept for appends timed out here (the ingress classifies by it). */
export const APPEND_TIMED_OUT = 'Command timed out';

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
  /** Append deadlines (APPEND_TIMEOUT_MS), one timer for all; null without a timeout. */
  readonly #deadlines: ExpiryQueue<EncodedXadd> | null;
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
    this.#deadlines = config.appendTimeoutMs > 0 ? new ExpiryQueue(config.appendTimeoutMs) : null;
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
   * Sends the entry; `done` is called once: with null when Redis has it, with Redis's error, or
   * with `Error(APPEND_TIMED_OUT)` after APPEND_TIMEOUT_MS (a reply after that is ignored).
   * Returns false, sending nothing and never calling `done`, for an entry over what Redis takes
   * (see `setRedisLimits`).
   */
  append(
    request: Pick<ParsedRequest, 'method' | 'target' | 'rawHeaders' | 'body' | 'trailers'>,
    clientAddress: string | undefined,
    done: AppendDone,
    protocol?: HttpProtocol,
  ): boolean {
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
    if (request.body.length > this.#checkAbove && !this.#fits(fields)) return false;
    this.#batchWrites();
    const command = new EncodedXadd(fields);
    if (this.#deadlines !== null) {
      command.at = this.#deadlines.deadlineAt();
      this.#deadlines.add(command);
    }
    // `then` on the command's promise, not a callback kept on the command: measured, a command
    // holding `done` (and through it the request and its connection) made the heap grow and
    // each scavenge take 6 ms instead of 1–2 under load.
    const deadlines = this.#deadlines;
    (command.promise as Promise<unknown>).then(
      () => {
        deadlines?.prune();
        done(null);
      },
      (error: Error) => {
        deadlines?.prune();
        done(error);
      },
    );
    void this.#redis.sendCommand(command);
    return true;
  }

  /** Stops the deadline timer (appends still pending are answered by Redis or its disconnect). */
  close(): void {
    this.#deadlines?.close();
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
 * batches of 32). Everything else stays ioredis's: the promise (settled with the entry id or
 * Redis's error), reply matching, the offline queue and resends (which call `toWritable` again),
 * and Cluster routing, which reads the key from `args` (the stream, kept as the only argument
 * ioredis sees).
 *
 * Its deadline: with `at` set before it is sent, an `ExpiryQueue` holds it and `expire()` fails
 * it as ioredis's `commandTimeout` would (`Command timed out`), in place of the timer per command
 * that ioredis arms and clears; with `at` left Infinity, ioredis's own timer applies.
 */
export class EncodedXadd extends Command implements Expiring {
  #args: readonly (string | Buffer)[];
  /** When the append gives up (`performance.now()` ms); Infinity: ioredis's `commandTimeout` applies. */
  at = Infinity;
  /** Set once the promise settled (or the deadline passed). */
  finished = false;
  #expired = false;

  /** `args`: the stream, the id (`*`), then field/value pairs, as `redis.xadd` takes them. */
  constructor(args: readonly (string | Buffer)[]) {
    super('xadd', [args[0] as string | Buffer], { replyEncoding: 'utf8' });
    this.#args = args;
    const stream = args[0] as string | Buffer;
    const settled = (): void => {
      this.finished = true;
      // Redis answered (or ioredis gave the command up for good): it is never written again, so
      // the body is not kept alive for as long as something still refers to the command (its
      // deadline's queue, a promise reaction). A command that expired here may still be resent
      // by ioredis after a reconnect: it keeps its arguments.
      if (!this.#expired) this.#args = [stream];
    };
    (this.promise as Promise<unknown>).then(settled, settled);
  }

  /** Past `at`: fails as ioredis's `commandTimeout` does (a reply after that is ignored). */
  expire(): void {
    this.#expired = true;
    this.finished = true;
    this.reject(new RedisUnavailableError(APPEND_TIMED_OUT));
  }

  override setTimeout(ms: number): void {
    if (this.at === Infinity) super.setTimeout(ms);
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
      const n = lengths[i] as number;
      at = writeLength(out, at, n);
      if (typeof arg !== 'string') at += arg.copy(out, at);
      else if (n === arg.length && n <= 16) {
        // As many UTF-8 bytes as UTF-16 units: ASCII. Most of an entry's strings are short
        // ASCII (field names, method, time, address), cheaper copied here than through a write call.
        for (let k = 0; k < n; k++) out[at++] = arg.charCodeAt(k);
      } else at += out.write(arg, at, 'utf8');
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

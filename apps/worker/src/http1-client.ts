import { connect as connectTcp, type Socket } from 'node:net';
import { connect as connectTls, type ConnectionOptions } from 'node:tls';
import { isIP } from 'node:net';
import type { Cancellation } from './deadline-queue.js';
import { HTTP_TOKEN, StaleConnectionError, StagingResponseError, StagingTransportError, WireRequestError } from '@mirrorplane/core';

/**
 * The staging client's wire: HTTP/1.1 requests written byte for byte as given, over kept-alive
 * connections to one origin. Why not undici (measured on undici 7.30, `lib/dispatcher/client-h1.js`
 * `writeH1` and `lib/core/request.js` `processHeader`): it writes `host` first and in lower case
 * whatever its place was, always adds `connection: keep-alive`, appends `content-length` last,
 * refuses `*` as a path, an `expect` field and any `transfer-encoding`, and cannot send trailers.
 * A mirror must send names in received case and order, so the request head is ours; per request
 * this is one string concatenation and one write, like undici's own writer.
 *
 * What is written: `<method> <path> HTTP/1.1`, then `headers` as given (names, case, order and
 * duplicates), with framing made true to the body: a `content-length` field keeps its place and
 * case and gets the body's length; a `transfer-encoding` field keeps its place and case and the
 * body goes as one chunk followed by the trailers; without either, a body (or trailers) gets
 * `content-length` (or `transfer-encoding: chunked`) appended. Nothing else is added.
 */

export interface WireRequest {
  method: string;
  /** The request-target, written as is (origin-form, or `*`). */
  path: string;
  /** `[name, value, …]`; names, case, order and duplicates are written as given. */
  headers: readonly string[];
  body: Buffer;
  /** Trailer fields `[name, value, …]`; sent after a chunked body. */
  trailers: readonly string[];
}

export interface WireResponse {
  statusCode: number;
  /** `[name, value, …]`, names lower-cased (as post handlers have always seen them). */
  headers: string[];
  /** Up to `bodyLimit` bytes of the body (empty when the body is not kept). */
  body: Buffer;
  truncated: boolean;
}

/** Thrown when a request cannot be written as HTTP/1.1 (a stage produced an invalid method, path or field). */

export interface Http1OriginOptions {
  /** Bytes of each response body kept; 0: the body is read and discarded. */
  bodyLimit: number;
  /** Idle connections kept at most. */
  maxIdle: number;
  /** Idle time after which a kept connection is closed (shortened by the server's Keep-Alive timeout). */
  idleMs: number;
  /** For https:// origins: CA, client certificate, server name… (see originTlsOptions); the bytes written are the same. */
  tls?: ConnectionOptions;
}

const INVALID_VALUE = /[^\t\x20-\x7e\x80-\xff]/;
const INVALID_PATH = /[^\x21-\x7e\x80-\xff]/;
/** Bodies up to this many bytes are copied behind the head and written with it in one buffer. */
const SINGLE_WRITE_MAX = 16 * 1024;
/** Bytes one read of a plain-TCP connection takes at most (one buffer per connection, reused). */
const READ_BUFFER_BYTES = 16 * 1024;

/** The head and body bytes of a request. */
export function encodeRequest(request: WireRequest): Buffer[] {
  const { method, path, headers, body, trailers } = request;
  if (!HTTP_TOKEN.test(method)) throw new WireRequestError(`method ${JSON.stringify(method.slice(0, 40))} is not a token`);
  if (path.length === 0 || INVALID_PATH.test(path)) throw new WireRequestError(`path ${JSON.stringify(path.slice(0, 100))} holds a space or a control byte`);
  let head = `${method} ${path} HTTP/1.1\r\n`;
  let chunked = false;
  let framed = false;
  for (let i = 0; i < headers.length; i += 2) {
    const name = headers[i] as string;
    let value = headers[i + 1] as string;
    if (!HTTP_TOKEN.test(name)) throw new WireRequestError(`field name ${JSON.stringify(name.slice(0, 40))} is not a token`);
    if (INVALID_VALUE.test(value)) throw new WireRequestError(`field ${name} holds CR, LF, NUL or another control byte`);
    const lower = name.length === 14 || name.length === 17 ? name.toLowerCase() : '';
    if (lower === 'content-length' || lower === 'transfer-encoding') {
      // One framing field, true to the body that is sent: a second one would make the request ambiguous.
      if (framed) continue;
      framed = true;
      chunked = lower === 'transfer-encoding';
      // A value that is already true is kept as received (`Chunked`, `007`): only a stage that
      // changed the body makes the replay's framing differ from what production received.
      if (chunked ? !/^chunked$/i.test(value) : !/^[0-9]+$/.test(value) || Number(value) !== body.length) value = chunked ? 'chunked' : String(body.length);
    }
    head += `${name}: ${value}\r\n`;
  }
  if (!framed && trailers.length > 0) {
    head += 'transfer-encoding: chunked\r\n';
    chunked = true;
  } else if (!framed && body.length > 0) {
    head += `content-length: ${body.length}\r\n`;
  }
  if (!chunked) {
    head += '\r\n';
    if (body.length === 0) return [Buffer.from(head, 'latin1')];
    if (body.length > SINGLE_WRITE_MAX) return [Buffer.from(head, 'latin1'), body];
    // A small body goes in the head's buffer: one write instead of a corked writev of two
    // (the head is latin1, one byte per character).
    const one = Buffer.allocUnsafe(head.length + body.length);
    one.write(head, 0, 'latin1');
    body.copy(one, head.length);
    return [one];
  }
  let tail = body.length > 0 ? '\r\n0\r\n' : '0\r\n';
  for (let i = 0; i < trailers.length; i += 2) {
    const name = trailers[i] as string;
    const value = trailers[i + 1] as string;
    if (!HTTP_TOKEN.test(name) || INVALID_VALUE.test(value)) throw new WireRequestError(`trailer field ${JSON.stringify(name.slice(0, 40))} is not valid`);
    tail += `${name}: ${value}\r\n`;
  }
  tail += '\r\n';
  const out: Buffer[] = [Buffer.from(body.length > 0 ? `${head}\r\n${body.length.toString(16)}\r\n` : `${head}\r\n`, 'latin1')];
  if (body.length > 0) out.push(body);
  out.push(Buffer.from(tail, 'latin1'));
  return out;
}

/** What a connection's listeners call while it carries an exchange. */
interface ExchangeHandlers {
  onData(chunk: Buffer): void;
  onEnd(): void;
  onError(error: Error): void;
}

/**
 * A connection: its listeners are attached once for its life and call the exchange it carries
 * (none while idle), instead of four listeners added and removed per request.
 */
interface Connection {
  socket: Socket;
  exchange: ExchangeHandlers | null;
  /** While idle: when it expires (`Date.now()` ms); it is closed then, and never reused after. */
  idleUntil: number;
}

/** How often idle connections past their expiry are closed (ms); a reuse checks the expiry itself. */
const IDLE_SWEEP_MS = 500;

/** One origin's kept-alive connections. Callers bound concurrency; a connection is opened when none is idle. */
export class Http1Origin {
  readonly #url: URL;
  readonly #options: Http1OriginOptions;
  readonly #idle: Connection[] = [];
  readonly #all = new Set<Socket>();
  #sweeper: NodeJS.Timeout | null = null;
  #closed = false;

  constructor(origin: string, options: Http1OriginOptions) {
    this.#url = new URL(origin);
    this.#options = options;
  }

  /**
   * Sends one request and reads its response. Rejects with `WireRequestError` before anything
   * is sent when the request is not valid HTTP/1.1; with `StagingResponseError`
   * (`MP_ERR_STAGING_RESPONSE`) when the response's framing is broken (the connection is
   * dropped); and with the socket's error (or `signal`'s reason) otherwise.
   *
   * The client never sends a request twice by itself when staging may have read it: a kept
   * connection is retried on a new one only when it was known closed before the write, or
   * failed before any byte of the request reached the kernel. Any later failure is the
   * caller's to retry (the worker does, with the next `x-mirrorplane-attempt`).
   */
  request(request: WireRequest, signal: Cancellation): Promise<WireResponse> {
    // Not an async function: one promise per request (the exchange's), not one per layer.
    try {
      return this.#start(encodeRequest(request), request.method === 'HEAD', signal);
    } catch (error) {
      return Promise.reject(error as Error);
    }
  }

  /**
   * The exchange on a kept connection, or on a new one when none is left. A kept connection
   * found closed before anything reached it (`StaleConnectionError`) makes the exchange start
   * here again, with the next one.
   */
  #start(bytes: Buffer[], head: boolean, signal: Cancellation): Promise<WireResponse> {
    for (let reused = this.#idle.pop(); reused !== undefined; reused = this.#idle.pop()) {
      const socket = reused.socket;
      // Closed (or half-closed) by staging while idle, or past its idle time: nothing was written to it.
      if (socket.destroyed || !socket.writable || socket.readableEnded || Date.now() >= reused.idleUntil) {
        socket.destroy();
        continue;
      }
      return this.#exchange(reused, bytes, head, signal, true);
    }
    return this.#exchange(this.#open(), bytes, head, signal, false);
  }

  #open(): Connection {
    const url = this.#url;
    const port = Number(url.port) || (url.protocol === 'https:' ? 443 : 80);
    const host = url.hostname.startsWith('[') ? url.hostname.slice(1, -1) : url.hostname;
    const conn: Connection = { socket: null as unknown as Socket, exchange: null, idleUntil: 0 };
    const socket =
      url.protocol === 'https:'
        ? connectTls({ host, port, servername: isIP(host) ? undefined : host, ...this.#options.tls, ALPNProtocols: ['http/1.1'] })
        : connectTcp({
            host,
            port,
            // Reads land in one buffer of the connection's, handed straight to the exchange: no
            // Readable stream machinery per read. The reader copies whatever it keeps past a read.
            onread: {
              buffer: Buffer.allocUnsafe(READ_BUFFER_BYTES),
              callback: (n: number, buf: Uint8Array) => {
                conn.exchange?.onData(Buffer.from(buf.buffer, buf.byteOffset, n));
                return true;
              },
            },
          });
    socket.setNoDelay(true);
    conn.socket = socket;
    this.#all.add(socket);
    if (url.protocol === 'https:') socket.on('data', (chunk: Buffer) => conn.exchange?.onData(chunk));
    socket.on('end', () => conn.exchange?.onEnd());
    socket.once('close', () => {
      this.#all.delete(socket);
      const at = this.#idle.indexOf(conn);
      if (at !== -1) this.#idle.splice(at, 1);
      conn.exchange?.onEnd();
    });
    // Reported by the exchange; an idle socket's error just closes it.
    socket.on('error', (error) => conn.exchange?.onError(error));
    return conn;
  }

  #exchange(conn: Connection, bytes: Buffer[], head: boolean, signal: Cancellation, reused: boolean): Promise<WireResponse> {
    const socket = conn.socket;
    return new Promise<WireResponse>((resolve, reject) => {
      const reader = new ResponseReader(head, this.#options.bodyLimit);
      let settled = false;
      /** Some byte of the request reached the kernel: staging may have read it (no silent resend). */
      let written = false;
      const finish = (error: Error | null, response?: WireResponse) => {
        if (settled) return;
        settled = true;
        conn.exchange = null;
        signal.removeEventListener('abort', onAbort);
        if (error !== null) {
          socket.destroy();
          // Nothing of the request reached staging: it goes again, on the next kept connection or a new one.
          if (error instanceof StaleConnectionError) resolve(this.#start(bytes, head, signal));
          else reject(error);
          return;
        }
        if (reader.reusable && !this.#closed && this.#idle.length < this.#options.maxIdle) this.#keep(conn, reader.keepAliveMs);
        else socket.destroy();
        resolve(response as WireResponse);
      };
      const onAbort = () => finish(signal.reason instanceof Error ? signal.reason : new StagingTransportError('aborted'));
      if (signal.aborted) return onAbort();
      conn.exchange = {
        onData: (chunk: Buffer) => {
          let done: WireResponse | null;
          try {
            done = reader.push(chunk);
          } catch (error) {
            finish(error as Error);
            return;
          }
          if (done !== null) finish(null, done);
          // The connection's read buffer is reused by the next read: what waits for more is copied.
          else reader.detach();
        },
        onEnd: () => {
          const done = reader.end();
          if (done !== null) finish(null, done);
          else if (reused && !written && !reader.started) finish(new StaleConnectionError('the kept connection was closed by staging'));
          else finish(new StagingTransportError('UND_ERR_SOCKET: staging closed the connection before the response ended'));
        },
        onError: (error: Error) => {
          if (reused && !written && !reader.started) finish(new StaleConnectionError(error.message));
          else finish(error);
        },
      };
      signal.addEventListener('abort', onAbort);
      const several = bytes.length > 1;
      if (several) socket.cork();
      // The first chunk's callback tells that bytes reached the kernel (an error before it: none did).
      socket.write(bytes[0] as Buffer, (error) => {
        if (!error) written = true;
      });
      if (several) {
        for (let i = 1; i < bytes.length; i++) socket.write(bytes[i] as Buffer);
        socket.uncork();
      }
    });
  }

  #keep(conn: Connection, keepAliveMs: number | null): void {
    // Expire before the server does (its Keep-Alive timeout less a second), as undici does.
    const idle = keepAliveMs === null ? this.#options.idleMs : Math.max(0, Math.min(this.#options.idleMs, keepAliveMs - 1000));
    if (idle === 0) {
      conn.socket.destroy();
      return;
    }
    // A deadline, not a socket timer: arming and disarming a timer per request cost more than the sweep.
    conn.idleUntil = Date.now() + idle;
    this.#idle.push(conn);
    if (this.#sweeper === null) {
      this.#sweeper = setInterval(() => this.#sweep(), IDLE_SWEEP_MS);
      this.#sweeper.unref();
    }
  }

  /** Closes the idle connections past their expiry (each leaves the idle list as it closes). */
  #sweep(): void {
    const now = Date.now();
    for (const conn of this.#idle) if (now >= conn.idleUntil) conn.socket.destroy();
  }

  /** Kept connections waiting for a request (a connection staging closed leaves at once). */
  get idleConnections(): number {
    return this.#idle.length;
  }

  async close(): Promise<void> {
    this.#closed = true;
    if (this.#sweeper !== null) clearInterval(this.#sweeper);
    this.#sweeper = null;
    for (const conn of this.#idle) conn.socket.destroy();
    this.#idle.length = 0;
    // Exchanges in flight are cut by their deadlines; what is left goes now.
    for (const socket of this.#all) socket.destroy();
  }
}

/** `s.slice(from, to)` without leading and trailing SP and HTAB (OWS), no regular expression per field. */
function trimOws(s: string, from: number, to: number): string {
  while (from < to && (s.charCodeAt(from) === 32 || s.charCodeAt(from) === 9)) from++;
  while (to > from && (s.charCodeAt(to - 1) === 32 || s.charCodeAt(to - 1) === 9)) to--;
  return s.slice(from, to);
}

function broken(detail: string): never {
  throw new StagingResponseError(`staging sent a broken response: ${detail}`);
}

/** The empty buffer every reader starts with (nothing can be written into it). */
const EMPTY = Buffer.alloc(0);

const RESPONSE_VALUE_INVALID = /[^\t\x20-\x7e\x80-\xff]/;
/** A chunk-size line: hex size, then optional extensions of visible bytes (RFC 9112 §7.1.1). */
const CHUNK_LINE = /^([0-9a-fA-F]{1,12})(?:[ \t]*;[\t\x20-\x7e\x80-\xff]*)?$/;
/** Longest chunk-size line or trailer line read, and the trailer section as a whole (like the head's cap). */
const MAX_CHUNK_LINE = 8 * 1024;
const MAX_TRAILER_BYTES = 1024 * 1024;

const enum Body {
  Head,
  Length,
  ChunkSize,
  ChunkData,
  ChunkEnd,
  Trailers,
  UntilClose,
  Done,
}

/** Reads one response (after any 1xx) from a connection's bytes (RFC 9112 §6.3 framing). */
class ResponseReader {
  readonly #headRequest: boolean;
  readonly #limit: number;
  #buf: Buffer = EMPTY;
  #state = Body.Head;
  #remaining = 0;
  #status = 0;
  #headers: string[] = [];
  #chunks: Buffer[] = [];
  #kept = 0;
  #trailerBytes = 0;
  #truncated = false;
  #close = false;
  /** Any byte of the response arrived. */
  started = false;
  /** The connection may carry another request after this response. */
  reusable = false;
  /** The server's Keep-Alive timeout, if it said. */
  keepAliveMs: number | null = null;

  constructor(headRequest: boolean, limit: number) {
    this.#headRequest = headRequest;
    this.#limit = limit;
  }

  /** Adds bytes; returns the response once it is complete. */
  push(chunk: Buffer): WireResponse | null {
    this.started = true;
    this.#buf = this.#buf.length === 0 ? chunk : Buffer.concat([this.#buf, chunk]);
    for (;;) {
      switch (this.#state) {
        case Body.Head: {
          const end = this.#buf.indexOf('\r\n\r\n');
          if (end === -1) {
            if (this.#buf.length > 1024 * 1024) throw new StagingTransportError('staging response head over 1 MiB');
            return null;
          }
          const lines = this.#buf.toString('latin1', 0, end).split('\r\n');
          this.#buf = this.#buf.subarray(end + 4);
          const status = /^HTTP\/1\.([01]) (\d{3})(?: |$)/.exec(lines[0] as string);
          if (status === null)
            throw new StagingTransportError(`staging answered something that is not HTTP/1.x: ${JSON.stringify((lines[0] as string).slice(0, 60))}`);
          const code = Number(status[2]);
          // 1xx: informational, the real response follows (101 is never asked for).
          if (code < 200) continue;
          this.#status = code;
          let length: number | null = null;
          let lengthValue: string | null = null;
          let chunked = false;
          let te = false;
          let teOther = false;
          this.#close = status[1] === '0';
          for (let i = 1; i < lines.length; i++) {
            const line = lines[i] as string;
            const colon = line.indexOf(':');
            if (colon <= 0) broken('a field line without a name and colon');
            const rawName = line.slice(0, colon);
            if (!HTTP_TOKEN.test(rawName))
              broken(`field name ${JSON.stringify(rawName.slice(0, 40))} is not a token (obs-fold, whitespace before the colon, or a control byte)`);
            const name = rawName.toLowerCase();
            const value = trimOws(line, colon + 1, line.length);
            if (RESPONSE_VALUE_INVALID.test(value)) broken(`field ${name} holds a bare CR or LF, NUL or another control byte`);
            this.#headers.push(name, value);
            if (name === 'content-length') {
              // 1*DIGIT only; repeated (as fields or a list) only with the same value (RFC 9110 §8.6).
              for (const part of value.split(',')) {
                const v = trimOws(part, 0, part.length);
                if (!/^[0-9]{1,15}$/.test(v)) broken(`content-length ${JSON.stringify(value.slice(0, 40))} is not a number`);
                if (lengthValue !== null && Number(v) !== Number(lengthValue)) broken('two different content-lengths');
                lengthValue = v;
              }
              length = Number(lengthValue);
            } else if (name === 'transfer-encoding') {
              te = true;
              if (/(?:^|,)\s*chunked\s*$/i.test(value)) chunked = true;
              else teOther = true;
            } else if (name === 'connection') {
              if (/(?:^|,)\s*close\s*(?:,|$)/i.test(value)) this.#close = true;
              else if (/(?:^|,)\s*keep-alive\s*(?:,|$)/i.test(value)) this.#close = false;
            } else if (name === 'keep-alive') {
              const timeout = /timeout\s*=\s*(\d+)/i.exec(value);
              if (timeout) this.keepAliveMs = Number(timeout[1]) * 1000;
            }
          }
          if (te && length !== null && !this.#headRequest) broken('both content-length and transfer-encoding');
          if (this.#headRequest || code === 204 || code === 304) this.#state = Body.Done;
          else if (chunked) this.#state = Body.ChunkSize;
          else if (teOther) this.#state = Body.UntilClose;
          else if (length !== null) {
            if (!Number.isSafeInteger(length) || length < 0) throw new StagingTransportError('staging sent an invalid content-length');
            this.#remaining = length;
            this.#state = length === 0 ? Body.Done : Body.Length;
          } else this.#state = Body.UntilClose;
          continue;
        }
        case Body.Length:
        case Body.ChunkData: {
          if (this.#buf.length === 0) return null;
          const n = Math.min(this.#buf.length, this.#remaining);
          this.#keep(this.#buf.subarray(0, n));
          this.#buf = this.#buf.subarray(n);
          this.#remaining -= n;
          if (this.#remaining > 0) return null;
          this.#state = this.#state === Body.Length ? Body.Done : Body.ChunkEnd;
          continue;
        }
        case Body.ChunkSize: {
          const end = this.#buf.indexOf('\r\n');
          if (end === -1) {
            if (this.#buf.length > MAX_CHUNK_LINE) broken(`a chunk-size line over ${MAX_CHUNK_LINE} bytes`);
            return null;
          }
          if (end > MAX_CHUNK_LINE) broken(`a chunk-size line over ${MAX_CHUNK_LINE} bytes`);
          const size = CHUNK_LINE.exec(this.#buf.toString('latin1', 0, end));
          if (size === null) broken('a bad chunk size or extension');
          this.#buf = this.#buf.subarray(end + 2);
          this.#remaining = parseInt(size[1] as string, 16);
          this.#state = this.#remaining === 0 ? Body.Trailers : Body.ChunkData;
          continue;
        }
        case Body.ChunkEnd:
          if (this.#buf.length < 2) return null;
          if (this.#buf[0] !== 13 || this.#buf[1] !== 10) broken('chunk data not followed by CRLF');
          this.#buf = this.#buf.subarray(2);
          this.#state = Body.ChunkSize;
          continue;
        case Body.Trailers: {
          const end = this.#buf.indexOf('\r\n');
          if (end === -1) {
            if (this.#buf.length > MAX_CHUNK_LINE || this.#trailerBytes + this.#buf.length > MAX_TRAILER_BYTES)
              broken('a trailer line or section over its limit');
            return null;
          }
          this.#trailerBytes += end + 2;
          if (end > MAX_CHUNK_LINE || this.#trailerBytes > MAX_TRAILER_BYTES) broken('a trailer line or section over its limit');
          if (end > 0) {
            const line = this.#buf.toString('latin1', 0, end);
            const colon = line.indexOf(':');
            if (colon <= 0 || !HTTP_TOKEN.test(line.slice(0, colon)) || RESPONSE_VALUE_INVALID.test(line.slice(colon + 1))) broken('a malformed trailer field');
          }
          this.#buf = this.#buf.subarray(end + 2);
          if (end === 0) this.#state = Body.Done;
          continue;
        }
        case Body.UntilClose:
          if (this.#buf.length > 0) this.#keep(this.#buf);
          this.#buf = Buffer.alloc(0);
          return null;
        case Body.Done:
          // Bytes after a response we did not ask for: the connection is not reused.
          this.reusable = !this.#close && this.#buf.length === 0;
          return this.#response();
      }
    }
  }

  /** Copies the bytes kept for the next push, so that they hold no view of the caller's buffer. */
  detach(): void {
    if (this.#buf.length > 0) this.#buf = Buffer.from(this.#buf);
  }

  /** The connection ended: a response read until close is complete now. */
  end(): WireResponse | null {
    if (this.#state === Body.UntilClose) return this.#response();
    return null;
  }

  #keep(chunk: Buffer): void {
    if (this.#kept >= this.#limit) {
      if (chunk.length > 0) this.#truncated = this.#limit > 0 || this.#truncated;
      return;
    }
    const room = this.#limit - this.#kept;
    if (chunk.length > room) this.#truncated = true;
    const part = chunk.length > room ? chunk.subarray(0, room) : chunk;
    // A copy: the chunk may be a view of a larger socket buffer that must not be held.
    this.#chunks.push(Buffer.from(part));
    this.#kept += part.length;
  }

  #response(): WireResponse {
    return {
      statusCode: this.#status,
      headers: this.#headers,
      body: this.#chunks.length === 0 ? EMPTY : Buffer.concat(this.#chunks, this.#kept),
      truncated: this.#truncated,
    };
  }
}

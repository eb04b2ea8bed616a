import { performance } from 'node:perf_hooks';
import { createServer, type Server, type Socket } from 'node:net';
import { MIRRORPLANE_DROP_HEADER } from '@mirrorplane/core';
import { isListening, listenHttp, stopListening, type ServerTls } from '@mirrorplane/runtime';
import { RequestParser, type ParsedRequest, type Refusal, type RefusalReason, type RequestHead } from './http1-parser.js';

/** Why a request was lost before the ingress could answer it: refused by the parser, too slow, or cut. */
export type IntakeLoss = RefusalReason | 'headers_timeout' | 'body_timeout' | 'aborted';

/** Answers the ingress writes; computed once. */
const OK = Buffer.from('HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n', 'latin1');
const OK_KEEP_ALIVE_10 = Buffer.from('HTTP/1.1 200 OK\r\nconnection: keep-alive\r\ncontent-length: 0\r\n\r\n', 'latin1');
const OK_CLOSE = Buffer.from('HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 0\r\n\r\n', 'latin1');
const CONTINUE = Buffer.from('HTTP/1.1 100 Continue\r\n\r\n', 'latin1');
/** The HTTP/2 client connection preface (RFC 9113 §3.4): prior knowledge, h2c. */
const H2_PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1');
const H2_PREFACE_FIRST = 0x50; // 'P'
/**
 * Time a connection the ingress is done with (answered with `connection: close`, refused,
 * half-closed by the client, drained at shutdown) has to take its last answer and close; then it
 * is destroyed, whatever the peer still sends or does not read.
 */
export const LINGER_MS = 5000;
/**
 * Bytes a finished connection reads and drops while it lingers (RFC 9112 §9.6: a server that
 * closes should keep reading, so that the peer's FIN is seen and its data does not turn the
 * close into a reset that can destroy the answer before the peer reads it). Past this the
 * socket is destroyed at once.
 */
export const LINGER_MAX_BYTES = 1024 * 1024;
const STATUS_TEXT: Record<number, string> = {
  400: 'Bad Request',
  401: 'Unauthorized',
  405: 'Method Not Allowed',
  408: 'Request Timeout',
  413: 'Content Too Large',
  417: 'Expectation Failed',
  431: 'Request Header Fields Too Large',
  503: 'Service Unavailable',
  505: 'HTTP Version Not Supported',
};

export interface IntakeHandlers {
  /**
   * A request head arrived. Return null to read its body, or `[status, reason]` to refuse it at
   * once (the connection closes: its body is never read).
   */
  head(head: RequestHead): readonly [status: number, reason: string] | null;
  /** A whole request arrived (after `head` let it in). Call `answer` exactly once: 200 accepts, anything else refuses with `reason`. */
  request(request: ParsedRequest, remoteAddress: string | undefined, answer: (status: number, reason?: string) => void): void;
  /** A request was lost before `request`: refused by the parser, cut by the client, or too slow. `afterHead`: `head` had seen it. */
  lost(reason: IntakeLoss, afterHead: boolean, refusal: Refusal | null): void;
}

export interface IntakeServerOptions {
  maxHeaderBytes: number;
  maxBodyBytes: number;
  /** Time a client has from a request's first byte to its last (BODY_TIMEOUT_MS). */
  requestTimeoutMs: number;
  /** Time a client has from a request's first byte to the end of its head (HEADERS_TIMEOUT_MS). */
  headersTimeoutMs: number;
  /** Connections open at once on the traffic port; more are closed as they arrive (MAX_CONNECTIONS; 0: no cap). */
  maxConnections: number;
  /** Idle time after which a kept-alive connection is closed; longer than the proxy's own. */
  keepAliveTimeoutMs: number;
  /**
   * Takes a connection that opened with the HTTP/2 preface (the bytes read are back on the
   * socket, which is paused). Absent: such a connection is read as HTTP/1.1 (and refused).
   */
  http2?: (socket: Socket) => void;
}

/**
 * The traffic port: HTTP/1.1 on `node:net` with the ingress's own parser. Keep-alive and
 * pipelining (requests are answered in order, one at a time per connection: the next is parsed
 * only after the previous one's answer), `Expect: 100-continue`, HTTP/1.0. Any refusal closes
 * the connection, since unread bytes would be taken for the next request.
 */
export class IntakeServer {
  readonly #server: Server;
  readonly #options: IntakeServerOptions;
  readonly #handlers: IntakeHandlers;
  readonly #connections = new Set<IntakeConnection>();
  #timer: NodeJS.Timeout | null = null;
  /** When set, every answer closes its connection and idle connections are closed. */
  draining = false;

  constructor(options: IntakeServerOptions, handlers: IntakeHandlers) {
    this.#options = options;
    this.#handlers = handlers;
    // allowHalfOpen: a client may send a request and half-close; it still gets its answer.
    this.#server = createServer({ allowHalfOpen: true, noDelay: true }, (socket) => {
      // Behind TLS, a client that chose h2 in ALPN speaks HTTP/2 from its first byte.
      if ((socket as Socket & { alpnProtocol?: string | false }).alpnProtocol === 'h2' && this.#options.http2 !== undefined) {
        this.#options.http2(socket);
        return;
      }
      const connection = new IntakeConnection(socket, this.#options, this.#handlers, this);
      this.#connections.add(connection);
      socket.once('close', () => this.#connections.delete(connection));
    });
    // Bounds partial heads in memory at once to about maxConnections × MAX_HEADER_BYTES
    // (node closes a connection over the cap as soon as it is accepted).
    if (options.maxConnections > 0) this.#server.maxConnections = options.maxConnections;
  }

  get listening(): boolean {
    return isListening(this.#server);
  }

  /** Starts listening (with `tls`: TLS only, the same connection handler behind it); resolves with the bound port. */
  async listen(port: number, host: string, tls?: ServerTls | null): Promise<number> {
    // h2 is offered only with an HTTP/2 intake; without ALPN (or with http/1.1) the first bytes
    // still decide, so HTTP/2 with prior knowledge works over TLS as in clear text.
    const bound = await listenHttp(this.#server, port, host, tls, this.#options.http2 === undefined ? ['http/1.1'] : ['h2', 'http/1.1']);
    // Deadlines are checked on an interval, not with a timer per request: one timer for all.
    const every = Math.min(1000, this.#options.requestTimeoutMs, this.#options.headersTimeoutMs);
    this.#timer = setInterval(() => this.#checkDeadlines(), every).unref();
    return bound;
  }

  #checkDeadlines(): void {
    const now = performance.now();
    for (const connection of this.#connections) connection.checkDeadline(now);
  }

  /** Stops accepting connections; resolves once every connection is closed. */
  close(): Promise<void> {
    this.draining = true;
    const closed = stopListening(this.#server).then(() => {
      if (this.#timer) clearInterval(this.#timer);
    });
    this.closeIdleConnections();
    return closed;
  }

  /** Closes connections that wait for no answer and hold no partial request. */
  closeIdleConnections(): void {
    for (const connection of this.#connections) connection.closeIfIdle();
  }

  closeAllConnections(): void {
    for (const connection of this.#connections) connection.destroy();
  }

  /** A connection turned out to be HTTP/2: it is no longer one of ours. */
  handOff(connection: IntakeConnection, socket: Socket): void {
    this.#connections.delete(connection);
    this.#options.http2?.(socket);
  }
}

class IntakeConnection {
  readonly #socket: Socket;
  readonly #parser: RequestParser;
  readonly #handlers: IntakeHandlers;
  readonly #server: IntakeServer;
  readonly #timeoutMs: number;
  readonly #headersTimeoutMs: number;
  /** performance.now() by which the current head must be complete; 0 when no head is being read. */
  #headDeadline = 0;
  /** Waiting for the answer to a whole request; nothing more is parsed meanwhile. */
  #busy = false;
  /** Reading was paused because bytes arrived while busy (resumed after the answer). */
  #paused = false;
  /**
   * An answer did not fit the socket's buffer (the peer does not read): nothing more is read or
   * parsed until 'drain', so unsent answers held here stay within one socket buffer.
   */
  #blocked = false;
  /** The current request's head was seen (handlers.head was called). */
  #afterHead = false;
  #keepAlive = true;
  /** performance.now() by which the current request must be complete; 0 when none is started. */
  #deadline = 0;
  #ended = false;
  #closed = false;
  /** Bytes dropped since the connection finished. */
  #discarded = 0;
  /**
   * The first bytes of a connection while they may still be the HTTP/2 preface; null once the
   * connection is known to be HTTP/1.1 (one comparison per chunk after that).
   */
  #sniffed: Buffer | null;
  readonly #listeners: { data: (chunk: Buffer) => void; end: () => void; close: () => void };

  constructor(socket: Socket, options: IntakeServerOptions, handlers: IntakeHandlers, server: IntakeServer) {
    this.#socket = socket;
    this.#parser = new RequestParser(options);
    this.#handlers = handlers;
    this.#server = server;
    this.#timeoutMs = options.requestTimeoutMs;
    this.#headersTimeoutMs = options.headersTimeoutMs;
    this.#sniffed = options.http2 === undefined ? null : Buffer.alloc(0);
    socket.setTimeout(options.keepAliveTimeoutMs, () => {
      // Idle for that long with nothing to answer (the proxy went quiet), or with answers the
      // peer does not read. A partial request is bounded by its own deadlines instead.
      if (this.#blocked || (!this.#busy && !this.#parser.midRequest)) socket.destroy();
    });
    this.#listeners = {
      data: (chunk: Buffer) => {
        // A finished connection (answered with close, refused) reads on and drops what comes,
        // up to LINGER_MAX_BYTES, until the peer's FIN (see #finish).
        if (this.#closed) {
          this.#discarded += chunk.length;
          if (this.#discarded > LINGER_MAX_BYTES) socket.destroy();
          return;
        }
        if (this.#sniffed !== null) {
          const bytes = this.#sniff(chunk);
          if (bytes === null) return;
          chunk = bytes;
        }
        this.#parser.feed(chunk);
        if (!this.#busy && !this.#blocked) this.#run();
        // Bytes while an answer is pending (pipelining): stop reading until it is written, so a
        // client cannot make the ingress buffer more than one read ahead. Paused only then: a
        // pause and resume per request would cost every request a trip through the stream.
        else if (!this.#paused) {
          this.#paused = true;
          socket.pause();
        }
      },
      end: () => {
        this.#ended = true;
        if (this.#busy || this.#blocked) return; // answered, then closed (in #answer / #drained)
        this.#lostIfStarted('aborted');
        this.#finish(null);
      },
      close: () => {
        if (!this.#busy) this.#lostIfStarted('aborted');
        this.#closed = true;
      },
    };
    socket.on('data', this.#listeners.data);
    socket.on('end', this.#listeners.end);
    socket.on('error', () => undefined); // 'close' follows
    socket.on('close', this.#listeners.close);
  }

  /**
   * Reads the first bytes of a connection: while they match the HTTP/2 preface they are held;
   * all of it hands the connection to HTTP/2; the first byte that differs makes it HTTP/1.1,
   * and what was held is returned to be parsed. Returns null while bytes are held.
   */
  #sniff(chunk: Buffer): Buffer | null {
    const held = this.#sniffed as Buffer;
    // The common case: the first byte of an HTTP/1.1 method that is not P….
    if (held.length === 0 && chunk[0] !== H2_PREFACE_FIRST) {
      this.#sniffed = null;
      return chunk;
    }
    const bytes = held.length === 0 ? chunk : Buffer.concat([held, chunk]);
    const n = Math.min(bytes.length, H2_PREFACE.length);
    if (bytes.compare(H2_PREFACE, 0, n, 0, n) !== 0) {
      this.#sniffed = null;
      return bytes;
    }
    if (n < H2_PREFACE.length) {
      this.#sniffed = bytes;
      return null;
    }
    this.#sniffed = null;
    this.#closed = true;
    const socket = this.#socket;
    socket.pause();
    socket.off('data', this.#listeners.data);
    socket.off('end', this.#listeners.end);
    socket.off('close', this.#listeners.close);
    socket.setTimeout(0);
    socket.unshift(bytes);
    this.#server.handOff(this, socket);
    return null;
  }

  /** Counts a request cut by the client (once: a closed connection counts nothing more). */
  #lostIfStarted(reason: IntakeLoss): void {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#deadline === 0 && !this.#parser.midRequest) return;
    this.#deadline = 0;
    const afterHead = this.#afterHead;
    this.#afterHead = false;
    this.#handlers.lost(reason, afterHead, null);
  }

  #run(): void {
    while (!this.#busy && !this.#closed) {
      const event = this.#parser.next();
      if (event === null) {
        if (this.#deadline === 0 && this.#parser.midRequest) this.#deadline = performance.now() + this.#timeoutMs;
        if (this.#headDeadline === 0 && this.#parser.inHead) this.#headDeadline = performance.now() + this.#headersTimeoutMs;
        return;
      }
      if (event.kind === 'refused') {
        const { refusal } = event;
        const afterHead = this.#afterHead;
        this.#afterHead = false;
        this.#deadline = 0;
        this.#handlers.lost(refusal.reason, afterHead, refusal);
        this.#refuse(refusal.status, refusal.reason);
        return;
      }
      if (event.kind === 'head') {
        const { head } = event;
        this.#afterHead = true;
        this.#headDeadline = 0;
        if (this.#deadline === 0) this.#deadline = performance.now() + this.#timeoutMs;
        const refused = this.#handlers.head(head);
        if (refused !== null) {
          this.#afterHead = false;
          this.#deadline = 0;
          this.#refuse(refused[0], refused[1]);
          return;
        }
        this.#keepAlive = head.keepAlive;
        if (head.expectContinue) this.#socket.write(CONTINUE);
        continue;
      }
      // A whole request: hold the connection until it is answered (answers go out in order).
      this.#busy = true;
      this.#deadline = 0;
      const request = event.request;
      let answered = false;
      this.#handlers.request(request, this.#socket.remoteAddress, (status, reason) => {
        if (answered) return;
        answered = true;
        this.#answer(request, status, reason);
      });
    }
  }

  #answer(request: ParsedRequest, status: number, reason: string | undefined): void {
    this.#busy = false;
    this.#headDeadline = 0;
    this.#afterHead = false;
    if (this.#closed) return;
    if (status !== 200) {
      this.#refuse(status, reason ?? 'refused');
      return;
    }
    // The client half-closed: close after this answer unless requests it sent before its FIN
    // are still to be read (reading is not paused while an answer is pending, so the FIN can
    // arrive before the answer).
    if (!this.#keepAlive || (this.#ended && !this.#parser.midRequest) || this.#server.draining) {
      this.#finish(OK_CLOSE);
      return;
    }
    // Back-pressure: one branch on the write's result. An answer the socket could not take
    // stops reading and parsing until the peer reads (as node:http does).
    if (!this.#socket.write(request.minor === 0 ? OK_KEEP_ALIVE_10 : OK)) {
      this.#blocked = true;
      if (!this.#paused) {
        this.#paused = true;
        this.#socket.pause();
      }
      this.#socket.once('drain', this.#drained);
      return;
    }
    this.#continue();
  }

  /** The peer read the answers that did not fit: read and parse again. */
  readonly #drained = (): void => {
    this.#blocked = false;
    if (this.#closed) return;
    this.#continue();
  };

  /** After an answer: reads on, parses pipelined requests already received, closes a half-closed connection. */
  #continue(): void {
    if (this.#paused) {
      this.#paused = false;
      this.#socket.resume();
    }
    // Pipelined requests already received are parsed now.
    this.#run();
    // Half-closed and nothing whole left to answer: as when the FIN arrives on an idle connection.
    if (this.#ended && !this.#busy && !this.#blocked && !this.#closed) {
      this.#lostIfStarted('aborted');
      this.#finish(null);
    }
  }

  /**
   * The one way a connection the ingress is done with ends: `last` (if any) is written with a
   * FIN, then the connection lingers: it reads on and drops what arrives (at most
   * LINGER_MAX_BYTES) until the peer's FIN, which destroys it at once, or LINGER_MS, whatever
   * the peer still sends or does not read. It holds a MAX_CONNECTIONS slot until then: a
   * connection that stopped reading instead never saw the FIN of a peer that had sent a body
   * (refused at its head), and held its slot the whole LINGER_MS — under a storm of refusals
   * (Redis hung, APPEND_TIMEOUT_MS short) the slots ran out and new connections were closed
   * with no answer at all.
   */
  #finish(last: Buffer | string | null): void {
    this.#closed = true;
    this.#deadline = 0;
    this.#headDeadline = 0;
    const socket = this.#socket;
    this.#paused = false;
    socket.resume();
    if (socket.destroyed || !socket.writable) {
      socket.destroy();
      return;
    }
    if (last === null) socket.end();
    else socket.end(last, 'latin1');
    const timer = setTimeout(() => socket.destroy(), LINGER_MS).unref();
    socket.once('close', () => clearTimeout(timer));
  }

  /**
   * Answers with an error and closes: bytes after a refused request cannot be trusted. Every
   * refusal goes through here: the socket stops reading at once (a client that keeps sending
   * fills its own TCP window, not the ingress's memory), the answer is written with a FIN, and
   * the socket is destroyed once the answer is flushed and the client had a moment to read it.
   */
  #refuse(status: number, reason: string): void {
    const body = `${reason}\n`;
    this.#finish(
      `HTTP/1.1 ${status} ${STATUS_TEXT[status] ?? 'Error'}\r\nconnection: close\r\ncontent-type: text/plain\r\n${MIRRORPLANE_DROP_HEADER}: ${reason}\r\ncontent-length: ${body.length}\r\n\r\n${body}`,
    );
  }

  checkDeadline(now: number): void {
    if (this.#busy || this.#closed) return;
    if (this.#headDeadline !== 0 && now >= this.#headDeadline) {
      this.#headDeadline = 0;
      this.#deadline = 0;
      this.#afterHead = false;
      this.#handlers.lost('headers_timeout', false, null);
      this.#refuse(408, 'headers_timeout');
      return;
    }
    if (this.#deadline === 0 || now < this.#deadline) return;
    const afterHead = this.#afterHead;
    this.#afterHead = false;
    this.#deadline = 0;
    this.#handlers.lost('body_timeout', afterHead, null);
    this.#refuse(408, 'body_timeout');
  }

  closeIfIdle(): void {
    if (!this.#busy && !this.#blocked && !this.#parser.midRequest && this.#deadline === 0) this.#finish(null);
  }

  destroy(): void {
    this.#closed = true;
    this.#socket.destroy();
  }
}

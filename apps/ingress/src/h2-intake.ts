import { constants, createServer, type Http2Server, type ServerHttp2Session, type ServerHttp2Stream, type IncomingHttpHeaders } from 'node:http2';
import type { Socket } from 'node:net';
import { GRPC_STATUS, MIRRORPLANE_DROP_HEADER, filterHeaders, isGrpcContentType } from '@mirrorplane/core';

/**
 * HTTP/2 with prior knowledge (h2c) on the traffic port, beside the HTTP/1.1 parser: what Envoy
 * sends to a cluster with `http2_protocol_options`. The `IntakeServer` hands a connection here
 * when its first bytes are the client preface; `node:http2` (nghttp2) does the framing, HPACK
 * and flow control. Each stream is one request: `:method`, `:path`, the other pseudo-headers
 * (`:scheme`, `:authority`) and the fields in received order, every DATA frame, the trailers.
 *
 * Answers, sent only after the handlers answer (for an accepted stream: after Redis holds the
 * entry): a gRPC request (`content-type: application/grpc…`) gets `:status 200` and the trailer
 * `grpc-status: 0`, so Envoy's mirror accounting sees a success; any other request `:status 200`
 * and no body. Refusals use the protocol's own errors, counted by reason:
 * - more than `maxConcurrentStreams` streams open on a connection: advertised in SETTINGS, and
 *   nghttp2 refuses the excess with RST_STREAM REFUSED_STREAM (before the SETTINGS are
 *   acknowledged) or GOAWAY PROTOCOL_ERROR (after) before the stream reaches us, so these are
 *   not counted per stream; one that slips through is refused by us the same way
 *   [too_many_streams];
 * - a header list (RFC 9113 §6.5.2 size: name + value + 32 per field) over `maxHeaderBytes`:
 *   gRPC status RESOURCE_EXHAUSTED (8), or `:status 431` [headers_too_large] (twice that is
 *   refused by nghttp2 with RST_STREAM before the stream reaches us, uncounted);
 * - a body over `maxBodyBytes`, or one that would make the bodies a connection holds exceed
 *   twice that: gRPC RESOURCE_EXHAUSTED, or `:status 413` [too_large];
 * - CONNECT (a tunnel) [unsupported]; a reset or a closed connection before the end of the
 *   stream [aborted]; no frame for `requestTimeoutMs` while the body is read [body_timeout].
 * Refusals of the handlers (`admit`: shutting down, unauthorized, backlog full; an append that
 * failed) map to gRPC UNAVAILABLE (14) / UNAUTHENTICATED (16), or to their HTTP status.
 */

/** Why a stream was lost before the ingress could answer it. */
export type H2Loss = 'headers_too_large' | 'too_large' | 'too_many_streams' | 'unsupported' | 'aborted' | 'body_timeout';

/** A whole HTTP/2 request. */
export interface H2Request {
  method: string;
  /** `:path` as received. */
  target: string;
  /** Every field in order, `:method` and `:path` left out, other pseudo-headers kept in place (latin1). */
  rawHeaders: string[];
  body: Buffer;
  /** Trailer fields in order (`[name, value, …]`); empty when none. */
  trailers: string[];
}

export interface H2IntakeHandlers {
  /** A stream's headers arrived: `[status, reason]` refuses it at once, null reads its body. */
  admit(rawHeaders: readonly string[]): readonly [status: number, reason: string] | null;
  /** A whole request, after `admit` let it in. Call `answer` once: 200 accepts, anything else refuses with `reason`. */
  request(request: H2Request, remoteAddress: string | undefined, answer: (status: number, reason?: string) => void): void;
  /** A stream lost before `request`; `afterAdmit`: `admit` had let it in. */
  lost(reason: H2Loss, afterAdmit: boolean): void;
}

export interface H2IntakeOptions {
  /** Header list size (RFC 9113 §6.5.2), and separately of the trailers. */
  maxHeaderBytes: number;
  maxBodyBytes: number;
  maxConcurrentStreams: number;
  /** Time a stream may go without a frame while its body is read (ms). */
  requestTimeoutMs: number;
  /** Idle time after which a connection with no open stream is closed (ms). */
  keepAliveTimeoutMs: number;
}

/** The gRPC status a refusal with this HTTP status becomes. */
function refusalGrpcStatus(status: number): string {
  if (status === 413 || status === 431) return String(GRPC_STATUS.RESOURCE_EXHAUSTED);
  if (status === 401) return String(GRPC_STATUS.UNAUTHENTICATED);
  if (status >= 500) return String(GRPC_STATUS.UNAVAILABLE);
  return String(GRPC_STATUS.INVALID_ARGUMENT);
}

/** RFC 9113 §6.5.2: the size of a header list. */
function headerListSize(raw: readonly string[]): number {
  let size = 0;
  for (let i = 0; i < raw.length; i++) size += (raw[i] as string).length;
  return size + 16 * raw.length;
}

const open = new WeakMap<ServerHttp2Session, number>();
/**
 * Body bytes each connection holds (read, or waiting for Redis). Bounded by twice
 * MAX_BODY_BYTES, the bound of an HTTP/1.1 connection, so that ingress memory stays about
 * MAX_CONNECTIONS × 2 × MAX_BODY_BYTES whichever protocol the connections speak.
 */
const held = new WeakMap<ServerHttp2Session, number>();

export class H2Intake {
  readonly #server: Http2Server;
  readonly #options: H2IntakeOptions;
  readonly #handlers: H2IntakeHandlers;
  readonly #sessions = new Set<ServerHttp2Session>();

  constructor(options: H2IntakeOptions, handlers: H2IntakeHandlers) {
    this.#options = options;
    this.#handlers = handlers;
    // nghttp2's own bounds sit above ours, so that what is over ours reaches us and is counted.
    const listLimit = Math.min(2 * options.maxHeaderBytes, 0xffffffff);
    this.#server = createServer({
      settings: { maxConcurrentStreams: options.maxConcurrentStreams, maxHeaderListSize: listLimit, enablePush: false },
      // Each field costs at least 32 bytes of the list size: the pair cap follows from the size cap.
      maxHeaderListPairs: Math.ceil(listLimit / 32) + 8,
    });
    this.#server.on('session', (session: ServerHttp2Session) => {
      this.#sessions.add(session);
      open.set(session, 0);
      session.on('error', () => undefined);
      session.setTimeout(options.keepAliveTimeoutMs, () => {
        if ((open.get(session) ?? 0) === 0 && !session.destroyed && !session.closed) session.close();
      });
      session.once('close', () => this.#sessions.delete(session));
    });
    this.#server.on('sessionError', () => undefined);
    // No peer input may throw out of an event handler (an uncaught exception ends the ingress):
    // each handler that can see a stream or session nghttp2 has already reset or destroyed
    // checks for it, and what is left is caught here and the stream reset.
    this.#server.on('stream', (stream: ServerHttp2Stream, headers: IncomingHttpHeaders, _flags: number, rawHeaders: string[]) => {
      try {
        this.#onStream(stream, headers, rawHeaders);
      } catch {
        resetQuietly(stream);
      }
    });
  }

  /** Takes over a connection whose first bytes (the preface, unshifted back onto the socket) were read. */
  accept(socket: Socket): void {
    // The traffic port allows half-open HTTP/1.1 connections; an HTTP/2 session learns of a
    // peer gone only if the end of its input ends the socket (else open streams wait for
    // their timeout and are counted as body_timeout).
    socket.allowHalfOpen = false;
    // node:http2 takes a TLS socket without h2 in ALPN for HTTP/1.1 and drops it; this one
    // opened with the HTTP/2 preface (prior knowledge), so it is HTTP/2 whatever ALPN said.
    const tls = socket as Socket & { encrypted?: boolean; alpnProtocol?: string | false };
    if (tls.encrypted === true && tls.alpnProtocol !== 'h2') tls.alpnProtocol = 'h2';
    this.#server.emit('connection', socket);
  }

  /** Connections open. */
  get sessions(): number {
    return this.#sessions.size;
  }

  /** Sends GOAWAY on every connection: open streams finish, no new ones start. */
  closeGracefully(): void {
    for (const session of this.#sessions) session.close();
  }

  closeAll(): void {
    for (const session of this.#sessions) session.destroy();
  }

  #onStream(stream: ServerHttp2Stream, headers: IncomingHttpHeaders, rawHeaders: string[]): void {
    stream.on('error', () => undefined);
    // A stream nghttp2 reset in the same read as its HEADERS (a content-length that disagrees
    // with the DATA, a RST_STREAM right behind) reaches us destroyed, its session already
    // detached: it is lost before it was admitted.
    const session = stream.session as ServerHttp2Session | undefined;
    if (session === undefined || stream.destroyed || stream.closed) {
      this.#handlers.lost('aborted', false);
      return;
    }
    const count = (open.get(session) ?? 0) + 1;
    if (count > this.#options.maxConcurrentStreams) {
      this.#handlers.lost('too_many_streams', false);
      stream.close(constants.NGHTTP2_REFUSED_STREAM);
      return;
    }
    open.set(session, count);
    stream.once('close', () => open.set(session, (open.get(session) ?? 1) - 1));
    const grpc = isGrpcContentType(headers['content-type']);
    if (headerListSize(rawHeaders) > this.#options.maxHeaderBytes) {
      this.#handlers.lost('headers_too_large', false);
      refuse(stream, grpc, 431, 'headers_too_large');
      return;
    }
    const method = headers[':method'];
    const target = headers[':path'];
    if (method === 'CONNECT' || typeof method !== 'string' || typeof target !== 'string') {
      this.#handlers.lost('unsupported', false);
      refuse(stream, grpc, 405, 'unsupported');
      return;
    }
    // :scheme and :authority stay in the entry, at their place; method and target have fields of their own.
    const fields = filterHeaders(rawHeaders, (name) => name !== ':method' && name !== ':path');
    const refused = this.#handlers.admit(fields);
    if (refused !== null) {
      refuse(stream, grpc, refused[0], refused[1]);
      return;
    }
    const chunks: Buffer[] = [];
    let size = 0;
    let trailers: string[] = [];
    let done = false;
    let released = false;
    const release = (): void => {
      if (released) return;
      released = true;
      held.set(session, (held.get(session) ?? 0) - size);
    };
    const lose = (reason: H2Loss, status: number): void => {
      if (done) return;
      done = true;
      chunks.length = 0;
      release();
      this.#handlers.lost(reason, true);
      if (status !== 0) refuse(stream, grpc, status, reason);
    };
    stream.setTimeout(this.#options.requestTimeoutMs, () => guarded(stream, () => lose('body_timeout', 408)));
    stream.on('data', (chunk: Buffer) =>
      guarded(stream, () => {
        if (done) return;
        if (stream.destroyed) {
          lose('aborted', 0);
          return;
        }
        size += chunk.length;
        const total = (held.get(session) ?? 0) + chunk.length;
        held.set(session, total);
        if (size > this.#options.maxBodyBytes || total > 2 * this.#options.maxBodyBytes) {
          lose('too_large', 413);
          return;
        }
        chunks.push(chunk);
      }),
    );
    stream.on('trailers', (_object: IncomingHttpHeaders, _flags: number, raw: string[]) =>
      guarded(stream, () => {
        if (headerListSize(raw) > this.#options.maxHeaderBytes) lose('headers_too_large', 431);
        else trailers = raw;
      }),
    );
    // A reset or a lost connection before END_STREAM: nothing is stored. node ends the readable
    // side of a reset stream too ('aborted', then 'end' on a destroyed stream).
    stream.once('aborted', () => lose('aborted', 0));
    stream.once('close', () => lose('aborted', 0));
    stream.once('end', () =>
      guarded(stream, () => {
        if (stream.destroyed || stream.aborted) lose('aborted', 0);
        if (done) return;
        done = true;
        stream.setTimeout(0);
        const body = chunks.length === 1 ? (chunks[0] as Buffer) : Buffer.concat(chunks, size);
        this.#handlers.request({ method, target, rawHeaders: fields, body, trailers }, session.socket?.remoteAddress, (status, reason) => {
          release();
          guarded(stream, () => answer(stream, grpc, status, reason));
        });
      }),
    );
  }
}

/** Runs `fn`; what it throws (a stream or session destroyed under it) resets the stream instead of ending the process. */
function guarded(stream: ServerHttp2Stream, fn: () => void): void {
  try {
    fn();
  } catch {
    resetQuietly(stream);
  }
}

function resetQuietly(stream: ServerHttp2Stream): void {
  try {
    if (!stream.destroyed && !stream.closed) stream.close(constants.NGHTTP2_INTERNAL_ERROR);
  } catch {
    stream.destroy();
  }
}

function answer(stream: ServerHttp2Stream, grpc: boolean, status: number, reason: string | undefined): void {
  if (stream.destroyed || stream.closed || stream.headersSent || stream.session === undefined || stream.session.destroyed) return;
  if (status !== 200) {
    refuse(stream, grpc, status, reason ?? 'refused');
    return;
  }
  if (!grpc) {
    stream.respond({ ':status': 200, 'content-length': '0' }, { endStream: true });
    return;
  }
  stream.respond({ ':status': 200, 'content-type': 'application/grpc' }, { waitForTrailers: true });
  stream.once('wantTrailers', () => guarded(stream, () => stream.sendTrailers({ 'grpc-status': String(GRPC_STATUS.OK) })));
  stream.end();
}

/**
 * Refuses a stream with the protocol's own answer (a gRPC trailers-only response, or an HTTP
 * status) and resets it, so the peer stops sending a body that will not be read.
 */
function refuse(stream: ServerHttp2Stream, grpc: boolean, status: number, reason: string): void {
  if (stream.destroyed || stream.closed || stream.session === undefined || stream.session.destroyed) return;
  if (!stream.headersSent) {
    const headers = grpc
      ? {
          ':status': 200,
          'content-type': 'application/grpc',
          'grpc-status': refusalGrpcStatus(status),
          'grpc-message': reason,
          [MIRRORPLANE_DROP_HEADER]: reason,
        }
      : { ':status': status, 'content-type': 'text/plain', [MIRRORPLANE_DROP_HEADER]: reason };
    stream.respond(headers, { endStream: grpc });
    if (!grpc) stream.end(`${reason}\n`);
  }
  // NO_ERROR: the answer is complete; the peer's unfinished request half is not read (RFC 9113 §8.1).
  stream.close(constants.NGHTTP2_NO_ERROR);
}

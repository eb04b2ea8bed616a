import { connect, constants, type ClientHttp2Session, type ClientHttp2Stream, type IncomingHttpHeaders, type OutgoingHttpHeaders } from 'node:http2';
import {
  HTTP2_CONNECTION_SPECIFIC_HEADERS,
  StagingTransportError,
  WireRequestError,
  grpcStatusField,
  isGrpcContentType,
  withoutPseudoHeaders,
} from '@mirrorplane/core';
import type { WireRequest, WireResponse } from './http1-client.js';
import { connect as tlsConnect, type ConnectionOptions } from 'node:tls';
import { connect as netConnect, type Socket } from 'node:net';
import type { Cancellation } from './deadline-queue.js';

/**
 * The staging client's HTTP/2 wire, for entries that arrived over HTTP/2 (gRPC among them): one
 * `node:http2` session per origin, h2c with prior knowledge for `http:` origins, TLS with ALPN
 * `h2` for `https:` ones; the session is opened on first use and again after it closed or was
 * sent GOAWAY. Streams of one session run concurrently (callers bound them).
 *
 * What is sent: `:method`, `:path`, `:scheme` (the origin's), `:authority` (the request's first
 * `host` field: the pipeline sees an HTTP/2 request's `:authority` as `host`, like HTTP/1.1), the
 * fields in order with names lower-cased (HTTP/2 requires it) — repeated names travel together
 * at the place of the first (node's header object), each value in order — the body, and the
 * trailers after it (`waitForTrailers`). Connection-specific fields (RFC 9113 §8.2.2:
 * `connection`, `keep-alive`, `proxy-connection`, `transfer-encoding`, `upgrade`, and `te`
 * other than `trailers`) and pseudo-headers left in the list are not sent; a `content-length`
 * is made true to the body.
 */

export interface Http2Response extends WireResponse {
  /** Trailer fields `[name, value, …]` as staging sent them; empty when none. */
  trailers: string[];
}

export interface Http2OriginOptions {
  /** Bytes of each response body kept; 0: the body is read and discarded. */
  bodyLimit: number;
  /** TLS options for an `https:` origin (CA bundle, client certificate, server name); ignored for `http:`. */
  tls?: ConnectionOptions;
}

const PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1');

/** RFC 9113 §8.2.1: a field value never holds NUL, CR or LF (node's http2 does not check values). */
const INVALID_VALUE = /[\0\r\n]/;

/**
 * Raw pairs into node's header object: names lower-cased, repeated names as arrays in order.
 * Throws `WireRequestError` for a value HTTP/2 cannot carry (a stage may have set one).
 */
function headerObject(pairs: readonly string[], into: OutgoingHttpHeaders, bodyLength: number | null): OutgoingHttpHeaders {
  for (let i = 0; i < pairs.length; i += 2) {
    const name = (pairs[i] as string).toLowerCase();
    let value = pairs[i + 1] as string;
    if (INVALID_VALUE.test(value)) throw new WireRequestError(`field ${name.slice(0, 40)} holds NUL, CR or LF`);
    if (name.startsWith(':') || HTTP2_CONNECTION_SPECIFIC_HEADERS.has(name)) continue;
    if (name === 'te' && value.trim().toLowerCase() !== 'trailers') continue;
    if (name === 'content-length') {
      if (bodyLength === null || into[name] !== undefined) continue;
      value = String(bodyLength);
    }
    const seen = into[name];
    if (seen === undefined) into[name] = value;
    else if (Array.isArray(seen)) seen.push(value);
    else into[name] = [String(seen), value];
  }
  return into;
}

export class Http2Origin {
  readonly #url: URL;
  readonly #options: Http2OriginOptions;
  #session: ClientHttp2Session | null = null;
  /** Streams in flight on each session, to fail those a GOAWAY left unprocessed. */
  readonly #streams = new WeakMap<ClientHttp2Session, Set<ClientHttp2Stream>>();
  #closed = false;
  /** Sessions on which staging's SETTINGS arrived (it speaks HTTP/2). */
  readonly #spoke = new WeakMap<ClientHttp2Session, boolean>();
  /** Per failed session, one probe of what staging answers to the preface. */
  readonly #probes = new WeakMap<ClientHttp2Session, Promise<string | null>>();

  constructor(origin: string, options: Http2OriginOptions) {
    this.#url = new URL(origin);
    this.#options = options;
  }

  #open(): ClientHttp2Session {
    const current = this.#session;
    if (current !== null && !current.closed && !current.destroyed) return current;
    const session = this.#url.protocol === 'https:' ? connect(this.#url.origin, { ...this.#options.tls, ALPNProtocols: ['h2'] }) : connect(this.#url.origin);
    session.on('error', () => undefined); // each stream reports its own failure
    const forget = (): void => {
      if (this.#session === session) this.#session = null;
    };
    session.once('close', forget);
    // After GOAWAY no new stream may start on it; streams under way finish, and those above the
    // last stream id staging took never will (node leaves them pending): they fail now, and a
    // retry is safe since staging did not process them.
    session.once('goaway', (_code: number, lastStreamId: number) => {
      forget();
      for (const stream of this.#streams.get(session) ?? []) {
        if (stream.id === undefined || stream.id > lastStreamId) stream.destroy(new StagingTransportError('staging sent GOAWAY before taking the stream'));
      }
    });
    session.once('remoteSettings', () => this.#spoke.set(session, true));
    this.#streams.set(session, new Set());
    this.#session = session;
    return session;
  }

  /**
   * Sends one request and reads its response, trailers included. Rejects with
   * `WireRequestError` when the request cannot be written as HTTP/2 (a field node refuses),
   * with `StagingTransportError` when the response does not end with staging's END_STREAM
   * (a reset with any code, GOAWAY, a closed session; a gRPC 200 also needs `grpc-status`, in
   * trailers or trailers-only) or the session fails (naming a staging that answered the
   * preface with HTTP/1.x), and with
   * `signal`'s reason when it aborts.
   * @param authority the `:authority` staging receives (`host:port`)
   */
  request(request: WireRequest, authority: string, signal: Cancellation): Promise<Http2Response> {
    if (this.#closed) return Promise.reject(new StagingTransportError('the staging client is closed'));
    const { method, path, headers, body, trailers } = request;
    let head: OutgoingHttpHeaders;
    let tail: OutgoingHttpHeaders | null;
    try {
      head = headerObject(
        headers,
        {
          [constants.HTTP2_HEADER_METHOD]: method,
          [constants.HTTP2_HEADER_PATH]: path,
          [constants.HTTP2_HEADER_SCHEME]: this.#url.protocol.slice(0, -1),
          [constants.HTTP2_HEADER_AUTHORITY]: authority,
        },
        body.length,
      );
      tail = trailers.length > 0 ? headerObject(trailers, {}, null) : null;
    } catch (error) {
      return Promise.reject(error as Error);
    }
    const contentType = head['content-type'];
    const grpc = typeof contentType === 'string' && isGrpcContentType(contentType);
    return new Promise<Http2Response>((resolve, reject) => {
      let stream: ClientHttp2Stream;
      const session = this.#open();
      try {
        stream = session.request(head, { endStream: body.length === 0 && tail === null, waitForTrailers: tail !== null });
      } catch (error) {
        const code = (error as { code?: string }).code ?? '';
        reject(
          code.startsWith('ERR_HTTP2_') || code === 'ERR_INVALID_HTTP_TOKEN' || code === 'ERR_INVALID_CHAR'
            ? new WireRequestError((error as Error).message)
            : error,
        );
        return;
      }
      const inFlight = this.#streams.get(session);
      inFlight?.add(stream);
      // The deadline cancels the stream (RST_STREAM CANCEL); 'close' then rejects with its reason.
      const cancel = (): void => {
        if (!stream.closed) stream.close(constants.NGHTTP2_CANCEL);
      };
      if (signal.aborted) cancel();
      else signal.addEventListener('abort', cancel);
      stream.once('close', () => {
        inFlight?.delete(stream);
        signal.removeEventListener('abort', cancel);
      });
      const limit = this.#options.bodyLimit;
      const chunks: Buffer[] = [];
      let kept = 0;
      let truncated = false;
      let statusCode = 0;
      let responseHeaders: string[] = [];
      let responseTrailers: string[] = [];
      stream.on('response', (_headers: IncomingHttpHeaders, _flags: number, raw: string[]) => {
        statusCode = Number(_headers[constants.HTTP2_HEADER_STATUS]);
        responseHeaders = withoutPseudoHeaders(raw);
      });
      stream.on('trailers', (_trailers: IncomingHttpHeaders, _flags: number, raw: string[]) => {
        responseTrailers = withoutPseudoHeaders(raw);
      });
      stream.on('data', (chunk: Buffer) => {
        if (kept >= limit) {
          if (chunk.length > 0) truncated = true;
          return;
        }
        const room = limit - kept;
        if (chunk.length > room) {
          truncated = true;
          chunk = chunk.subarray(0, room);
        }
        chunks.push(chunk);
        kept += chunk.length;
      });
      let failed = false;
      stream.on('error', (error: Error) => {
        failed = true;
        if (signal.aborted) {
          reject(signal.reason);
          return;
        }
        // A session that failed before staging's SETTINGS came: most often a staging that does
        // not speak HTTP/2 at all (nghttp2 says only "Protocol error"). One probe tells.
        const spoke = this.#spoke.get(session) === true;
        if (spoke) {
          reject(new StagingTransportError(`HTTP/2 stream failed: ${error.message}`, { cause: error }));
          return;
        }
        void this.#diagnose(session).then((http1) =>
          reject(
            new StagingTransportError(
              http1 === null
                ? `HTTP/2 stream failed before staging at ${this.#url.origin} answered the HTTP/2 preface: ${error.message}`
                : `staging at ${this.#url.origin} does not speak HTTP/2 (${this.#url.protocol === 'https:' ? 'h2' : 'h2c'}): it answered the HTTP/2 preface with ${http1}; entries that arrived over HTTP/2 (gRPC) need an HTTP/2 origin (README, "gRPC and HTTP/2")`,
              { cause: error },
            ),
          ),
        );
      });
      // A response is complete only once staging's END_STREAM arrived (on the DATA, the trailers,
      // or a headers-only response). node ends the readable side of a stream reset with NO_ERROR,
      // or of a session that went away, as if it had ended: the two differ only in that the end
      // of a real END_STREAM is pushed while the stream is still open (not yet closed). Every
      // other end (any reset, GOAWAY, a closed session, the deadline) is a transport failure.
      let endStreamSeen = false;
      const push = stream.push.bind(stream);
      stream.push = (chunk: unknown, encoding?: BufferEncoding): boolean => {
        if (chunk === null && !stream.closed && !stream.destroyed) endStreamSeen = true;
        return push(chunk, encoding);
      };
      stream.on('close', () => {
        if (failed) return; // the 'error' listener rejects
        if (!endStreamSeen || statusCode === 0 || (stream.rstCode !== undefined && stream.rstCode !== constants.NGHTTP2_NO_ERROR)) {
          reject(
            signal.aborted
              ? signal.reason
              : new StagingTransportError(
                  `staging ${stream.rstCode === undefined ? 'closed' : `reset (code ${stream.rstCode})`} the HTTP/2 stream before its response ended (no END_STREAM)`,
                ),
          );
          return;
        }
        // gRPC: a 200 ends with its status, in the trailers or in a trailers-only HEADERS frame;
        // without one the call did not complete (a gRPC client reports it as an error too).
        if (grpc && statusCode === 200 && grpcStatusField({ headers: responseHeaders, trailers: responseTrailers }) === null) {
          reject(new StagingTransportError('staging ended the gRPC response without grpc-status (neither trailers nor trailers-only)'));
          return;
        }
        resolve({ statusCode, headers: responseHeaders, body: Buffer.concat(chunks, kept), truncated, trailers: responseTrailers });
      });
      if (tail !== null) stream.once('wantTrailers', () => stream.sendTrailers(tail));
      if (body.length > 0 || tail !== null) stream.end(body);
    });
  }

  /** The HTTP/1.x version line staging answers the preface with (`HTTP/1.1`), or null (HTTP/2, or no answer in 2 s). */
  #diagnose(session: ClientHttp2Session): Promise<string | null> {
    const known = this.#probes.get(session);
    if (known !== undefined) return known;
    const probe = new Promise<string | null>((resolve) => {
      const port = Number(this.#url.port) || (this.#url.protocol === 'https:' ? 443 : 80);
      const host = this.#url.hostname.replace(/^\[|\]$/g, '');
      const socket: Socket = this.#url.protocol === 'https:' ? tlsConnect({ ...this.#options.tls, host, port, ALPNProtocols: ['h2'] }) : netConnect(port, host);
      let got = Buffer.alloc(0);
      const done = (answer: string | null): void => {
        clearTimeout(timer);
        socket.destroy();
        resolve(answer);
      };
      const timer = setTimeout(() => done(null), 2000);
      socket.on('error', () => done(null));
      socket.once(this.#url.protocol === 'https:' ? 'secureConnect' : 'connect', () => socket.write(PREFACE));
      socket.on('data', (chunk: Buffer) => {
        got = Buffer.concat([got, chunk]);
        if (got.length < 8) return;
        const line = /^HTTP\/1\.[01]/.exec(got.subarray(0, 8).toString('latin1'));
        done(line === null ? null : line[0]);
      });
      socket.on('end', () => done(null));
    });
    this.#probes.set(session, probe);
    return probe;
  }

  async close(): Promise<void> {
    this.#closed = true;
    const session = this.#session;
    this.#session = null;
    if (session === null || session.destroyed) return;
    await new Promise<void>((resolve) => {
      const timer = setTimeout(() => session.destroy(), 2000);
      session.close(() => {
        clearTimeout(timer);
        resolve();
      });
    });
  }
}

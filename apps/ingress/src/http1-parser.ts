import { RequestRefusedError, TOKEN_BYTES, TOKEN_CHARS } from '@mirrorplane/core';
import { BoundedBody } from './body-reader.js';

/**
 * The ingress's HTTP/1.1 request parser (RFC 9112). Why our own: node's llhttp refuses method
 * tokens it does not know (`BAN`, `PURGE` with some flags, in-house verbs), caps the number of
 * fields, and drops trailers; the mirror must keep what production received. Lenient where
 * RFC 9110 allows anything (any method token, obs-text bytes 0x80–0xFF in targets and values,
 * any number of fields within MAX_HEADER_BYTES, trailers), strict where framing is at stake:
 * every ambiguity about where a request ends is refused, because the request after it would
 * be read from the wrong byte (request smuggling).
 *
 * Refused, with the status and reason in brackets:
 * - a bare LF or CR anywhere in a head, obs-fold, whitespace before a colon, NUL/CTL in a
 *   name, value or target, an empty name, an HTTP/0.9 request line [400 bad_request];
 * - Content-Length with Transfer-Encoding, two Content-Length fields (even equal), a value
 *   that is not 1*DIGIT, Transfer-Encoding on HTTP/1.0 or not ending in `chunked`, a bad
 *   chunk size, line or extension, chunk data not followed by CRLF, two Host fields, two
 *   Transfer-Encoding fields [400 bad_request];
 * - a version other than 1.0 / 1.1 [505 bad_request];
 * - what is valid but cannot be replayed as received [4xx unsupported]: CONNECT (a tunnel,
 *   405), transfer codings besides `chunked` (the coded bytes would be replayed as if plain,
 *   400), an authority-form target, asterisk-form with a method other than OPTIONS (400), an
 *   Expect other than 100-continue (417);
 * - a Transfer-Encoding that is not exactly the token `chunked` (any case) [400 unsupported];
 * - a head over `maxHeaderBytes`, or a trailer section plus chunk-line bytes past a plain size
 *   (extensions) over it [431 headers_too_large]; a body over
 *   `maxBodyBytes`, declared or counted while reading chunks [413 too_large].
 */

/** Why a request was refused; the ingress counts it under this reason. */
export type RefusalReason = 'bad_request' | 'headers_too_large' | 'too_large' | 'unsupported';

/** A refusal: the status to answer, the counted reason, and what was wrong (for logs and the answer). */
export interface Refusal {
  status: number;
  reason: RefusalReason;
  detail: string;
}

/** A request head, known before its body is read. */
export interface RequestHead {
  method: string;
  /** The request-target exactly as received (latin1: one char per byte). */
  target: string;
  /** 1 for HTTP/1.1, 0 for HTTP/1.0. */
  minor: 0 | 1;
  /** Field names and values in order, case and duplicates kept, `[name, value, …]`, latin1. */
  rawHeaders: string[];
  /** The declared body length in bytes; -1 when chunked. */
  contentLength: number;
  /** Whether the connection stays open after this request (version and Connection field). */
  keepAlive: boolean;
  /** `Expect: 100-continue` was sent and a body follows. */
  expectContinue: boolean;
}

/** A whole request: its head, its body (de-chunked) and its trailer fields. */
export interface ParsedRequest extends RequestHead {
  body: Buffer;
  /** Trailer fields of a chunked body, `[name, value, …]` as received; empty otherwise. */
  trailers: string[];
}

export type ParseEvent = { kind: 'head'; head: RequestHead } | { kind: 'request'; request: ParsedRequest } | { kind: 'refused'; refusal: Refusal };

export interface ParserLimits {
  /** Bytes of a head (request line and fields, CRLFs included), and separately of a trailer section. */
  maxHeaderBytes: number;
  /** Bytes of a body after de-chunking. */
  maxBodyBytes: number;
}

// Byte classes, one table lookup per byte (RFC 9110 §5.6.2 tchar, §5.5 field-vchar with obs-text).
const TOKEN = TOKEN_BYTES;
/** Field value bytes: HTAB, SP, VCHAR, obs-text. */
const VALUE = new Uint8Array(256);
VALUE[0x09] = 1;
for (let c = 0x20; c <= 0x7e; c++) VALUE[c] = 1;
for (let c = 0x80; c <= 0xff; c++) VALUE[c] = 1;
/** Request-target bytes: VCHAR and obs-text (no SP, no CTL). */
const TARGET = new Uint8Array(256);
for (let c = 0x21; c <= 0x7e; c++) TARGET[c] = 1;
for (let c = 0x80; c <= 0xff; c++) TARGET[c] = 1;
const HEX = new Int8Array(256).fill(-1);
for (let c = 0; c < 16; c++) HEX['0123456789abcdef'.charCodeAt(c)] = c;
for (let c = 10; c < 16; c++) HEX['ABCDEF'.charCodeAt(c - 10)] = c;

const CR = 13;
const LF = 10;
const SP = 32;
const HTAB = 9;
const COLON = 58;
/** A chunk-size line (size and extensions) longer than this is refused. */
const MAX_CHUNK_LINE = 4096;
/** Bytes of a chunk-size line not counted against MAX_HEADER_BYTES: a size of up to 16 hex digits. */
const CHUNK_LINE_FREE = 16;
/** chunk-ext after the size: `;name` or `;name=token|quoted-string`, with optional whitespace (BWS). */
const CHUNK_EXT = new RegExp(
  `^(?:[ \\t]*;[ \\t]*${TOKEN_CHARS}+(?:[ \\t]*=[ \\t]*(?:${TOKEN_CHARS}+|"(?:[\\t \\x21\\x23-\\x5b\\x5d-\\x7e\\x80-\\xff]|\\\\[\\t \\x21-\\x7e\\x80-\\xff])*"))?)*$`,
);
const DIGITS = /^[0-9]{1,15}$/;
const EMPTY = Buffer.alloc(0);

const enum State {
  RequestLine,
  Fields,
  Body,
  ChunkSize,
  ChunkData,
  ChunkEnd,
  Trailers,
  Failed,
}

function refuse(status: number, reason: RefusalReason, detail: string): never {
  throw new RequestRefusedError(status, reason, detail);
}

function bad(detail: string): never {
  return refuse(400, 'bad_request', detail);
}

/**
 * Parses the requests of one connection. Feed it bytes as they arrive, then call `next()` until
 * it returns null (more bytes needed). After a `refused` event it yields nothing more: the
 * connection must be closed, as the next request's first byte is unknown.
 */
export class RequestParser {
  readonly #limits: ParserLimits;
  /** Bytes received and not yet consumed are `#buf[#pos, #end)`. */
  #buf: Buffer = EMPTY;
  #pos = 0;
  #end = 0;
  /** `#buf` is the parser's own growable storage (else a chunk fed by the caller, not to be written). */
  #owned = false;
  /** Bytes after `#pos` already searched for LF (a line arriving in pieces is scanned once: linear cost). */
  #scanned = 0;
  #state = State.RequestLine;
  /** Head (or trailer section) bytes consumed so far, CRLFs included. */
  #headBytes = 0;
  /** Bytes of empty lines before the current request-line (part of #headBytes, but not yet a request). */
  #leading = 0;
  #head: RequestHead | null = null;
  #fields: string[] = [];
  #trailers: string[] = [];
  readonly #body: BoundedBody;
  /** Bytes still to read of a Content-Length body or of the current chunk. */
  #remaining = 0;
  // Framing fields seen in the current head.
  #host = 0;
  #contentLength: string | null = null;
  #contentLengths = 0;
  #transferEncoding: string | null = null;
  #transferEncodings = 0;
  #connection: string | null = null;
  #expect: string | null = null;

  constructor(limits: ParserLimits) {
    this.#limits = limits;
    this.#body = new BoundedBody(limits.maxBodyBytes);
  }

  /**
   * Adds bytes from the connection. When everything fed before was consumed, the chunk is used
   * as is (no copy); otherwise the unconsumed bytes and the chunk go to the parser's own buffer,
   * which grows by doubling and is compacted only when full, so a head that arrives in many
   * small pieces costs linear time. The unconsumed bytes are at most one line (bounded by
   * MAX_HEADER_BYTES or the chunk-line cap) or part of a body (bounded by MAX_BODY_BYTES).
   */
  feed(chunk: Buffer): void {
    if (chunk.length === 0 || this.#state === State.Failed) return;
    const pending = this.#end - this.#pos;
    if (pending === 0) {
      this.#buf = chunk;
      this.#pos = 0;
      this.#end = chunk.length;
      this.#owned = false;
      return;
    }
    const needed = pending + chunk.length;
    if (this.#owned && this.#end + chunk.length <= this.#buf.length) {
      // Room after the pending bytes: append.
    } else if (this.#owned && needed <= this.#buf.length && this.#pos >= this.#buf.length >>> 1) {
      // Over half the storage is consumed: compact (amortized by the half consumed).
      this.#buf.copy(this.#buf, 0, this.#pos, this.#end);
      this.#end = pending;
      this.#pos = 0;
    } else {
      // Doubling, but not past what a head may hold (plus a socket read): memory per connection
      // stays about MAX_HEADER_BYTES + 64 KiB.
      const doubled = Math.min(this.#owned ? this.#buf.length * 2 : 4096, this.#limits.maxHeaderBytes + 65536);
      const grown = Buffer.allocUnsafe(Math.max(needed, doubled));
      this.#buf.copy(grown, 0, this.#pos, this.#end);
      this.#buf = grown;
      this.#end = pending;
      this.#pos = 0;
      this.#owned = true;
    }
    chunk.copy(this.#buf, this.#end);
    this.#end += chunk.length;
  }

  /** True when bytes of a request that is not complete were received (EOF now would cut it). */
  get midRequest(): boolean {
    return this.#state !== State.RequestLine || this.#headBytes > this.#leading || this.#startedLine();
  }

  /** True while the request line or fields of a request are being read (the head deadline applies). */
  get inHead(): boolean {
    return (this.#state === State.RequestLine && (this.#headBytes > this.#leading || this.#startedLine())) || this.#state === State.Fields;
  }

  /**
   * Bytes of a request-line are pending. Empty lines before a request (RFC 9112 §2.2), and the CR
   * of one still to be completed, are not a request: a connection that holds only them is idle.
   */
  #startedLine(): boolean {
    const pending = this.#end - this.#pos;
    return pending > 1 || (pending === 1 && this.#buf[this.#pos] !== CR);
  }

  /** The next event from the bytes fed so far, or null when more bytes are needed. */
  next(): ParseEvent | null {
    try {
      return this.#next();
    } catch (error) {
      if (!(error instanceof RequestRefusedError)) throw error;
      this.#state = State.Failed;
      this.#buf = EMPTY;
      this.#pos = 0;
      this.#end = 0;
      this.#scanned = 0;
      this.#body.take();
      return { kind: 'refused', refusal: { status: error.status, reason: error.reason as RefusalReason, detail: error.message } };
    }
  }

  #next(): ParseEvent | null {
    for (;;) {
      switch (this.#state) {
        case State.RequestLine: {
          const start = this.#pos;
          const end = this.#line(true);
          if (end === -1) return null;
          // RFC 9112 §2.2: empty lines before a request-line are ignored (they count toward the
          // head's MAX_HEADER_BYTES, but not as a request: see midRequest).
          if (end === start) {
            this.#leading = this.#headBytes;
            continue;
          }
          this.#requestLine(start, end);
          this.#state = State.Fields;
          continue;
        }
        case State.Fields: {
          const start = this.#pos;
          const end = this.#line(true);
          if (end === -1) return null;
          if (end === start) return { kind: 'head', head: this.#endOfHead() };
          this.#field(start, end, this.#fields, true);
          continue;
        }
        case State.Body: {
          if (this.#remaining > 0 && !this.#take()) return null;
          return this.#complete();
        }
        case State.ChunkSize: {
          const start = this.#pos;
          const end = this.#line(false);
          if (end === -1) return null;
          this.#chunkSize(start, end);
          continue;
        }
        case State.ChunkData:
          if (!this.#take()) return null;
          this.#state = State.ChunkEnd;
          continue;
        case State.ChunkEnd: {
          if (this.#end - this.#pos < 2) return null;
          if (this.#buf[this.#pos] !== CR || this.#buf[this.#pos + 1] !== LF) bad('chunk data is not followed by CRLF');
          this.#pos += 2;
          this.#state = State.ChunkSize;
          continue;
        }
        case State.Trailers: {
          const start = this.#pos;
          const end = this.#line(true);
          if (end === -1) return null;
          if (end === start) return this.#complete();
          this.#field(start, end, this.#trailers, false);
          continue;
        }
        case State.Failed:
          return null;
      }
    }
  }

  /**
   * Finds the end of the next line. Returns the index of its CR and moves past its CRLF, or -1
   * when the line is not complete yet. Refuses a bare LF, and a line (or head) over its limit.
   */
  #line(head: boolean): number {
    const buf = this.#buf;
    const start = this.#pos;
    const end = this.#end;
    // Only the bytes not searched before (a line that arrives in pieces is scanned once).
    // (The parser's own storage holds stale bytes past `#end`: search a view that ends there.)
    const lf = (this.#owned ? buf.subarray(0, end) : buf).indexOf(LF, start + this.#scanned);
    const limit = head ? this.#limits.maxHeaderBytes - this.#headBytes : MAX_CHUNK_LINE;
    if (lf === -1) {
      this.#scanned = end - start;
      if (end - start > limit) this.#tooLong(head);
      return -1;
    }
    this.#scanned = 0;
    if (lf + 1 - start > limit) this.#tooLong(head);
    if (lf === start || buf[lf - 1] !== CR) bad('bare LF (a line must end with CRLF)');
    if (head) this.#headBytes += lf + 1 - start;
    this.#pos = lf + 1;
    return lf - 1;
  }

  #tooLong(head: boolean): never {
    if (!head) bad(`chunk-size line over ${MAX_CHUNK_LINE} bytes`);
    const what = this.#state === State.Trailers ? 'trailer section' : 'request head';
    refuse(431, 'headers_too_large', `${what} over MAX_HEADER_BYTES (${this.#limits.maxHeaderBytes} bytes)`);
  }

  #requestLine(start: number, end: number): void {
    const buf = this.#buf;
    const sp1 = buf.indexOf(SP, start);
    if (sp1 === -1 || sp1 >= end || sp1 === start) bad('malformed request line');
    for (let i = start; i < sp1; i++) if (TOKEN[buf[i] as number] !== 1) bad('method is not a token');
    const sp2 = buf.indexOf(SP, sp1 + 1);
    if (sp2 === -1 || sp2 >= end) bad('request line without an HTTP version (HTTP/0.9 is not supported)');
    if (sp2 === sp1 + 1) bad('empty request-target');
    for (let i = sp1 + 1; i < sp2; i++) if (TARGET[buf[i] as number] !== 1) bad('request-target holds a space, a control byte or NUL');
    const version = buf.toString('latin1', sp2 + 1, end);
    let minor: 0 | 1;
    if (version === 'HTTP/1.1') minor = 1;
    else if (version === 'HTTP/1.0') minor = 0;
    else if (/^HTTP\/[0-9]\.[0-9]$/.test(version)) refuse(505, 'bad_request', `HTTP version ${version} is not supported`);
    else bad('malformed HTTP version');
    const method = buf.toString('latin1', start, sp1);
    const target = buf.toString('latin1', sp1 + 1, sp2);
    if (method === 'CONNECT') refuse(405, 'unsupported', 'CONNECT opens a tunnel; a tunnel cannot be replayed');
    const first = target.charCodeAt(0);
    if (first === 0x2a /* * */) {
      if (target.length !== 1 || method !== 'OPTIONS') refuse(400, 'unsupported', 'asterisk-form is only valid as OPTIONS *');
    } else if (first !== 0x2f /* / */ && !/^[a-zA-Z][a-zA-Z0-9+.-]*:\/\//.test(target)) {
      refuse(400, 'unsupported', 'authority-form request-target is only valid with CONNECT');
    }
    this.#head = { method, target, minor, rawHeaders: this.#fields, contentLength: 0, keepAlive: minor === 1, expectContinue: false };
  }

  #field(start: number, end: number, out: string[], head: boolean): void {
    const buf = this.#buf;
    const first = buf[start] as number;
    if (first === SP || first === HTAB) bad('obs-fold (a field line starting with whitespace)');
    const colon = buf.indexOf(COLON, start);
    if (colon === -1 || colon > end) bad('field line without a colon');
    if (colon === start) bad('empty field name');
    for (let i = start; i < colon; i++) if (TOKEN[buf[i] as number] !== 1) bad('field name is not a token (whitespace before the colon, or a control byte)');
    let vs = colon + 1;
    let ve = end;
    while (vs < ve && (buf[vs] === SP || buf[vs] === HTAB)) vs++;
    while (ve > vs && (buf[ve - 1] === SP || buf[ve - 1] === HTAB)) ve--;
    for (let i = vs; i < ve; i++) if (VALUE[buf[i] as number] !== 1) bad('field value holds NUL, CR or another control byte');
    const name = buf.toString('latin1', start, colon);
    const value = buf.toString('latin1', vs, ve);
    out.push(name, value);
    if (head) this.#framingField(name, value);
  }

  /** Notes the fields that decide framing and persistence (compared by length first: most names are none of these). */
  #framingField(name: string, value: string): void {
    switch (name.length) {
      case 4:
        if (name.toLowerCase() === 'host') this.#host++;
        break;
      case 6:
        if (name.toLowerCase() === 'expect') this.#expect = this.#expect === null ? value : `${this.#expect},${value}`;
        break;
      case 10:
        if (name.toLowerCase() === 'connection') this.#connection = this.#connection === null ? value : `${this.#connection},${value}`;
        break;
      case 14:
        if (name.toLowerCase() === 'content-length') {
          this.#contentLengths++;
          this.#contentLength = value;
        }
        break;
      case 17:
        if (name.toLowerCase() === 'transfer-encoding') {
          this.#transferEncodings++;
          this.#transferEncoding = this.#transferEncoding === null ? value : `${this.#transferEncoding},${value}`;
        }
        break;
    }
  }

  #endOfHead(): RequestHead {
    const head = this.#head as RequestHead;
    // A missing Host is accepted (nginx sends none upstream when the client sent none): it is
    // replayed as received. Two are refused: which one a server routes by is anyone's guess.
    if (this.#host > 1) bad('more than one Host field');
    if (this.#transferEncoding !== null) {
      if (head.minor === 0) bad('Transfer-Encoding on an HTTP/1.0 request');
      if (this.#contentLengths > 0) bad('both Content-Length and Transfer-Encoding');
      const codings = this.#transferEncoding
        .split(',')
        .map((c) => c.trim().toLowerCase())
        .filter((c) => c !== '');
      if (codings[codings.length - 1] !== 'chunked') bad('Transfer-Encoding does not end with chunked: the body length is unknowable');
      if (codings.length !== 1)
        refuse(400, 'unsupported', `transfer coding ${codings.slice(0, -1).join(', ')} cannot be replayed as received (only chunked is)`);
      // The replay sends one Transfer-Encoding field, `chunked` as received: two fields, or
      // empty list elements (`, chunked`), would reach staging changed, so they are refused.
      if (this.#transferEncodings > 1) refuse(400, 'bad_request', 'more than one Transfer-Encoding field');
      if (!/^chunked$/i.test(this.#transferEncoding))
        refuse(400, 'unsupported', 'Transfer-Encoding other than the single token chunked cannot be replayed as received');
      head.contentLength = -1;
    } else if (this.#contentLengths > 0) {
      if (this.#contentLengths > 1) bad('more than one Content-Length field');
      const declared = this.#contentLength as string;
      if (!DIGITS.test(declared)) bad('Content-Length is not a number');
      head.contentLength = Number(declared);
      if (head.contentLength > this.#limits.maxBodyBytes)
        refuse(413, 'too_large', `body of ${head.contentLength} bytes over MAX_BODY_BYTES (${this.#limits.maxBodyBytes})`);
    }
    if (this.#connection !== null) {
      const tokens = this.#connection.toLowerCase();
      if (/(?:^|,)[ \t]*close[ \t]*(?:,|$)/.test(tokens)) head.keepAlive = false;
      else if (head.minor === 0 && /(?:^|,)[ \t]*keep-alive[ \t]*(?:,|$)/.test(tokens)) head.keepAlive = true;
    }
    if (this.#expect !== null) {
      if (this.#expect.trim().toLowerCase() !== '100-continue') refuse(417, 'unsupported', 'only Expect: 100-continue is supported');
      head.expectContinue = head.minor === 1 && head.contentLength !== 0;
    }
    this.#remaining = head.contentLength > 0 ? head.contentLength : 0;
    this.#state = head.contentLength === -1 ? State.ChunkSize : State.Body;
    // The trailer section has its own MAX_HEADER_BYTES budget.
    this.#headBytes = 0;
    this.#leading = 0;
    return head;
  }

  /** Moves up to `#remaining` body bytes into the body; true when none remain. */
  #take(): boolean {
    const available = this.#end - this.#pos;
    if (available === 0) return this.#remaining === 0;
    const n = Math.min(available, this.#remaining);
    const chunk = n === this.#buf.length ? this.#buf : this.#buf.subarray(this.#pos, this.#pos + n);
    // The parser's own storage is reused: its bytes are copied. A caller's chunk is kept by
    // reference unless it is a small part of it (BoundedBody decides; memory stays ~ body size).
    const total = this.#state === State.Body ? (this.#head as RequestHead).contentLength : -1;
    if (!this.#body.push(chunk, this.#owned, total)) refuse(413, 'too_large', `chunked body over MAX_BODY_BYTES (${this.#limits.maxBodyBytes})`);
    this.#pos += n;
    this.#remaining -= n;
    return this.#remaining === 0;
  }

  #chunkSize(start: number, end: number): void {
    const buf = this.#buf;
    let size = 0;
    let i = start;
    for (; i < end; i++) {
      const digit = HEX[buf[i] as number] as number;
      if (digit === -1) break;
      size = size * 16 + digit;
      // Past the body limit already: no need to read more digits (and no float overflow).
      if (size > this.#limits.maxBodyBytes) refuse(413, 'too_large', `chunked body over MAX_BODY_BYTES (${this.#limits.maxBodyBytes})`);
    }
    if (i === start) bad('chunk size is not a hex number');
    // Chunk-line bytes past a plain size (extensions, padded sizes) are metadata the replay does
    // not keep: they share the trailer section's MAX_HEADER_BYTES budget, so the bytes one
    // request may make the ingress read stay bounded by its settings, whatever the chunking.
    if (end - start > CHUNK_LINE_FREE) {
      this.#headBytes += end - start - CHUNK_LINE_FREE;
      if (this.#headBytes > this.#limits.maxHeaderBytes)
        refuse(431, 'headers_too_large', `chunk extensions and trailer section over MAX_HEADER_BYTES (${this.#limits.maxHeaderBytes} bytes)`);
    }
    if (i < end && !CHUNK_EXT.test(buf.toString('latin1', i, end))) bad('malformed chunk extension');
    if (this.#body.size + size > this.#limits.maxBodyBytes) refuse(413, 'too_large', `chunked body over MAX_BODY_BYTES (${this.#limits.maxBodyBytes})`);
    if (size === 0) {
      this.#state = State.Trailers;
      return;
    }
    this.#remaining = size;
    this.#state = State.ChunkData;
  }

  #complete(): ParseEvent {
    const head = this.#head as RequestHead;
    // Spelled out, not spread: one object of a fixed shape per request.
    const request: ParsedRequest = {
      method: head.method,
      target: head.target,
      minor: head.minor,
      rawHeaders: head.rawHeaders,
      contentLength: head.contentLength,
      keepAlive: head.keepAlive,
      expectContinue: head.expectContinue,
      body: this.#body.size === 0 ? EMPTY : this.#body.take(),
      trailers: this.#trailers,
    };
    this.#state = State.RequestLine;
    this.#headBytes = 0;
    this.#leading = 0;
    this.#head = null;
    this.#fields = [];
    this.#trailers = [];
    this.#remaining = 0;
    this.#host = 0;
    this.#contentLength = null;
    this.#contentLengths = 0;
    this.#transferEncoding = null;
    this.#transferEncodings = 0;
    this.#connection = null;
    this.#expect = null;
    return { kind: 'request', request };
  }
}

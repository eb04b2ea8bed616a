// Generated HTTP/1.1 response shapes and a raw staging server that sends each one split at
// chosen points. Not a test file: shared by the staging-response tests under test/integration.
import { createServer as createTcpServer, type Server, type Socket } from 'node:net';
import { createServer as createTlsServer, type TlsOptions } from 'node:tls';
import { RequestParser, type ParsedRequest } from '@mirrorplane/ingress';

/** The seeded PRNG the chaos schedule uses (mulberry32), so a failing shape can be reproduced from its seed. */
import { createRandom as rng } from '../chaos/schedule.js';
export { rng };

export interface Shape {
  /** Index in the shape list (also in the request path). */
  n: number;
  /** The request method that gets this response (HEAD answers carry no body). */
  method: 'GET' | 'HEAD' | 'POST';
  /** The whole response as staging sends it (1xx heads included). */
  bytes: Buffer;
  /** Offsets where staging pauses between writes (each piece its own write, a tick apart). */
  cuts: number[];
  /** Staging closes the connection after the response (read-until-close, or `Connection: close`). */
  close: boolean;
  /** Staging sends a FIN right after the response without saying so (no `Connection: close`). */
  finAfter: boolean;
  /** What the client must report. */
  status: number;
  /** Names lower-cased, values without OWS, in order, duplicates kept (the final response only). */
  headers: string[];
  /** The whole body staging sent (the client keeps up to its limit). */
  body: Buffer;
  label: string;
}

const NAME_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-!#$%&'*+.^_`|~";

function pick<T>(r: () => number, list: readonly T[]): T {
  return list[Math.floor(r() * list.length)] as T;
}

function int(r: () => number, lo: number, hi: number): number {
  return lo + Math.floor(r() * (hi - lo + 1));
}

function bodyOf(r: () => number, size: number, n: number): Buffer {
  const b = Buffer.alloc(size);
  // Distinct per shape and per position: a byte from another response or read shows.
  for (let i = 0; i < size; i++) b[i] = (i * 31 + n * 97 + (i >> 9)) & 0xff;
  if (size > 0) b[0] = int(r, 0, 255);
  return b;
}

function fieldValue(r: () => number, len: number): string {
  let s = '';
  for (let i = 0; i < len; i++) {
    const k = r();
    // visible ASCII, SP and HTAB inside, obs-text (0x80-0xff)
    if (k < 0.7) s += String.fromCharCode(int(r, 0x21, 0x7e));
    else if (k < 0.8) s += ' ';
    else if (k < 0.85) s += '\t';
    else s += String.fromCharCode(int(r, 0x80, 0xff));
  }
  return s;
}

function trimOws(s: string): string {
  return s.replace(/^[ \t]+|[ \t]+$/g, '');
}

const SIZES = [0, 1, 2, 17, 1000, 16383, 16384, 16385, 16386, 32768, 40000, 65537, 100_000];

/** `count` response shapes from `seed`: every framing, sizes around 16 KiB and the limits, many fields. */
export function makeShapes(seed: number, count: number, options: { allowClose?: boolean; allowFin?: boolean } = {}): Shape[] {
  const r = rng(seed);
  const out: Shape[] = [];
  for (let n = 0; n < count; n++) {
    const kind = pick(r, ['length', 'length', 'chunked', 'chunked', 'head', '204', '304', 'close', 'http10'] as const);
    const effective = (kind === 'close' || kind === 'http10') && options.allowClose === false ? 'length' : kind;
    const method: Shape['method'] = effective === 'head' ? 'HEAD' : r() < 0.3 ? 'POST' : 'GET';
    const status = effective === '204' ? 204 : effective === '304' ? 304 : pick(r, [200, 200, 201, 202, 206, 301, 400, 404, 418, 500, 503]);
    const size = effective === '204' || effective === '304' ? 0 : pick(r, SIZES);
    const body = bodyOf(r, size, n);
    const heads: string[] = [];
    // Interim responses before the final one, sometimes.
    if (r() < 0.2) heads.push(`HTTP/1.1 100 Continue\r\n${r() < 0.5 ? `X-Interim: ${n}\r\n` : ''}\r\n`);
    if (r() < 0.1) heads.push('HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n');
    const fields: [string, string][] = [];
    const nFields = int(r, 0, 12);
    for (let i = 0; i < nFields; i++) {
      let name = '';
      const nameLen = int(r, 1, 20);
      for (let j = 0; j < nameLen; j++) name += NAME_CHARS[int(r, 0, NAME_CHARS.length - 1)];
      const lower = name.toLowerCase();
      if (['content-length', 'transfer-encoding', 'connection', 'keep-alive', 'trailer', 'te', 'upgrade'].includes(lower)) name = `x-${name}`;
      const raw = (r() < 0.2 ? ' \t' : r() < 0.5 ? ' ' : '') + fieldValue(r, pick(r, [0, 1, 5, 40, 300, 5000, 20000])) + (r() < 0.2 ? ' \t ' : '');
      fields.push([name, raw]);
      // A duplicate, different case, sometimes.
      if (r() < 0.15) fields.push([name.toUpperCase(), fieldValue(r, 4)]);
    }
    const n1 = `X-Shape-${n % 7 === 0 ? 'N' : 'n'}`;
    fields.splice(int(r, 0, fields.length), 0, [n1, String(n)]);
    let bodyBytes: Buffer = Buffer.alloc(0);
    let close = false;
    let statusLine = `HTTP/1.1 ${status} Whatever ${n}`;
    switch (effective) {
      case 'length':
      case 'head': {
        const lenName = pick(r, ['Content-Length', 'content-length', 'CONTENT-LENGTH']);
        fields.splice(int(r, 0, fields.length), 0, [lenName, String(size)]);
        if (effective === 'length') bodyBytes = body;
        break;
      }
      case '204':
      case '304':
        break;
      case 'chunked': {
        fields.splice(int(r, 0, fields.length), 0, [pick(r, ['Transfer-Encoding', 'transfer-encoding']), pick(r, ['chunked', 'Chunked', 'gzip, chunked'])]);
        const parts: Buffer[] = [];
        for (let at = 0; at < size;) {
          const len = Math.min(size - at, pick(r, [1, 2, 7, 100, 4096, 16384, 16385, 30000, 70000]));
          const ext = r() < 0.2 ? `;ext${n}=${pick(r, ['1', '"q"', 'x'])}` : '';
          const hex = r() < 0.5 ? len.toString(16) : len.toString(16).toUpperCase();
          parts.push(Buffer.from(`${r() < 0.1 ? '000' : ''}${hex}${ext}\r\n`, 'latin1'), body.subarray(at, at + len), Buffer.from('\r\n'));
          at += len;
        }
        let trailer = '0\r\n';
        const nTrailers = int(r, 0, 3);
        for (let i = 0; i < nTrailers; i++) trailer += `X-Trailer-${i}: ${fieldValue(r, pick(r, [0, 10, 200]))}\r\n`;
        trailer += '\r\n';
        parts.push(Buffer.from(trailer, 'latin1'));
        bodyBytes = Buffer.concat(parts);
        break;
      }
      case 'close':
        fields.push(['Connection', pick(r, ['close', 'Close', 'keep-alive, close'])]);
        bodyBytes = body;
        close = true;
        break;
      case 'http10':
        statusLine = `HTTP/1.0 ${status} Old ${n}`;
        bodyBytes = body;
        close = true;
        break;
    }
    const head = `${statusLine}\r\n${fields.map(([k, v]) => `${k}:${v}\r\n`).join('')}\r\n`;
    const bytes = Buffer.concat([Buffer.from(heads.join(''), 'latin1'), Buffer.from(head, 'latin1'), bodyBytes]);
    // Cut points: none, a few random ones, one every k bytes, and right at the head's end.
    const cuts = new Set<number>();
    const mode = pick(r, ['none', 'random', 'every', 'edges'] as const);
    if (mode === 'random') for (let i = int(r, 1, 12); i > 0; i--) cuts.add(int(r, 1, bytes.length - 1));
    if (mode === 'every') {
      const step = pick(r, [1, 3, 7, 13, 1000, 4096, 16383, 16384, 16385]);
      if (bytes.length / step < 400) for (let at = step; at < bytes.length; at += step) cuts.add(at);
      else for (let i = 0; i < 40; i++) cuts.add(int(r, 1, bytes.length - 1));
    }
    if (mode === 'edges') {
      const headEnd = bytes.length - bodyBytes.length;
      for (const c of [headEnd - 1, headEnd, headEnd + 1, headEnd - 4, headEnd - 2]) cuts.add(c);
      // Inside each chunk-size line and CRLF of a chunked body.
      if (effective === 'chunked')
        for (let at = bytes.indexOf('\r\n', headEnd); at !== -1 && at < bytes.length; at = bytes.indexOf('\r\n', at + 2)) cuts.add(at + 1);
    }
    const sorted = [...cuts].filter((c) => c > 0 && c < bytes.length).sort((a, b) => a - b);
    const finAfter = !close && options.allowFin === true && r() < 0.15;
    const headers = fields.flatMap(([k, v]) => [k.toLowerCase(), trimOws(v)]);
    out.push({
      n,
      method,
      bytes,
      cuts: sorted.length > 200 ? sorted.filter((_, i) => i % Math.ceil(sorted.length / 200) === 0) : sorted,
      close,
      finAfter,
      status,
      headers,
      body: method === 'HEAD' ? Buffer.alloc(0) : body,
      label: `shape ${n} (seed ${seed}): ${effective} ${status} ${method} body ${size} B, ${nFields} fields, cut ${mode} ${sorted.length}`,
    });
  }
  return out;
}

/** What a raw staging server received: each request's first line and head, in order. */
export interface Seen {
  /** `<method> <target> HTTP/1.<minor>` */
  line: string;
  /** The request line and fields as received (`name: value` lines joined by CRLF, no final CRLF). */
  head: string;
  rawHeaders: string[];
  body: Buffer;
  trailers: string[];
  connection: number;
}

/**
 * A raw staging server: frames requests (head, then a Content-Length body), answers
 * `/shape/<n>/…` with shape n's bytes, piece by piece at its cuts (a `setImmediate`, or a short
 * timer, between pieces, so the client reads them apart), closing when the shape says.
 */
export class ShapeServer {
  readonly seen: Seen[] = [];
  /** Requests the parser refused (none expected). */
  readonly refused: string[] = [];
  readonly #server: Server;
  readonly #sockets = new Set<Socket>();
  readonly #shapes: Shape[];
  connections = 0;
  port = 0;
  /** Closes a connection idle this long after a response (ms; 0: never), as a server with a short keep-alive timeout. */
  idleCloseMs = 0;
  /** Bytes sent on an idle connection, `idleJunkMs` after each response (null: none). */
  idleJunk: Buffer | null = null;
  idleJunkMs = 50;

  private constructor(shapes: Shape[], tls?: TlsOptions) {
    this.#shapes = shapes;
    const handle = (socket: Socket) => {
      const id = ++this.connections;
      this.#sockets.add(socket);
      socket.on('close', () => this.#sockets.delete(socket));
      socket.on('error', () => undefined);
      // Each piece goes at once (no Nagle wait behind a delayed ACK).
      socket.setNoDelay(true);
      const parser = new RequestParser({ maxHeaderBytes: 1024 * 1024, maxBodyBytes: 64 * 1024 * 1024 });
      const waiting: ParsedRequest[] = [];
      let busy = false;
      let idleTimer: NodeJS.Timeout | null = null;
      let junkTimer: NodeJS.Timeout | null = null;
      const pump = () => {
        // Closed on our side: a real server would not read (or answer) what comes after.
        if (busy || socket.writableEnded) return;
        const request = waiting.shift();
        if (request === undefined) return;
        let head = `${request.method} ${request.target} HTTP/1.${request.minor}`;
        for (let i = 0; i < request.rawHeaders.length; i += 2) head += `\r\n${request.rawHeaders[i]}: ${request.rawHeaders[i + 1]}`;
        this.seen.push({
          line: `${request.method} ${request.target} HTTP/1.${request.minor}`,
          head,
          rawHeaders: request.rawHeaders,
          body: Buffer.from(request.body),
          trailers: request.trailers,
          connection: id,
        });
        if (idleTimer) clearTimeout(idleTimer);
        if (junkTimer) clearTimeout(junkTimer);
        const n = Number(/^\/shape\/(\d+)/.exec(request.target)?.[1] ?? -1);
        const shape = this.#shapes[n];
        if (!shape) {
          socket.end('HTTP/1.1 599 No Such Shape\r\nContent-Length: 0\r\nConnection: close\r\n\r\n');
          return;
        }
        busy = true;
        void this.#send(socket, shape).then(() => {
          busy = false;
          if (shape.close || shape.finAfter) {
            socket.end();
            return;
          }
          if (this.idleCloseMs > 0) idleTimer = setTimeout(() => socket.end(), this.idleCloseMs);
          const junk = this.idleJunk;
          if (junk !== null) junkTimer = setTimeout(() => socket.write(junk), this.idleJunkMs);
          pump();
        });
      };
      socket.on('data', (d: Buffer) => {
        parser.feed(d);
        for (let e = parser.next(); e !== null; e = parser.next()) {
          if (e.kind === 'head' && e.head.expectContinue) socket.write('HTTP/1.1 100 Continue\r\n\r\n');
          if (e.kind === 'refused') {
            this.refused.push(`${e.refusal.status} ${JSON.stringify(e.refusal).slice(0, 200)}`);
            socket.destroy();
            return;
          }
          if (e.kind === 'request') waiting.push(e.request);
        }
        pump();
      });
    };
    this.#server = tls ? createTlsServer(tls, handle) : createTcpServer(handle);
  }

  async #send(socket: Socket, shape: Shape): Promise<void> {
    let at = 0;
    for (const cut of [...shape.cuts, shape.bytes.length]) {
      if (socket.destroyed) return;
      const more = socket.write(shape.bytes.subarray(at, cut));
      at = cut;
      if (cut < shape.bytes.length) {
        // Drained (when the write said to wait) and a moment later: the client reads this piece alone.
        if (!more) await new Promise((r) => socket.once('drain', r));
        await new Promise((r) => (at % 3 === 0 ? setTimeout(r, 1) : setImmediate(r)));
      }
    }
  }

  static async start(shapes: Shape[], tls?: TlsOptions): Promise<ShapeServer> {
    const s = new ShapeServer(shapes, tls);
    await new Promise<void>((resolve) => s.#server.listen(0, '127.0.0.1', resolve));
    s.port = (s.#server.address() as { port: number }).port;
    return s;
  }

  url(tls = false): string {
    return `${tls ? 'https' : 'http'}://127.0.0.1:${this.port}`;
  }

  close(): Promise<void> {
    for (const s of this.#sockets) s.destroy();
    return new Promise((resolve) => this.#server.close(() => resolve()));
  }
}

/** Differences between what a client reported and what the shape sent (empty: byte for byte). */
export function diffResponse(
  shape: Shape,
  got: { statusCode?: number; status?: number; headers: string[]; body: Buffer; truncated: boolean },
  limit: number,
): string[] {
  const out: string[] = [];
  const status = got.statusCode ?? got.status;
  if (status !== shape.status) out.push(`status ${status} !== ${shape.status}`);
  if (got.headers.length !== shape.headers.length) out.push(`${got.headers.length / 2} header fields !== ${shape.headers.length / 2}`);
  for (let i = 0; i < Math.max(got.headers.length, shape.headers.length); i++) {
    if (got.headers[i] !== shape.headers[i]) {
      out.push(`header item ${i}: ${JSON.stringify(String(got.headers[i]).slice(0, 60))} !== ${JSON.stringify(String(shape.headers[i]).slice(0, 60))}`);
      break;
    }
  }
  const want = limit === 0 ? Buffer.alloc(0) : shape.body.subarray(0, limit);
  if (!got.body.equals(want)) {
    let at = 0;
    while (at < Math.min(got.body.length, want.length) && got.body[at] === want[at]) at++;
    out.push(`body (${got.body.length} B) differs from the ${want.length} B expected at byte ${at}`);
  }
  const truncated = limit > 0 && shape.body.length > limit;
  if (got.truncated !== truncated) out.push(`truncated ${got.truncated} !== ${truncated}`);
  return out;
}

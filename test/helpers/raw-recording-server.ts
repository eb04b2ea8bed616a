import { createServer, type Server, type Socket } from 'node:net';
import { createServer as createTlsServer, type TlsOptions } from 'node:tls';
import { listenHttp } from '@mirrorplane/runtime';
import { RequestParser, type ParsedRequest, type Refusal } from '@mirrorplane/ingress';

/** One request exactly as a raw server received it (strings are latin1: one char a byte). */
export interface RawReceived {
  method: string;
  target: string;
  minor: 0 | 1;
  rawHeaders: string[];
  body: Buffer;
  trailers: string[];
}

/**
 * A server that records requests as their bytes came, for the shapes node:http refuses (method
 * tokens it does not know, obs-text targets): it frames requests with the ingress's parser
 * (the one tested against node's in test/fuzz/http1-differential.test.ts), answers 200 `ok`
 * (100 Continue first when asked), keeps connections alive and answers pipelined requests in
 * order. Plays production or staging in the faithful-intake tests.
 */
export class RawRecordingServer {
  readonly received: RawReceived[] = [];
  readonly refused: Refusal[] = [];
  readonly #server: Server;
  readonly #sockets = new Set<Socket>();
  port = 0;
  readonly #tls: boolean;

  /** With `tls`: HTTPS (a certificate, and `ca` + `requestCert` to require client certificates). */
  constructor(tls?: TlsOptions) {
    this.#tls = tls !== undefined;
    const handle = (socket: Socket) => {
      this.#sockets.add(socket);
      socket.on('close', () => this.#sockets.delete(socket));
      socket.on('error', () => undefined);
      const parser = new RequestParser({ maxHeaderBytes: 1024 * 1024, maxBodyBytes: 64 * 1024 * 1024 });
      socket.on('data', (chunk: Buffer) => {
        parser.feed(chunk);
        for (let e = parser.next(); e !== null; e = parser.next()) {
          if (e.kind === 'head' && e.head.expectContinue) socket.write('HTTP/1.1 100 Continue\r\n\r\n');
          if (e.kind === 'refused') {
            this.refused.push(e.refusal);
            socket.end(`HTTP/1.1 ${e.refusal.status} Refused\r\nconnection: close\r\ncontent-length: 0\r\n\r\n`);
            return;
          }
          if (e.kind === 'request') {
            this.received.push(record(e.request));
            socket.write(`HTTP/1.1 200 OK\r\ncontent-length: 2\r\n${e.request.keepAlive ? '' : 'connection: close\r\n'}\r\nok`);
            if (!e.request.keepAlive) {
              socket.end();
              return;
            }
          }
        }
      });
    };
    this.#server = tls ? createTlsServer(tls, handle) : createServer(handle);
  }

  static async start(tls?: TlsOptions): Promise<RawRecordingServer> {
    const server = new RawRecordingServer(tls);
    server.port = await listenHttp(server.#server, 0, '127.0.0.1');
    return server;
  }

  get url(): string {
    return `${this.#tls ? 'https' : 'http'}://127.0.0.1:${this.port}`;
  }

  close(): Promise<void> {
    for (const s of this.#sockets) s.destroy();
    return new Promise((resolve) => this.#server.close(() => resolve()));
  }
}

function record(r: ParsedRequest): RawReceived {
  return { method: r.method, target: r.target, minor: r.minor, rawHeaders: r.rawHeaders, body: r.body, trailers: r.trailers };
}

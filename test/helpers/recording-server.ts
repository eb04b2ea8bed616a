import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { listenHttp } from '@mirrorplane/runtime';
import { headerValue } from '@mirrorplane/core';

/** One request exactly as a server received it. */
export interface Received {
  method: string;
  url: string;
  rawHeaders: string[];
  body: Buffer;
  /** Trailer fields of a chunked body, `[name, value, …]`. */
  rawTrailers: string[];
  receivedAt: number;
}

export type Responder = (req: Received, res: ServerResponse) => void | Promise<void>;

/**
 * A real HTTP server that records every request it receives and answers with `responder`
 * (default 200 "ok"). Plays staging (or production) in tests.
 */
export class RecordingServer {
  readonly received: Received[] = [];
  responder: Responder;
  readonly #server: Server;
  readonly #sockets = new Set<Socket>();
  port = 0;

  constructor(responder?: Responder) {
    this.responder = responder ?? ((_req, res) => void res.writeHead(200, { 'content-type': 'text/plain' }).end('ok'));
    this.#server = createServer({ maxHeaderSize: 256 * 1024 }, (req: IncomingMessage, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        const received: Received = {
          method: req.method ?? '',
          url: req.url ?? '',
          rawHeaders: req.rawHeaders,
          body: Buffer.concat(chunks),
          rawTrailers: req.rawTrailers,
          receivedAt: Date.now(),
        };
        this.received.push(received);
        Promise.resolve(this.responder(received, res)).catch(() => res.destroy());
      });
    });
    // Every field is recorded (node keeps 2,000 by default and drops the rest silently).
    this.#server.maxHeadersCount = 0;
    this.#server.on('connection', (s: Socket) => {
      this.#sockets.add(s);
      s.on('close', () => this.#sockets.delete(s));
    });
  }

  static async start(responder?: Responder, port = 0): Promise<RecordingServer> {
    const server = new RecordingServer(responder);
    await server.listen(port);
    return server;
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  async listen(port = this.port): Promise<void> {
    this.port = await listenHttp(this.#server, port, '127.0.0.1');
  }

  /** Requests that carried this mirrorplane id. */
  byEntryId(id: string): Received[] {
    return this.received.filter((r) => header(r.rawHeaders, 'x-mirrorplane-id') === id);
  }

  /** Stops listening and drops open connections (staging "goes down"); `listen()` brings it back on the same port. */
  close(): Promise<void> {
    return new Promise((resolve) => {
      if (!this.#server.listening) return resolve();
      this.#server.close(() => resolve());
      for (const s of this.#sockets) s.destroy();
    });
  }
}

/** First value of a header in raw pairs (case-insensitive). */
export function header(rawHeaders: readonly string[], name: string): string | undefined {
  return headerValue(rawHeaders, name) ?? undefined;
}

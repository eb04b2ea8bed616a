import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { closeHttp, listenHttp } from '@mirrorplane/runtime';

/**
 * A tiny JSON API that plays production or staging in the demo, docker-compose and tests:
 * `POST /orders` creates an order, `GET|PUT|DELETE /orders/:id` reads, replaces, deletes it,
 * `GET /healthz` answers ok, anything else echoes what was received.
 * Two instances differ on purpose: each has its own id prefix and counter, as a real
 * production and staging do.
 */
export interface SampleBackendOptions {
  /** Shown in answers (`served-by` header and `backend` field). */
  name: string;
  /** Prefix of created ids (`ord_`); counters start at `firstId`. */
  idPrefix?: string;
  firstId?: number;
  /** When set, only requests whose path starts with it are served; others get 404 (staging's routes can differ). */
  pathPrefix?: string;
  /** Answers this many milliseconds late (a slow staging in the production-impact benchmark). */
  delayMs?: number;
  /** Called for each request after it was answered (the demo prints a line). */
  onRequest?: (request: ReceivedRequest) => void;
}

export interface ReceivedRequest {
  method: string;
  url: string;
  rawHeaders: string[];
  body: Buffer;
  status: number;
}

export class SampleBackend {
  readonly #options: SampleBackendOptions;
  readonly #server: Server;
  readonly #orders = new Map<string, unknown>();
  #next: number;
  /** Requests served, by this instance, since it started. */
  served = 0;

  constructor(options: SampleBackendOptions) {
    this.#options = options;
    this.#next = options.firstId ?? 1;
    this.#server = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        const body = Buffer.concat(chunks);
        if (options.delayMs) setTimeout(() => this.#handle(req, res, body), options.delayMs);
        else this.#handle(req, res, body);
      });
    });
  }

  #send(res: ServerResponse, status: number, body: unknown): number {
    const text = JSON.stringify(body);
    res.writeHead(status, { 'content-type': 'application/json', 'served-by': this.#options.name, 'content-length': Buffer.byteLength(text) });
    res.end(text);
    return status;
  }

  #handle(req: IncomingMessage, res: ServerResponse, body: Buffer): void {
    this.served += 1;
    const url = new URL(req.url ?? '/', 'http://backend');
    let path = url.pathname;
    let status: number;
    if (path === '/healthz') {
      status = this.#send(res, 200, { ok: true, backend: this.#options.name });
    } else if (this.#options.pathPrefix && !path.startsWith(this.#options.pathPrefix)) {
      status = this.#send(res, 404, { error: `not found: ${path}`, backend: this.#options.name });
    } else {
      if (this.#options.pathPrefix) path = path.slice(this.#options.pathPrefix.length) || '/';
      status = this.#route(req.method ?? 'GET', path, body, res);
    }
    this.#options.onRequest?.({ method: req.method ?? '', url: req.url ?? '', rawHeaders: req.rawHeaders, body, status });
  }

  #route(method: string, path: string, body: Buffer, res: ServerResponse): number {
    const name = this.#options.name;
    const match = /^\/orders(?:\/([^/]+))?$/.exec(path);
    if (!match) return this.#send(res, 200, { backend: name, method, path, bytes: body.length });
    const id = match[1];
    let input: unknown = {};
    if (body.length > 0) {
      try {
        input = JSON.parse(body.toString('utf8'));
      } catch {
        return this.#send(res, 400, { error: 'body is not JSON', backend: name });
      }
    }
    if (id === undefined) {
      if (method === 'POST') {
        const newId = `${this.#options.idPrefix ?? 'ord_'}${this.#next++}`;
        const order = { ...(input as object), id: newId };
        this.#orders.set(newId, order);
        res.setHeader('location', `/orders/${newId}`);
        return this.#send(res, 201, order);
      }
      if (method === 'GET') return this.#send(res, 200, { orders: [...this.#orders.values()] });
      return this.#send(res, 405, { error: `${method} not allowed on /orders` });
    }
    const existing = this.#orders.get(id);
    if (method === 'GET') return existing ? this.#send(res, 200, existing) : this.#send(res, 404, { error: `no order ${id}` });
    if (method === 'PUT') {
      if (!existing) return this.#send(res, 404, { error: `no order ${id}` });
      const order = { ...(input as object), id };
      this.#orders.set(id, order);
      return this.#send(res, 200, order);
    }
    if (method === 'DELETE') {
      if (!existing) return this.#send(res, 404, { error: `no order ${id}` });
      this.#orders.delete(id);
      return this.#send(res, 200, { deleted: id });
    }
    return this.#send(res, 405, { error: `${method} not allowed on /orders/:id` });
  }

  listen(port = 0, host = '127.0.0.1'): Promise<number> {
    return listenHttp(this.#server, port, host);
  }

  close(): Promise<void> {
    return closeHttp(this.#server);
  }
}

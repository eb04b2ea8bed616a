import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { listenHttp } from '@mirrorplane/runtime';
import type { StagingMode } from './schedule.js';

/** The body the load sends for a request id: staging checks every copy against it, byte for byte. */
export function bodyFor(requestId: string, size: number): Buffer {
  const unit = Buffer.from(`${requestId};`, 'latin1');
  const out = Buffer.alloc(size);
  for (let i = 0; i < size; i += unit.length) unit.copy(out, i, 0, Math.min(unit.length, size - i));
  return out;
}

function first(req: IncomingMessage, name: string): string | undefined {
  const v = req.headers[name];
  return Array.isArray(v) ? v[0] : v;
}

/** What staging knows of one request id. */
export interface StagingRecord {
  /** Copies that reached staging (whole request read), in any mode. */
  reached: number;
  /** Copies staging answered with a complete 2xx. */
  completed: number;
  /** Every x-mirrorplane-id seen (one, unless something is wrong). */
  entryIds: Set<string>;
  maxAttempt: number;
}

/**
 * Staging for the chaos run: a real `node:http` server whose behaviour is switched by the
 * schedule (see `StagingMode`). It records, per `x-request-id`, how many copies reached it
 * and how many it answered in full with a 2xx, and checks each body against `bodyFor`.
 * Only counters and ids are kept, so hours of load fit in memory.
 */
export class ChaosStaging {
  readonly records = new Map<string, StagingRecord>();
  /** Request ids whose body (or method) was not what the load sent. */
  readonly corrupted: string[] = [];
  /** Requests without x-mirrorplane-id or x-request-id. */
  unlabelled = 0;
  readonly #server: Server;
  readonly #sockets = new Set<Socket>();
  readonly #hanging = new Set<ServerResponse>();
  #mode: StagingMode = 'fast';
  readonly slowMs: number;
  port = 0;

  private constructor(slowMs: number) {
    this.slowMs = slowMs;
    this.#server = createServer((req, res) => this.#onRequest(req, res));
    this.#server.on('connection', (s: Socket) => {
      this.#sockets.add(s);
      s.on('close', () => this.#sockets.delete(s));
    });
  }

  static async start(slowMs: number): Promise<ChaosStaging> {
    const staging = new ChaosStaging(slowMs);
    await staging.#listen();
    return staging;
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  get mode(): StagingMode {
    return this.#mode;
  }

  /** Switches behaviour; `refuse` closes the listener (and open connections), leaving it listens again. */
  async setMode(mode: StagingMode): Promise<void> {
    const was = this.#mode;
    this.#mode = mode;
    if (mode === 'refuse' && was !== 'refuse') await this.#stopListening();
    if (mode !== 'refuse' && was === 'refuse') await this.#listen();
    if (mode !== 'hang') {
      // Requests held by a hang are let go once it ends: they were never answered.
      for (const res of this.#hanging) res.destroy();
      this.#hanging.clear();
    }
  }

  #onRequest(req: IncomingMessage, res: ServerResponse): void {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const requestId = first(req, 'x-request-id');
      const entryId = first(req, 'x-mirrorplane-id');
      if (requestId === undefined || entryId === undefined) {
        this.unlabelled += 1;
        res.writeHead(200).end();
        return;
      }
      let record = this.records.get(requestId);
      if (!record) {
        record = { reached: 0, completed: 0, entryIds: new Set(), maxAttempt: 0 };
        this.records.set(requestId, record);
      }
      record.reached += 1;
      record.entryIds.add(entryId);
      record.maxAttempt = Math.max(record.maxAttempt, Number(first(req, 'x-mirrorplane-attempt') ?? 0));
      const body = Buffer.concat(chunks);
      const size = Number(first(req, 'x-chaos-size') ?? -1);
      if (req.method !== 'POST' || !body.equals(bodyFor(requestId, size))) this.corrupted.push(requestId);
      this.#answer(res, record);
    });
  }

  #answer(res: ServerResponse, record: StagingRecord): void {
    const ok = () => {
      res.once('finish', () => {
        record.completed += 1;
      });
      res.writeHead(200, { 'content-type': 'text/plain' }).end('ok');
    };
    switch (this.#mode) {
      case 'fast':
      case 'refuse': // a request already on an accepted connection when the listener closed
        ok();
        return;
      case 'slow':
        setTimeout(() => {
          if (!res.destroyed) ok();
        }, this.slowMs).unref();
        return;
      case 'hang':
        this.#hanging.add(res);
        res.once('close', () => this.#hanging.delete(res));
        return;
      case '5xx':
        res.writeHead([500, 502, 503][record.reached % 3] as number).end('staging error');
        return;
      case '429':
        res.writeHead(429, { 'retry-after': '1' }).end('slow down');
        return;
      case 'cut':
        res.writeHead(200, { 'content-length': '100' });
        res.write('partial');
        setImmediate(() => res.socket?.destroy());
        return;
    }
  }

  async #listen(): Promise<void> {
    this.port = await listenHttp(this.#server, this.port, '127.0.0.1');
  }

  #stopListening(): Promise<void> {
    return new Promise((resolve) => {
      if (!this.#server.listening) return resolve();
      this.#server.close(() => resolve());
      for (const s of this.#sockets) s.destroy();
    });
  }

  async close(): Promise<void> {
    for (const res of this.#hanging) res.destroy();
    await this.#stopListening();
  }
}

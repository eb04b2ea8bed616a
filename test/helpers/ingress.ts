import { connect, type Socket } from 'node:net';
import { randomBytes } from 'node:crypto';
import { keysFor } from '@mirrorplane/core';
import { freePort } from './ports.js';
import { MirrorplaneProcess } from './processes.js';
import { RedisServer } from './redis-server.js';
import { requestHead, sendRaw } from './raw-http.js';
import { waitFor } from './wait.js';

/** An ingress started from the real CLI with its admin port known, once `/readyz` says 200. */
export interface StartedIngress {
  ingress: MirrorplaneProcess;
  port: number;
  adminPort: number;
  prefix: string;
  /** The deployment's stream key. */
  stream: string;
}

/**
 * Starts `mirrorplane ingress` on free ports against `redisUrl` (a server or `redis+cluster://`),
 * on `options.prefix` (random by default) with `env` added, and waits until it listens and is
 * ready. `options.detached`: in its own process group.
 */
export async function startIngress(
  redisUrl: string,
  env: Record<string, string> = {},
  options: { prefix?: string; detached?: boolean } = {},
): Promise<StartedIngress> {
  const prefix = options.prefix ?? `t${randomBytes(4).toString('hex')}`;
  const port = await freePort();
  const adminPort = await freePort();
  const ingress = new MirrorplaneProcess(
    ['ingress'],
    {
      REDIS_URL: redisUrl,
      MIRRORPLANE_PREFIX: prefix,
      INGRESS_PORT: String(port),
      INGRESS_HOST: '127.0.0.1',
      ADMIN_PORT: String(adminPort),
      ...env,
    },
    { detached: options.detached },
  );
  await ingress.waitForLog('ingress listening');
  await untilReady(adminPort, 60_000);
  return { ingress, port, adminPort, prefix, stream: keysFor(prefix).stream };
}

/** Waits until the admin port's `/readyz` answers 200 (a refused connection counts as not yet). */
export async function untilReady(adminPort: number, timeoutMs = 30_000): Promise<void> {
  await waitFor('/readyz 200', async () => (await fetch(`http://127.0.0.1:${adminPort}/readyz`).catch(() => null))?.status === 200, timeoutMs);
}

/** One sample of a Prometheus text exposition (the first line starting with `name`), 0 if absent. */
export async function metric(adminPort: number, name: string, headers: Record<string, string> = {}): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${adminPort}/metrics`, { headers })).text();
  const line = text.split('\n').find((l) => l.startsWith(name));
  return line ? Number(line.split(' ').pop()) : 0;
}

/** For each name, the sum of every sample whose line starts with it (all its label sets), from one scrape. */
export async function metricSums(adminPort: number, ...names: string[]): Promise<number[]> {
  const lines = (await (await fetch(`http://127.0.0.1:${adminPort}/metrics`)).text()).split('\n');
  return names.map((name) => lines.filter((l) => l.startsWith(name)).reduce((sum, l) => sum + Number(l.split(' ').pop()), 0));
}

/** `mirrorplane_ingress_requests_accepted_total`. */
export const acceptedCount = (adminPort: number) => metric(adminPort, 'mirrorplane_ingress_requests_accepted_total');

/** `mirrorplane_ingress_requests_dropped_total{reason}`. */
export const droppedCount = (adminPort: number, reason: string) => metric(adminPort, `mirrorplane_ingress_requests_dropped_total{reason="${reason}"}`);

/** A client of the stream (a `Redis` or a `Cluster`): only what `storedIds` needs. */
interface StreamReader {
  xrangeBuffer(key: string, start: string, end: string): Promise<[Buffer, Buffer[]][]>;
}

/**
 * How many times each X-Request-ID (field `r`) is stored in `stream`, read with XRANGE from a
 * client (a `Redis` or a `Cluster`) or from a test's `RedisServer` (a client of its own, closed).
 */
export async function storedIds(source: RedisServer | StreamReader, stream: string): Promise<Map<string, number>> {
  if (source instanceof RedisServer) {
    const client = source.client();
    try {
      return await storedIds(client, stream);
    } finally {
      client.disconnect();
    }
  }
  const counts = new Map<string, number>();
  for (const [, fields] of await source.xrangeBuffer(stream, '-', '+'))
    for (let i = 0; i < fields.length; i += 2)
      if (fields[i]?.toString() === 'r') {
        const id = (fields[i + 1] as Buffer).toString('latin1');
        counts.set(id, (counts.get(id) ?? 0) + 1);
      }
  return counts;
}

/** One answer read from a keep-alive connection, with when it arrived (ms since epoch). */
export interface KeepAliveAnswer {
  status: number;
  head: string;
  at: number;
}

/**
 * One raw HTTP/1.1 keep-alive connection that records every answer (`Content-Length` framed) with
 * the time it arrived; `onAnswer` runs after each.
 */
export class KeepAliveConn {
  readonly socket: Socket;
  readonly answers: KeepAliveAnswer[] = [];
  closed = false;
  onAnswer: (answer: KeepAliveAnswer) => void = () => undefined;
  #buffer = Buffer.alloc(0);

  constructor(port: number) {
    this.socket = connect(port, '127.0.0.1');
    this.socket.on('data', (chunk: Buffer) => {
      this.#buffer = Buffer.concat([this.#buffer, chunk]);
      for (;;) {
        const end = this.#buffer.indexOf('\r\n\r\n');
        if (end === -1) return;
        const head = this.#buffer.subarray(0, end).toString('latin1');
        const length = Number(/content-length: (\d+)/i.exec(head)?.[1] ?? 0);
        if (this.#buffer.length < end + 4 + length) return;
        const answer = { status: Number(/^HTTP\/1\.1 (\d{3})/.exec(head)?.[1]), head, at: Date.now() };
        this.answers.push(answer);
        this.#buffer = this.#buffer.subarray(end + 4 + length);
        this.onAnswer(answer);
      }
    });
    this.socket.on('error', () => undefined);
    this.socket.on('close', () => (this.closed = true));
  }

  /** Writes one request with `X-Request-ID: id` and a Content-Length body. */
  send(method: string, target: string, id: string, body = ''): void {
    this.socket.write(`${method} ${target} HTTP/1.1\r\nHost: x\r\nX-Request-ID: ${id}\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`);
  }

  close(): void {
    this.socket.destroy();
  }
}

/**
 * Sends `count` requests one after another on one keep-alive connection (`request(i)` gives the
 * bytes of the i-th, written once the previous one is answered); resolves with their statuses.
 * Rejects if the connection fails or closes before the last answer.
 */
export function sendOneByOne(port: number, count: number, request: (i: number) => Buffer): Promise<number[]> {
  return new Promise((resolve, reject) => {
    const conn = new KeepAliveConn(port);
    conn.socket.on('error', reject);
    conn.socket.on('close', () => {
      if (conn.answers.length < count) reject(new Error(`connection closed after ${conn.answers.length} of ${count} answers`));
    });
    conn.onAnswer = () => {
      if (conn.answers.length === count) {
        conn.close();
        resolve(conn.answers.map((a) => a.status));
      } else conn.socket.write(request(conn.answers.length));
    };
    conn.socket.write(request(0));
  });
}

/** What a request of a `load` got: its status (0: no HTTP answer), drop reason or error, and how long it took. */
export interface LoadOutcome {
  status: number;
  reason: string | null;
  ms: number;
}

/**
 * `clients` loops, each sending POSTs one after another (a fresh connection each, X-Request-ID
 * `${tag}-${client}-${i}`, a body of `bodyBytes`) until `stop()`; every outcome kept by id.
 */
export function sequentialLoad(port: number, clients: number, tag: string, bodyBytes = 4) {
  const outcomes = new Map<string, LoadOutcome>();
  let running = true;
  const body = Buffer.alloc(bodyBytes, 'b');
  const loops = Array.from({ length: clients }, async (_, c) => {
    for (let i = 0; running; i++) {
      const id = `${tag}-${c}-${i}`;
      const started = Date.now();
      let failure: string | null = null;
      const r = await sendRaw(port, requestHead('POST', `/${tag}/${c}/${i}`, ['Host', 'x', 'X-Request-ID', id], bodyBytes), body).catch((e: Error) => {
        failure = e.message;
        return null;
      });
      outcomes.set(id, { status: r?.status ?? 0, reason: /x-mirrorplane-drop: (\S+)/i.exec(r?.head ?? '')?.[1] ?? failure, ms: Date.now() - started });
    }
  });
  return {
    outcomes,
    stop: async () => {
      running = false;
      await Promise.all(loops);
    },
  };
}

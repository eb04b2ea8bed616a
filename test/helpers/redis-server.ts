import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { freePort } from './ports.js';
import { waitFor } from './wait.js';

/**
 * A real redis-server for one test file, on a free port, in its own temporary directory.
 * `stop()`/`start()` simulate outages (the port is kept); `close()` removes everything.
 */
export class RedisServer {
  readonly port: number;
  readonly dir: string;
  readonly #extraArgs: string[];
  #child: ChildProcess | null = null;

  private constructor(port: number, dir: string, extraArgs: string[]) {
    this.port = port;
    this.dir = dir;
    this.#extraArgs = extraArgs;
  }

  static async start(options: { appendOnly?: boolean; args?: string[] } = {}): Promise<RedisServer> {
    const dir = mkdtempSync(join(tmpdir(), 'mp-test-redis-'));
    const args = options.appendOnly ? ['--appendonly', 'yes', '--appendfsync', 'always'] : ['--appendonly', 'no'];
    const server = new RedisServer(await freePort(), dir, [...args, ...(options.args ?? [])]);
    await server.start();
    return server;
  }

  get url(): string {
    return `redis://127.0.0.1:${this.port}`;
  }

  async start(): Promise<void> {
    const child = spawn('redis-server', ['--port', String(this.port), '--bind', '127.0.0.1', '--dir', this.dir, '--save', '', ...this.#extraArgs], { stdio: 'ignore' });
    this.#child = child;
    await waitFor(`redis-server on port ${this.port}`, async () => {
      if (child.exitCode !== null) throw new Error(`redis-server exited with ${child.exitCode}`);
      const client = new Redis(this.port, '127.0.0.1', { lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null });
      client.on('error', () => undefined);
      try {
        await client.connect();
        return (await client.ping()) === 'PONG';
      } finally {
        client.disconnect();
      }
    }, 20_000, 50);
  }

  /** Stops the server: SIGTERM (a clean shutdown) or SIGKILL (a crash). */
  async stop(signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
    const child = this.#child;
    if (!child || child.exitCode !== null) return;
    const exited = new Promise((r) => child.once('exit', r));
    child.kill(signal);
    await exited;
    this.#child = null;
  }

  /**
   * Sends a signal without waiting for an exit: `SIGSTOP` hangs Redis with its connections
   * open (a frozen host, a swap storm), `SIGCONT` resumes it. Whoever stops must continue in
   * a `finally`.
   */
  signal(signal: NodeJS.Signals): void {
    if (this.#child && this.#child.exitCode === null) this.#child.kill(signal);
  }

  /** The server's process id (for RSS and signals); null while it is stopped. */
  get pid(): number | null {
    return this.#child?.pid ?? null;
  }

  /** A client for assertions (caller closes it). */
  client(): Redis {
    const client = new Redis(this.url, { maxRetriesPerRequest: null });
    client.on('error', () => undefined);
    return client;
  }

  async close(): Promise<void> {
    await this.stop('SIGKILL');
    rmSync(this.dir, { recursive: true, force: true });
  }
}

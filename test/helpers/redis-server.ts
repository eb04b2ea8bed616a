import { Redis } from 'ioredis';
import { LocalRedisServer } from '@mirrorplane/runtime';
import { freePort } from './ports.js';

/**
 * A real redis-server for one test file, on a free port, in its own temporary directory:
 * the runtime's `LocalRedisServer` (shared with `mirrorplane start`, the demo and the
 * benchmarks) plus a client for assertions. `stop()`/`start()` simulate outages (the port is
 * kept); `close()` removes everything.
 */
export class RedisServer {
  readonly #server: LocalRedisServer;

  private constructor(server: LocalRedisServer) {
    this.#server = server;
  }

  static async start(options: { appendOnly?: boolean; args?: string[] } = {}): Promise<RedisServer> {
    const persistence = options.appendOnly ? ['--appendonly', 'yes', '--appendfsync', 'always'] : ['--appendonly', 'no'];
    // A port below the ephemeral range (see ports.ts): kept across stop() and start(), it must
    // not become the local end of some client's connection in between.
    const port = await freePort();
    return new RedisServer(await LocalRedisServer.start({ port, dirPrefix: 'mp-test-redis-', args: [...persistence, ...(options.args ?? [])] }));
  }

  get port(): number {
    return this.#server.port;
  }

  get dir(): string {
    return this.#server.dir;
  }

  get url(): string {
    return this.#server.url;
  }

  /** Whether the process runs (false between `stop()` and `start()`). */
  get running(): boolean {
    return this.#server.child !== null;
  }

  start(): Promise<void> {
    return this.#server.start();
  }

  /** Stops the server: SIGTERM (a clean shutdown) or SIGKILL (a crash). */
  stop(signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
    return this.#server.stop(signal);
  }

  /**
   * Sends a signal without waiting for an exit: `SIGSTOP` hangs Redis with its connections
   * open (a frozen host, a swap storm), `SIGCONT` resumes it. Whoever stops must continue in
   * a `finally`.
   */
  signal(signal: NodeJS.Signals): void {
    const child = this.#server.child;
    if (child && child.exitCode === null) child.kill(signal);
  }

  /** The server's process id (for RSS and signals); null while it is stopped. */
  get pid(): number | null {
    return this.#server.child?.pid ?? null;
  }

  /** A client for assertions (caller closes it). */
  client(): Redis {
    const client = new Redis(this.url, { maxRetriesPerRequest: null });
    client.on('error', () => undefined);
    return client;
  }

  close(): Promise<void> {
    return this.#server.close();
  }
}

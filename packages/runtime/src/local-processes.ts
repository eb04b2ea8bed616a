import { spawn, spawnSync, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { LocalProcessError } from '@mirrorplane/core';
import { listenHttp } from './http-listen.js';

/**
 * Local processes for `mirrorplane start` and `demo`, the tests and the benchmarks: free
 * ports, a private redis-server, child processes in their own process group. One home, so
 * that "start redis-server and wait until it answers" is written once.
 */

/**
 * A TCP port on `host` that was free a moment ago (bound, read, released). With `preferred`
 * (say 6379) that port when it is free, else any free one; 0 means any.
 */
export async function freePort(preferred = 0, host = '127.0.0.1'): Promise<number> {
  const server = createServer();
  const bound = await listenHttp(server, preferred, host).catch((error: unknown) => (preferred !== 0 ? listenHttp(server, 0, host) : Promise.reject(error)));
  await new Promise((resolve) => server.close(resolve));
  return bound;
}

/**
 * Spawns a child in its own process group (`detached`), so a Ctrl-C at the terminal reaches
 * only our process, which then stops its children in order (Redis last, after the workers
 * acknowledged their work). The caller stops it by pid (`child.kill`), never by name.
 */
export function spawnInOwnGroup(command: string, args: readonly string[], options: Omit<SpawnOptions, 'detached'> = {}): ChildProcess {
  return spawn(command, args, { stdio: 'ignore', ...options, detached: true });
}

/** Whether `redis-server` can be run from PATH. */
export function redisServerInstalled(): boolean {
  return !spawnSync('redis-server', ['--version'], { encoding: 'utf8' }).error;
}

/** Polls until `check` is true; throws `LocalProcessError` naming `what` after `timeoutMs`, or at once when `check` throws one. */
async function waitUntil(what: string, check: () => Promise<boolean>, timeoutMs: number, intervalMs = 50): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await check()) return;
    if (Date.now() > deadline) throw new LocalProcessError(`${what} within ${timeoutMs / 1000} s`);
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

/** Whether a Redis answers PING on 127.0.0.1:`port` (one short-lived connection, no retries). */
export async function redisAnswers(port: number, host = '127.0.0.1'): Promise<boolean> {
  const client = new Redis(port, host, { lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null, connectTimeout: 1000 });
  client.on('error', () => undefined);
  try {
    await client.connect();
    return (await client.ping()) === 'PONG';
  } catch {
    return false;
  } finally {
    client.disconnect();
  }
}

export interface LocalRedisOptions {
  /** The port; default: `preferredPort` when free, else any free port. */
  port?: number;
  /** Tried first when `port` is not given (6379 for `start`); 0: any. */
  preferredPort?: number;
  /** More redis-server arguments (`--appendonly yes`, `--maxmemory …`). */
  args?: readonly string[];
  /** Prefix of the temporary data directory, removed by `close()`. */
  dirPrefix?: string;
  /** Own process group (for CLI commands run from a terminal); default false. */
  ownProcessGroup?: boolean;
  /** Runs the command (to pin it to CPUs, say); default `spawn`. */
  launch?: (command: string, args: string[]) => ChildProcess;
  /** How long `start()` waits for PING to answer; default 20 s. */
  startTimeoutMs?: number;
}

/**
 * A private redis-server on loopback, in its own temporary directory, without persistence
 * unless `args` ask for it. `stop()`/`start()` simulate an outage and keep the port and data
 * directory; `close()` stops it and removes the directory.
 */
export class LocalRedisServer {
  readonly port: number;
  readonly dir: string;
  readonly #args: string[];
  readonly #options: LocalRedisOptions;
  #child: ChildProcess | null = null;

  private constructor(port: number, dir: string, options: LocalRedisOptions) {
    this.port = port;
    this.dir = dir;
    this.#options = options;
    this.#args = ['--port', String(port), '--bind', '127.0.0.1', '--dir', dir, '--save', '', ...(options.args ?? ['--appendonly', 'no'])];
  }

  /** Starts a server and waits until it answers PING. Throws `LocalProcessError` when it exits or does not answer. */
  static async start(options: LocalRedisOptions = {}): Promise<LocalRedisServer> {
    const port = options.port ?? (await freePort(options.preferredPort ?? 0));
    const dir = mkdtempSync(join(tmpdir(), options.dirPrefix ?? 'mirrorplane-redis-'));
    const server = new LocalRedisServer(port, dir, options);
    try {
      await server.start();
    } catch (error) {
      await server.close();
      throw error;
    }
    return server;
  }

  get url(): string {
    return `redis://127.0.0.1:${this.port}`;
  }

  /** The running process, or null while stopped. */
  get child(): ChildProcess | null {
    return this.#child;
  }

  /** (Re)starts the process on the same port and directory and waits until it answers. */
  async start(): Promise<void> {
    const { launch, ownProcessGroup } = this.#options;
    const child = launch
      ? launch('redis-server', this.#args)
      : ownProcessGroup
        ? spawnInOwnGroup('redis-server', this.#args)
        : spawn('redis-server', this.#args, { stdio: 'ignore' });
    this.#child = child;
    let spawnError: Error | null = null;
    child.once('error', (error) => {
      spawnError = error;
    });
    await waitUntil(
      `redis-server on port ${this.port} did not answer`,
      async () => {
        if (spawnError) throw new LocalProcessError(`redis-server could not be started: ${spawnError.message}`, { cause: spawnError });
        if (child.exitCode !== null) throw new LocalProcessError(`redis-server on port ${this.port} exited with code ${child.exitCode}`);
        return redisAnswers(this.port);
      },
      this.#options.startTimeoutMs ?? 20_000,
    );
  }

  /** Stops the process: SIGTERM (a clean shutdown) or SIGKILL (a crash); resolves once it exited. */
  async stop(signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
    const child = this.#child;
    this.#child = null;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise((r) => child.once('exit', r));
    child.kill(signal);
    await exited;
  }

  /** Stops the process (SIGKILL: its data is thrown away anyway) and removes its directory. */
  async close(): Promise<void> {
    await this.stop('SIGKILL');
    rmSync(this.dir, { recursive: true, force: true });
  }
}

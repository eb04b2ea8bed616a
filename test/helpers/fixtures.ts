import { after, before } from 'node:test';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ServerResponse } from 'node:http';
import type { Redis } from 'ioredis';
import { keysFor, type Keys } from '@mirrorplane/core';
import { RecordingServer, type Received, type Responder } from './recording-server.js';
import { RedisServer } from './redis-server.js';
import { Stack, type StackOptions } from './stack.js';
import { waitFor } from './wait.js';

/**
 * Test fixtures in the manner of graphile/worker's `withPgClient`: a test says what it needs
 * (a Redis, a staging server, the ingress and workers as real processes), gets them started,
 * and gets them closed after it, in order, whatever happened. Then the fixture checks that
 * the test left nothing open: a Redis connection still held at the end (an in-process
 * Ingress, ReplayWorker, queue or client the test forgot to close) fails the test, naming the
 * connection. Child processes of the stack are killed first, so their connections do not count.
 */
export interface StackNeeds {
  /** redis-server options: persistence, extra arguments. */
  redis?: { appendOnly?: boolean; args?: string[] };
  /** A staging server; its responder (default 200 "ok"). Omit for no staging server. */
  staging?: Responder | true;
  /** The ingress and workers as CLI processes; needs `staging` unless STAGING_URL is in `env`. */
  roles?: Omit<StackOptions, 'redis' | 'stagingUrl'>;
  /** A fresh temporary directory (this name prefix), removed at the end: config files, recordings. */
  dir?: string;
}

export interface TestStack {
  readonly redis: RedisServer;
  /** The staging server (throws when the test did not ask for one). */
  readonly staging: RecordingServer;
  /** The ingress and workers (throws when the test did not ask for them). */
  readonly roles: Stack;
  /** The temporary directory (throws when the test did not ask for one). */
  readonly dir: string;
  /** The keys of the stack's deployment (random prefix), or of `prefix`. */
  keys(prefix?: string): Keys;
  /** A Redis client closed by the fixture. */
  client(): Redis;
  /** Registers a cleanup step that runs before the fixture's own (last registered runs first). */
  defer(cleanup: () => unknown): void;
}

/** A staging responder that answers 200 after `ms`. */
export function delayed(ms: number): Responder {
  return (_req: Received, res: ServerResponse) => void setTimeout(() => res.writeHead(200).end(), ms);
}

class Fixture implements TestStack {
  readonly redis: RedisServer;
  readonly #staging: RecordingServer | null;
  readonly #roles: Stack | null;
  readonly #dir: string | null;
  readonly #clients: Redis[] = [];
  readonly #cleanups: (() => unknown)[] = [];

  private constructor(redis: RedisServer, staging: RecordingServer | null, roles: Stack | null, dir: string | null) {
    this.redis = redis;
    this.#staging = staging;
    this.#roles = roles;
    this.#dir = dir;
  }

  static async start(needs: StackNeeds): Promise<Fixture> {
    const redis = await RedisServer.start(needs.redis);
    let staging: RecordingServer | null = null;
    let roles: Stack | null = null;
    try {
      if (needs.staging) staging = await RecordingServer.start(needs.staging === true ? undefined : needs.staging);
      if (needs.roles) {
        const stagingUrl = staging?.url ?? needs.roles.env?.STAGING_URL;
        if (!stagingUrl) throw new Error('useStack: roles need a staging server or STAGING_URL in env');
        roles = await Stack.start({ ...needs.roles, redis, stagingUrl });
      }
    } catch (error) {
      await roles?.close();
      await staging?.close();
      await redis.close();
      throw error;
    }
    return new Fixture(redis, staging, roles, needs.dir === undefined ? null : mkdtempSync(join(tmpdir(), needs.dir)));
  }

  get staging(): RecordingServer {
    if (!this.#staging) throw new Error('this test did not ask for a staging server (staging: true)');
    return this.#staging;
  }

  get dir(): string {
    if (this.#dir === null) throw new Error("this test did not ask for a directory (dir: 'prefix-')");
    return this.#dir;
  }

  get roles(): Stack {
    if (!this.#roles) throw new Error('this test did not ask for the ingress and workers (roles: {…})');
    return this.#roles;
  }

  keys(prefix?: string): Keys {
    return keysFor(prefix ?? this.roles.env.MIRRORPLANE_PREFIX ?? 'mirrorplane');
  }

  client(): Redis {
    const client = this.redis.client();
    this.#clients.push(client);
    return client;
  }

  defer(cleanup: () => unknown): void {
    this.#cleanups.push(cleanup);
  }

  /**
   * Closes everything, then fails when a Redis connection outlived the test. Every step runs
   * even when one fails; the first failure is thrown at the end.
   */
  async close(): Promise<void> {
    const failures: unknown[] = [];
    const step = async (fn: () => unknown) => {
      try {
        await fn();
      } catch (error) {
        failures.push(error);
      }
    };
    for (const cleanup of this.#cleanups.reverse()) await step(cleanup);
    await step(() => this.#roles?.close());
    for (const client of this.#clients) await step(() => client.quit().catch(() => client.disconnect()));
    await step(() => this.#assertNoConnectionsLeft());
    await step(() => this.#staging?.close());
    await step(() => this.redis.close());
    if (this.#dir !== null) await step(() => rmSync(this.#dir!, { recursive: true, force: true }));
    if (failures.length > 0) throw failures[0];
  }

  async #assertNoConnectionsLeft(): Promise<void> {
    if (!this.redis.running) return;
    const probe = this.redis.client();
    try {
      const self = await probe.client('ID');
      const others = async () => {
        const list = (await probe.client('LIST')) as string;
        return list.split('\n').filter((line) => line.trim() !== '' && !line.startsWith(`id=${self} `));
      };
      // A killed process's connections close as soon as Redis sees the socket end: give it a moment.
      const left = await waitFor('no Redis connection left', async () => ((await others()).length === 0 ? [] : null), 5000).catch(async () => others());
      if (left.length > 0) {
        const names = left.map((line) => /\bname=(\S*)/.exec(line)?.[1] || /\baddr=(\S+)/.exec(line)?.[1] || line);
        throw new Error(
          `the test left ${left.length} Redis connection(s) open: ${names.join(', ')} (close every Ingress, ReplayWorker, queue and client it creates)`,
        );
      }
    } finally {
      probe.disconnect();
    }
  }
}

/**
 * Runs `fn` with what it needs started; closes everything afterwards and fails when the test
 * left a Redis connection open. For one test: `await withStack({ staging: true }, async (s) => …)`.
 */
export async function withStack<T>(needs: StackNeeds, fn: (stack: TestStack) => Promise<T>): Promise<T> {
  const fixture = await Fixture.start(needs);
  let result: T;
  try {
    result = await fn(fixture);
  } catch (error) {
    await fixture.close().catch(() => undefined);
    throw error;
  }
  await fixture.close();
  return result;
}

/**
 * The same for a whole test file: starts in `before`, closes and checks in `after`. Returns a
 * handle whose members are usable inside tests (not at import time). `ready` runs once the
 * stack is up, for the file's own set-up (say `redis = stack.client()`): on Node 20 a file's
 * top-level `before` hooks start together rather than one after the other, so a second
 * `before` could run before the stack exists.
 */
export function useStack(needs: StackNeeds, ready?: (stack: TestStack) => unknown): TestStack {
  let fixture: Fixture | null = null;
  before(async () => {
    fixture = await Fixture.start(needs);
    await ready?.(fixture);
  });
  after(async () => {
    await fixture?.close();
  });
  const current = (): Fixture => {
    if (!fixture) throw new Error('useStack: the stack is started in before(); use it inside a test');
    return fixture;
  };
  return {
    get redis() {
      return current().redis;
    },
    get staging() {
      return current().staging;
    },
    get roles() {
      return current().roles;
    },
    get dir() {
      return current().dir;
    },
    keys: (prefix) => current().keys(prefix),
    client: () => current().client(),
    defer: (cleanup) => current().defer(cleanup),
  };
}

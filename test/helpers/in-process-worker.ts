import { randomBytes } from 'node:crypto';
import { Writable } from 'node:stream';
import type { Redis } from 'ioredis';
import { encodeEntryFields, keysFor, loadConfig, type Config } from '@mirrorplane/core';
import { createLogger } from '@mirrorplane/runtime';
import { ReplayWorker } from '@mirrorplane/worker';
import type { RedisServer } from './redis-server.js';

/** A log line the worker wrote, parsed. */
export type LogLine = Record<string, unknown> & { msg?: string; level?: number };

/**
 * A ReplayWorker run in the test's process (connections of its own to a real Redis, a real
 * staging server), with its log lines kept for assertions, on a random prefix.
 */
export class InProcessWorker {
  readonly worker: ReplayWorker;
  readonly config: Config;
  readonly logs: LogLine[];

  private constructor(worker: ReplayWorker, config: Config, logs: LogLine[]) {
    this.worker = worker;
    this.config = config;
    this.logs = logs;
  }

  static async start(
    redis: RedisServer,
    stagingUrl: string,
    env: Record<string, string> = {},
    prefix = `t${randomBytes(4).toString('hex')}`,
  ): Promise<InProcessWorker> {
    const config = loadConfig({
      role: 'worker',
      env: { REDIS_URL: redis.url, MIRRORPLANE_PREFIX: prefix, STAGING_URL: stagingUrl, ADMIN_PORT: '0', LOG_LEVEL: 'info', ...env },
    });
    const logs: LogLine[] = [];
    const sink = new Writable({
      write(chunk: Buffer, _enc, done) {
        for (const line of chunk.toString().split('\n')) if (line) logs.push(JSON.parse(line) as LogLine);
        done();
      },
    });
    const worker = new ReplayWorker(config, createLogger(config, 'worker', sink));
    await worker.start();
    return new InProcessWorker(worker, config, logs);
  }

  logged(msg: string): boolean {
    return this.logs.some((l) => typeof l.msg === 'string' && l.msg.includes(msg));
  }

  close(): Promise<void> {
    return this.worker.close();
  }
}

/** Appends `count` POST entries `/<tag>/<i>` with request id `<tag>-<i>` to a deployment's stream, as the ingress would. */
export async function appendEntries(client: Redis, prefix: string, tag: string, count: number, from = 0): Promise<void> {
  const keys = keysFor(prefix);
  for (let i = from; i < from + count; i += 100) {
    const pipeline = client.pipeline();
    for (let j = i; j < Math.min(from + count, i + 100); j++) {
      const body = Buffer.from(`body-${tag}-${j}`);
      pipeline.xadd(
        keys.stream,
        '*',
        ...encodeEntryFields({
          method: 'POST',
          target: `/${tag}/${j}`,
          rawHeaders: ['Host', 'app.test', 'X-Request-ID', `${tag}-${j}`, 'Content-Length', String(body.length)],
          body,
          receivedAt: Date.now(),
          requestId: `${tag}-${j}`,
          clientAddress: '127.0.0.1',
        }),
      );
    }
    const results = await pipeline.exec();
    const bad = results?.find(([error]) => error);
    if (bad) throw bad[0];
  }
}

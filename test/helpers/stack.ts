import { randomBytes } from 'node:crypto';
import { freePort } from './ports.js';
import { MirrorplaneProcess, runCli } from './processes.js';
import type { RedisServer } from './redis-server.js';

export interface StackOptions {
  redis: RedisServer;
  stagingUrl: string;
  workers?: number;
  /** Extra environment for every process (REPLAY_ATTEMPTS, CLAIM_IDLE_MS, …). */
  env?: Record<string, string>;
  /** Extra environment for the ingress only (ADMIN_PORT, say). */
  ingressEnv?: Record<string, string>;
}

/** An ingress and workers as real processes of the CLI, on a random prefix. */
export class Stack {
  readonly env: Record<string, string>;
  readonly ingressPort: number;
  ingress!: MirrorplaneProcess;
  readonly workers: MirrorplaneProcess[] = [];

  private constructor(env: Record<string, string>, ingressPort: number) {
    this.env = env;
    this.ingressPort = ingressPort;
  }

  static async start(options: StackOptions): Promise<Stack> {
    const env = {
      REDIS_URL: options.redis.url,
      MIRRORPLANE_PREFIX: `t${randomBytes(4).toString('hex')}`,
      STAGING_URL: options.stagingUrl,
      ADMIN_PORT: '0',
      REPLAY_BACKOFF_MS: '100',
      ...options.env,
    };
    const stack = new Stack(env, await freePort());
    await stack.startIngress(options.ingressEnv);
    for (let i = 0; i < (options.workers ?? 1); i++) await stack.addWorker();
    return stack;
  }

  async startIngress(extraEnv: Record<string, string> = {}): Promise<MirrorplaneProcess> {
    this.ingress = new MirrorplaneProcess(['ingress'], { ...this.env, INGRESS_PORT: String(this.ingressPort), INGRESS_HOST: '127.0.0.1', ...extraEnv });
    await this.ingress.waitForLog('ingress listening');
    return this.ingress;
  }

  async addWorker(extraEnv: Record<string, string> = {}): Promise<MirrorplaneProcess> {
    const worker = new MirrorplaneProcess(['worker'], { ...this.env, ...extraEnv });
    this.workers.push(worker);
    await worker.waitForLog('worker started');
    return worker;
  }

  async status(): Promise<{ backlog: number; pending: number; retrying: number; failed: number; replayed: number; oldestBacklogAgeMs: number | null }> {
    const result = await runCli(['status', '--json'], this.env);
    if (result.code !== 0) throw new Error(`status failed (${result.code}): ${result.stderr}`);
    return JSON.parse(result.stdout);
  }

  cli(args: string[]) {
    return runCli(args, this.env);
  }

  /** Stops every process (SIGKILL: a test's end is not a shutdown test). */
  async close(): Promise<void> {
    await Promise.all([this.ingress?.stop('SIGKILL'), ...this.workers.map((w) => w.stop('SIGKILL'))]);
  }
}

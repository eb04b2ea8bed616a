import { pathToFileURL } from 'node:url';
import type { Redis } from 'ioredis';
import {
  ConfigError,
  errorMessage,
  Redactor,
  HookSetupError,
  hookStorePrefix,
  InvalidValueError,
  redactHeaders,
  type Config,
  type HookContext,
  type HookLogger,
  type HookModule,
  type KeyValueStore,
  type OutgoingRequest,
  type Pipeline,
  type PipelineContext,
  type PipelineObserver,
} from '@mirrorplane/core';
import type { Logger } from './logger.js';
import { closeRedis, createRedis } from './redis.js';

/**
 * Loads the user's hooks module (`hooks:` in the config file) and turns it into a pipeline
 * stage. JavaScript modules are imported as they are; TypeScript modules through tsx, so a
 * team can keep its hooks as one typed `.ts` file without a build step.
 */

const DAY_MS = 86_400_000;

/**
 * The shared store: Redis strings under `{prefix}:kv:`, every key with a TTL. The
 * connection is opened on first use, so hooks that never use the store cost no connection.
 */
export class RedisKeyValueStore implements KeyValueStore {
  readonly #config: Config;
  readonly #logger: Logger;
  readonly #prefix: string;
  #redis: Redis | null = null;

  constructor(config: Config, logger: Logger) {
    this.#config = config;
    this.#logger = logger;
    // The deployment's hash tag keeps these keys on the shard of the stream in Redis Cluster.
    this.#prefix = hookStorePrefix(config.prefix);
  }

  #client(): Redis {
    this.#redis ??= createRedis(this.#config, 'commands', this.#logger);
    return this.#redis;
  }

  async get(key: string): Promise<string | null> {
    return this.#client().get(this.#prefix + key);
  }

  async set(key: string, value: string, options: { ttlMs?: number } = {}): Promise<void> {
    await this.#client().set(this.#prefix + key, value, 'PX', ttl(options.ttlMs));
  }

  async incr(key: string, options: { by?: number; ttlMs?: number } = {}): Promise<number> {
    const k = this.#prefix + key;
    // One round trip: the TTL is set only when this increment created the key.
    const [[error, value] = [null, 0]] =
      (await this.#client()
        .multi()
        .incrby(k, options.by ?? 1)
        .pexpire(k, ttl(options.ttlMs), 'NX')
        .exec()) ?? [];
    if (error) throw error;
    return Number(value);
  }

  async delete(key: string): Promise<void> {
    await this.#client().del(this.#prefix + key);
  }

  async close(): Promise<void> {
    if (this.#redis) await closeRedis(this.#redis);
  }
}

function ttl(ms: number | undefined): number {
  if (ms === undefined) return DAY_MS;
  if (!Number.isSafeInteger(ms) || ms < 1) throw new InvalidValueError(`ttlMs must be a positive integer, got ${String(ms)}`);
  return ms;
}

/** Keys whose string values are request-targets or URLs (their secret query values are hidden). */
const TARGET_KEYS = new Set(['target', 'url', 'path', 'href']);

/**
 * A copy of a log value with secrets replaced: flat `[name, value, …]` header arrays and
 * object keys named like a redacted header, at any depth up to a few levels; with a
 * `Redactor`, also the secret query values of strings under `target`, `url`, `path`, `href`.
 * Buffers are logged as their size. Only what hooks log goes through this, so its cost is theirs.
 */
export function redactLogValue(value: unknown, redaction: ReadonlySet<string> | Redactor, depth = 0): unknown {
  const names = redaction instanceof Redactor ? redaction.headerNames : redaction;
  if (Buffer.isBuffer(value)) return `[${value.length} bytes]`;
  if (depth > 5 || typeof value !== 'object' || value === null) return value;
  if (Array.isArray(value)) {
    if (value.length % 2 === 0 && value.every((v) => typeof v === 'string')) {
      for (let i = 0; i < value.length; i += 2) {
        if (names.has((value[i] as string).toLowerCase())) return redactHeaders(value as string[], names);
      }
      return value;
    }
    return value.map((v) => redactLogValue(v, redaction, depth + 1));
  }
  if (value instanceof Error || value instanceof Date) return value;
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(value)) {
    if (names.has(k.toLowerCase())) out[k] = '[redacted]';
    else if (typeof v === 'string' && redaction instanceof Redactor && TARGET_KEYS.has(k)) out[k] = redaction.target(v);
    else out[k] = redactLogValue(v, redaction, depth + 1);
  }
  return out;
}

type Level = 'debug' | 'info' | 'warn' | 'error';

/**
 * The logger hook code receives: a pino child whose every object argument is redacted by
 * the configured header names first, so a hook that logs what staging answered (or the
 * request it sent, under any key) cannot leak a cookie or a token.
 */
export function createHookLogger(
  logger: Logger,
  redacted: ReadonlySet<string> | Redactor,
): HookLogger & { child(bindings: Record<string, unknown>): HookLogger } {
  const wrap = (target: Logger) => {
    const method =
      (level: Level) =>
      (first: unknown, ...rest: unknown[]) => {
        if (!target.isLevelEnabled(level)) return;
        if (typeof first === 'object' && first !== null) target[level](redactLogValue(first, redacted) as object, ...(rest as [string?]));
        else target[level](first as string, ...(rest as []));
      };
    return { debug: method('debug'), info: method('info'), warn: method('warn'), error: method('error') } as HookLogger;
  };
  const base = logger.child({ component: 'hooks' });
  return Object.assign(wrap(base), { child: (bindings: Record<string, unknown>) => wrap(base.child(bindings)) });
}

/** Imports a module by path; `.ts`, `.mts` and `.cts` through tsx. */
async function importModule(path: string): Promise<Record<string, unknown>> {
  const url = pathToFileURL(path).href;
  if (/\.(c|m)?ts$/.test(path)) {
    const { tsImport } = await import('tsx/esm/api');
    return (await tsImport(url, import.meta.url)) as Record<string, unknown>;
  }
  return (await import(url)) as Record<string, unknown>;
}

/** The hooks a module exports: its default export when that is an object, else its named exports. */
function hooksOf(path: string, mod: Record<string, unknown>): HookModule {
  let candidate: Record<string, unknown> = mod;
  const fallback = mod.default;
  if (typeof fallback === 'object' && fallback !== null) {
    // tsx and CommonJS interop may wrap the default export once more.
    const inner = (fallback as Record<string, unknown>).default;
    candidate =
      typeof inner === 'object' && inner !== null && !('pre' in fallback) && !('post' in fallback)
        ? (inner as Record<string, unknown>)
        : (fallback as Record<string, unknown>);
  }
  const problems: string[] = [];
  for (const name of ['setup', 'pre', 'post', 'close'] as const) {
    const value = candidate[name];
    if (value !== undefined && typeof value !== 'function') problems.push(`${name} is a ${typeof value}, expected a function`);
  }
  if (typeof candidate.pre !== 'function' && typeof candidate.post !== 'function') {
    problems.push('exports neither pre nor post (export them by name, or export default definePipeline({ pre, post }))');
  }
  if (problems.length > 0) throw new ConfigError(problems.map((message) => ({ key: `hooks ${path}`, message })));
  return candidate as HookModule;
}

export interface LoadHooksOptions {
  config: Config;
  logger: Logger;
  observer?: PipelineObserver;
}

/**
 * Loads and sets up a hooks module; resolves with its pipeline stage. A module that cannot be
 * loaded, or has no hooks, throws `ConfigError`; a `setup` that throws, `HookSetupError`.
 */
export async function loadHooks(path: string, options: LoadHooksOptions): Promise<Pipeline> {
  let mod: Record<string, unknown>;
  try {
    mod = await importModule(path);
  } catch (error) {
    throw new ConfigError([{ key: `hooks ${path}`, message: `cannot load: ${errorMessage(error).split('\n')[0]}` }]);
  }
  const hooks = hooksOf(path, mod);
  const log = createHookLogger(options.logger, new Redactor(options.config.redaction));
  const store = new RedisKeyValueStore(options.config, options.logger);
  const observer = options.observer ?? {};
  if (hooks.setup) {
    try {
      await hooks.setup({ log, store, origins: Object.keys(options.config.origins) });
    } catch (error) {
      await store.close();
      throw new HookSetupError(path, error);
    }
  }
  // The per-entry logger is made only when a hook asks for it: most calls never log.
  const contextFor = (ctx: PipelineContext): HookContext => {
    let child: HookLogger | null = null;
    return Object.defineProperties({ ...ctx, store } as unknown as HookContext, {
      log: { enumerable: true, get: () => (child ??= log.child({ entryId: ctx.entryId, attempt: ctx.attempt, reqId: ctx.requestId })) },
    });
  };
  const pre = hooks.pre?.bind(hooks);
  const post = hooks.post?.bind(hooks);
  return {
    name: 'hooks',
    needsResponseBody: hooks.needsResponseBody !== false,
    ...(pre && {
      async pre(request: OutgoingRequest, ctx: PipelineContext) {
        const result = await pre(request, contextFor(ctx));
        if (result === null) observer.dropped?.('hooks', 'hook');
        return result;
      },
    }),
    ...(post &&
      ({
        async post(response, request, ctx) {
          await post(response, request, contextFor(ctx));
        },
      } satisfies Pick<Pipeline, 'post'>)),
    async close() {
      try {
        await hooks.close?.();
      } finally {
        await store.close();
      }
    },
  };
}

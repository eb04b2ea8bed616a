import { createConnection } from 'node:net';
import type { Redis } from 'ioredis';
import type { Logger } from 'pino';
import {
  DeploymentMismatchError,
  RedisDatabaseError,
  RedisTlsError,
  RedisUnavailableError,
  deploymentKey,
  errorMessage,
  maskRedisUrl,
  parseRedisUrl,
  type Config,
} from '@mirrorplane/core';
import { createRedis, type ConnectionPurpose } from './redis.js';
import { probeRedisTls, redisTlsOptions, redisTlsProblem, speaksTls } from './redis-tls.js';

/** The one way a Redis URL is shown (password masked): see `maskRedisUrl` in @mirrorplane/core. */
export { maskRedisUrl };

/** What went wrong with a connection, in the words an operator expects. */
export function describeRedisError(error: unknown): string {
  const e = error as { code?: string; message?: string; hostname?: string; lastNodeError?: unknown };
  // An Error, or `{ message, code }` for an error quoted inside another one's message.
  const message = error instanceof Error ? errorMessage(error) : (e.message ?? String(error));
  // ioredis's ClusterAllFailedError carries what the last seed node said.
  if (/Failed to refresh slots cache/.test(message)) return `no cluster node answered${e.lastNodeError ? ` (${describeRedisError(e.lastNodeError)})` : ''}`;
  switch (e.code) {
    case 'ECONNREFUSED':
      return 'connection refused';
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
      return `host not found${e.hostname ? ` (${e.hostname})` : ''}`;
    case 'ETIMEDOUT':
      return 'connection timed out';
    case 'ECONNRESET':
      return 'connection reset';
    case 'EHOSTUNREACH':
      return 'host unreachable';
  }
  const sentinelNoMaster = /connected to sentinel (\S+) successfully, but got an invalid reply: null/.exec(message);
  if (sentinelNoMaster) return `sentinel ${sentinelNoMaster[1]} knows no master by that name`;
  if (/No such master with that name/i.test(message)) return 'no sentinel knows a master by that name';
  const lastError = /All sentinels are unreachable.*Last error: (.*)$/.exec(message);
  if (lastError)
    return `no sentinel answered (last error: ${describeRedisError({ message: lastError[1] ?? '', code: /ECONNREFUSED/.test(lastError[1] ?? '') ? 'ECONNREFUSED' : undefined })})`;
  if (/All sentinels are unreachable/.test(message)) return 'no sentinel answered';
  if (/ECONNREFUSED/.test(message)) return 'connection refused';
  if (/^Connection is closed\.?$/.test(message)) return 'connection closed';
  if (/WRONGPASS|NOAUTH|invalid password|invalid username-password/i.test(message)) return `authentication failed (${message.split('\n')[0]})`;
  const tls = redisTlsProblem(error);
  if (tls) return `TLS handshake failed (${tls.setting}): ${tls.message}`;
  if (/wrong version number|certificate|SSL|TLS/i.test(message)) return `TLS handshake failed: ${message}`;
  const reply = redisReplyCode(error);
  if (reply !== null) return `${REPLY_WORDS[reply] ?? 'Redis refused the command'} (${message.split('\n')[0]})`;
  return message;
}

/** What each Redis error reply means to an operator; the reply itself follows in brackets. */
const REPLY_WORDS: Record<string, string> = {
  NOPERM: 'permission denied: the Redis user may not run this command or touch these keys (ACL)',
  WRONGPASS: 'authentication failed',
  NOAUTH: 'authentication required: put the user and password in the URL',
  LOADING: 'Redis is still loading its data set into memory; try again when it is done',
  READONLY: 'this Redis is a read-only replica; point the URL at the primary',
  OOM: 'Redis is out of memory (maxmemory reached) and refuses writes',
  MISCONF: 'Redis cannot save to disk and refuses writes (MISCONF)',
  MASTERDOWN: 'the replica has lost its primary',
  CLUSTERDOWN: 'the Redis Cluster is down',
  TRYAGAIN: 'the Redis Cluster is moving the keys; try again',
  BUSY: 'Redis is busy running a script',
  NOSCRIPT: 'Redis does not know the script',
  EXECABORT: 'Redis aborted the transaction',
  ERR: 'Redis refused the command',
};

/**
 * The error code of a Redis error reply (`NOPERM`, `WRONGPASS`, `LOADING`, `READONLY`,
 * `OOM`, …: the first word of the reply), or null when `error` is not a reply from Redis.
 * A reply means the connection works and Redis said no: the operator's fix is in Redis
 * (ACL, memory, replica) or in the URL, never in a retry loop.
 */
export function redisReplyCode(error: unknown): string | null {
  const e = error as { name?: string; message?: unknown; command?: unknown };
  if (typeof e?.message !== 'string') return null;
  // A transaction discarded because of an inner reply: the inner one is the cause.
  const word = /because of: ([A-Z][A-Z_]{1,20})\b/.exec(e.message)?.[1] ?? /^([A-Z][A-Z_]{1,20})\b/.exec(e.message)?.[1];
  if (!word) return null;
  return e.name === 'ReplyError' || word in REPLY_WORDS ? word : null;
}

export interface OpenRedisOptions {
  /** Give up after this many milliseconds (default: the config's `redisConnectTimeoutMs`). */
  deadlineMs?: number;
}

/**
 * Opens a connection and waits until it is ready, or fails within the deadline with a
 * `RedisUnavailableError` naming the URL (password masked) and the cause: a refused
 * connection, an unknown Sentinel master, a TLS or authentication failure, silence.
 * Then checks that the database the URL names exists: ioredis reports a failed `SELECT`
 * as an error event and carries on in database 0, which would read and write another
 * deployment's keys, so a missing database throws `RedisDatabaseError` instead.
 */
export async function openRedis(
  config: Pick<Config, 'redisUrl' | 'appendTimeoutMs' | 'redisConnectTimeoutMs'> & Partial<Pick<Config, 'redisTls'>>,
  purpose: ConnectionPurpose,
  logger: Logger,
  options: OpenRedisOptions = {},
): Promise<Redis> {
  const deadlineMs = options.deadlineMs ?? config.redisConnectTimeoutMs;
  const url = maskRedisUrl(config.redisUrl);
  const target = parseRedisUrl(config.redisUrl);
  const redis = createRedis(config, purpose, logger);
  let lastError: unknown = null;
  let dbError: unknown = null;
  /** A failed handshake no retry can fix (untrusted, expired, wrong name, client certificate refused): ends the wait at once. */
  let failTls: (() => void) | null = null;
  /** A plain URL whose connection was reset: once, ask whether the port speaks TLS (then no retry helps). */
  let tlsProbe: Promise<void> | null = null;
  let failPlain: ((message: string) => void) | null = null;
  const onError = (error: unknown) => {
    if (/DB index is out of range|invalid DB index/i.test(errorMessage(error))) dbError = error;
    else lastError = error;
    if (target.tls && redisTlsProblem(error) !== null) failTls?.();
    if (
      !target.tls &&
      tlsProbe === null &&
      /ECONNRESET|EPIPE|Connection is closed/.test(`${(error as { code?: string } | null)?.code} ${errorMessage(error)}`)
    ) {
      const node = target.nodes[0]!;
      tlsProbe = speaksTls(node.host, node.port, Math.min(2000, deadlineMs)).then((tls) => {
        if (tls) failPlain?.(`${node.host}:${node.port} speaks TLS, not plain text (a Redis with TLS only: use rediss:// instead of redis:// in REDIS_URL)`);
      });
    }
  };
  redis.on('error', onError);
  redis.on('sentinelError', onError);
  let timer: NodeJS.Timeout | undefined;
  let probeTimer: NodeJS.Timeout | undefined;
  try {
    await new Promise<void>((resolve, reject) => {
      if (redis.status === 'ready') return resolve();
      const cleanup = () => {
        clearTimeout(timer);
        redis.off('ready', onReady);
        redis.off('end', onEnd);
      };
      const onReady = () => {
        cleanup();
        resolve();
      };
      const onEnd = () => {
        cleanup();
        reject(new RedisUnavailableError('the connection ended'));
      };
      timer = setTimeout(() => {
        cleanup();
        reject(new RedisUnavailableError('no answer before the deadline'));
      }, deadlineMs);
      redis.once('ready', onReady);
      redis.once('end', onEnd);
      failTls = () => {
        cleanup();
        reject(new RedisUnavailableError('TLS handshake failed'));
      };
      failPlain = (message) => {
        lastError = new RedisUnavailableError(message);
        cleanup();
        reject(new RedisUnavailableError('TLS port'));
      };
      if (target.tls) {
        // A plain Redis reads a TLS hello as a command that never ends and says nothing: the
        // handshake would hang until the deadline. Ask in plain text whether it speaks RESP.
        const node = target.nodes[0]!;
        probeTimer = setTimeout(
          () => {
            void answersPlainText(node.host, node.port, Math.max(500, deadlineMs - Math.min(1000, deadlineMs / 3))).then((plain) => {
              if (!plain) return;
              lastError = new RedisUnavailableError(
                `${node.host}:${node.port} answers in plain text, not TLS (a Redis without TLS: use redis:// instead of rediss://)`,
              );
              cleanup();
              reject(new RedisUnavailableError('plain text'));
            });
          },
          Math.min(1000, deadlineMs / 3),
        );
      }
    });
  } catch {
    redis.disconnect();
    if (dbError !== null) throw await databaseError(config, logger, deadlineMs, target.db, url);
    let tls = lastError === null ? null : redisTlsProblem(lastError);
    if (
      tls === null &&
      target.tls &&
      /ECONNRESET|EPIPE|Connection is closed/.test(`${(lastError as { code?: string } | null)?.code} ${errorMessage(lastError)}`)
    ) {
      const node = target.nodes[0]!;
      tls = await probeRedisTls(node.host, node.port, redisTlsOptions(config.redisTls), Math.min(2000, deadlineMs));
    }
    if (tls) throw new RedisTlsError(tls.setting, `cannot reach Redis at ${url}: TLS handshake failed (${tls.setting}): ${tls.message}`, { cause: lastError });
    if (
      !target.tls &&
      !(lastError instanceof RedisUnavailableError) &&
      lastError !== null &&
      /ECONNRESET|EPIPE|closed|refresh slots/i.test(`${(lastError as { code?: string }).code} ${describeRedisError(lastError)}`)
    ) {
      // The connection ended before any answer (a Cluster's slot refresh included): the port may speak TLS.
      const node = target.nodes[0]!;
      if (await speaksTls(node.host, node.port, Math.min(2000, deadlineMs)))
        lastError = new RedisUnavailableError(
          `${node.host}:${node.port} speaks TLS, not plain text (a Redis with TLS only: use rediss:// instead of redis:// in REDIS_URL)`,
        );
    }
    const cause = lastError === null ? `no answer within ${formatSeconds(deadlineMs)}` : describeRedisError(lastError);
    throw new RedisUnavailableError(`cannot reach Redis at ${url}: ${cause}`, { cause: lastError ?? undefined });
  } finally {
    clearTimeout(probeTimer);
    redis.off('error', onError);
    redis.off('sentinelError', onError);
  }
  if (target.db !== 0) {
    // Select again ourselves: the reply says for certain whether the database exists.
    const failure =
      dbError ??
      (await redis.select(target.db).then(
        () => null,
        (error: unknown) => error,
      ));
    if (failure !== null) {
      redis.disconnect();
      throw await databaseError(config, logger, deadlineMs, target.db, url);
    }
  }
  return redis;
}

/**
 * Whether host:port answers a plain-text `PING` with a RESP reply (`+PONG`, `-NOAUTH …`):
 * then it is a Redis without TLS. Resolves false on silence within `timeoutMs`, a TLS
 * server's alert, or any connection error; never rejects.
 */
function answersPlainText(host: string, port: number, timeoutMs: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = createConnection({ host, port });
    let reply = '';
    const done = (plain: boolean) => {
      clearTimeout(timer);
      socket.destroy();
      resolve(plain);
    };
    const timer = setTimeout(() => done(false), timeoutMs);
    socket.once('connect', () => socket.write('PING\r\n'));
    socket.on('data', (chunk: Buffer) => {
      reply += chunk.toString('latin1');
      if (reply.includes('\r\n')) done(/^[+-]/.test(reply));
    });
    socket.once('error', () => done(false));
    socket.once('close', () => done(false));
  });
}

async function databaseError(
  config: Pick<Config, 'redisUrl' | 'appendTimeoutMs'>,
  logger: Logger,
  deadlineMs: number,
  db: number,
  url: string,
): Promise<RedisDatabaseError> {
  const databases = await countDatabases(config, logger, deadlineMs);
  return new RedisDatabaseError(
    `REDIS_URL: database ${db} does not exist on ${url}${databases === null ? '' : ` (this Redis has databases 0 to ${databases - 1})`}; refusing to fall back to database 0`,
  );
}

async function countDatabases(config: Pick<Config, 'redisUrl' | 'appendTimeoutMs'>, logger: Logger, deadlineMs: number): Promise<number | null> {
  // A second connection without the database: CONFIG may be disabled, so this is best effort.
  const bare = createRedis({ ...config, redisUrl: config.redisUrl.replace(/\/\d+$/, '') }, 'cli', logger);
  bare.on('error', () => undefined);
  try {
    const reply = await Promise.race([
      bare.config('GET', 'databases') as Promise<string[]>,
      new Promise<null>((resolve) => setTimeout(() => resolve(null), Math.min(deadlineMs, 2000)).unref()),
    ]);
    const n = Number(reply?.[1]);
    return Number.isInteger(n) && n > 0 ? n : null;
  } catch {
    return null;
  } finally {
    bare.disconnect();
  }
}

function formatSeconds(ms: number): string {
  return ms % 1000 === 0 ? `${ms / 1000} s` : `${(ms / 1000).toFixed(1)} s`;
}

/** Settings stored once per deployment, by field name; compared by each process at start. */
export function deploymentSettings(config: Pick<Config, 'partitions' | 'partitionKey'>): Record<string, string> {
  return {
    partitions: String(config.partitions),
    partitionKey: config.partitionKey.kind === 'header' ? `header:${config.partitionKey.name}` : config.partitionKey.kind,
  };
}

/** Setting keys as an operator sets them, for the mismatch message. */
const SETTING_NAMES: Record<string, string> = { partitions: 'PARTITIONS', partitionKey: 'PARTITION_KEY' };

/** Whether `error` is Redis refusing a write because it is at `maxmemory` (noeviction): `OOM ...`. */
export function isOutOfMemory(error: unknown): boolean {
  const message = error instanceof Error ? error.message : String(error);
  return /^(OOM|EXECABORT)\b/.test(message) || /\bOOM command not allowed\b/.test(message);
}

/** What `checkDeployment` found. */
export interface DeploymentCheck {
  /** Whether a deployment is recorded at this prefix (false: nothing has run here yet). */
  exists: boolean;
  /** The stored settings (after claiming them, for `claim`). */
  stored: Record<string, string>;
}

/**
 * Checks this process's deployment-wide settings against those stored at
 * `{prefix}:deployment`. `claim` (ingress, worker) reads the record first and stores only the
 * missing fields (HSETNX per field, no MULTI), so the first process of a deployment decides and a
 * recorded deployment needs no write; `read` (operator commands) writes nothing. Throws
 * `DeploymentMismatchError` listing every setting that differs; a write refused by a full Redis
 * rejects with the Redis error (`OOM ...`, see `isOutOfMemory`).
 */
export async function checkDeployment(
  redis: Redis,
  config: Pick<Config, 'prefix' | 'partitions' | 'partitionKey' | 'redisUrl'>,
  mode: 'claim' | 'read',
  version: string,
): Promise<DeploymentCheck> {
  const key = deploymentKey(config.prefix);
  const mine = deploymentSettings(config);
  let stored = await redis.hgetall(key);
  if (mode === 'claim') {
    // Read first, write only what is missing: a running deployment's record needs no write, so a
    // role starting on a full Redis (maxmemory, noeviction: every write command is refused, even
    // an HSETNX on a present field) starts. One HSETNX per field, no MULTI (a refused command in
    // MULTI aborts the whole transaction); HSETNX keeps "the first process decides" per field.
    const wanted: Record<string, string> = { ...mine, createdAt: new Date().toISOString(), createdByVersion: version };
    const missing = Object.entries(wanted).filter(([field]) => stored[field] === undefined);
    if (missing.length > 0) {
      for (const [field, value] of missing) await redis.hsetnx(key, field, value);
      stored = await redis.hgetall(key);
    }
  }
  const exists = Object.keys(stored).length > 0;
  const differences = Object.entries(mine)
    .filter(([field, value]) => stored[field] !== undefined && stored[field] !== value)
    .map(([field, value]) => `${SETTING_NAMES[field] ?? field} is ${value} here but ${stored[field]} for the deployment`);
  if (differences.length > 0) {
    throw new DeploymentMismatchError(
      `prefix ${JSON.stringify(config.prefix)} at ${maskRedisUrl(config.redisUrl)}: ${differences.join('; ')} (stored in ${key}; every process of a deployment must agree)`,
    );
  }
  return { exists, stored };
}

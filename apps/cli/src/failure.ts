import { ConfigError, MirrorplaneError, errorMessage } from '@mirrorplane/core';
import { describeRedisError, maskRedisUrl, redisReplyCode } from '@mirrorplane/runtime';
import { EXIT_USAGE, UsageError, configuredRedisUrl } from './process.js';

/** Misconfigurations found at run time (a database that does not exist, a deployment that disagrees, an unusable TLS file, a TLS handshake with Redis no retry can fix): exit 2 like a bad setting. */
const CONFIG_CODES = new Set(['MP_ERR_REDIS_DB', 'MP_ERR_DEPLOYMENT_MISMATCH', 'MP_ERR_TLS_FILE', 'MP_ERR_REDIS_TLS']);

/** Connection failures Node reports by code after a connection was made (or while remaking it). */
const CONNECTION_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENOTFOUND', 'EAI_AGAIN', 'EPIPE']);

/** What the operator reads when a command or role fails, and the exit code. */
export interface Failure {
  /** One or more lines, without the `mirrorplane: ` lead and without a stack trace for known failures. */
  message: string;
  /** 2: bad usage or configuration; 1: failure at run time. */
  exitCode: number;
  /** Whether the failure is one we know (false: a bug; the caller may show the stack). */
  known: boolean;
}

/**
 * The one place a failure is put into words, for every command and role: usage and config
 * errors as they are; Mirrorplane errors with their MP_ERR_* code; errors from Redis after
 * the connection was made (NOPERM, WRONGPASS, LOADING, READONLY, OOM, a dropped connection)
 * as `Redis at <URL, password masked>: <what it means> (<the reply>)`, exit 1. The URL is
 * the one this process was configured with (`configure`), or `redisUrl` when given.
 */
export function describeFailure(error: unknown, redisUrl: string | undefined = configuredRedisUrl()): Failure {
  if (error instanceof ConfigError || error instanceof UsageError) return { message: error.message, exitCode: EXIT_USAGE, known: true };
  if (error instanceof MirrorplaneError)
    return { message: `${error.code}: ${error.message}`, exitCode: CONFIG_CODES.has(error.code) ? EXIT_USAGE : 1, known: true };
  const code = (error as { code?: unknown })?.code;
  const fromRedis =
    redisReplyCode(error) !== null ||
    (typeof code === 'string' && CONNECTION_CODES.has(code)) ||
    /^Connection is closed|max retries per request|Stream isn't writeable|enableOfflineQueue/i.test(errorMessage(error));
  if (fromRedis) {
    const where = redisUrl === undefined ? 'Redis' : `Redis at ${maskRedisUrl(redisUrl)}`;
    return { message: `MP_ERR_REDIS: ${where}: ${describeRedisError(error)}`, exitCode: 1, known: true };
  }
  return { message: error instanceof Error ? (error.stack ?? error.message) : String(error), exitCode: 1, known: false };
}

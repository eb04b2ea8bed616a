/**
 * Errors carry a stable `code` (`MP_ERR_*`); branch on the code, never on the message.
 * A subclass per failure kind; `retryable` says whether another attempt can succeed.
 */
export class MirrorplaneError extends Error {
  readonly code: string;
  readonly retryable: boolean;

  constructor(code: string, message: string, options?: { cause?: unknown; retryable?: boolean }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = new.target.name;
    this.code = code;
    this.retryable = options?.retryable ?? false;
  }
}

export interface ConfigIssue {
  /** The setting as the operator wrote it: `INGRESS_PORT`, `--port`, or a path in the config file. */
  key: string;
  message: string;
}

/** Thrown when configuration (env, flags or the config file) is invalid; lists every issue at once. */
export class ConfigError extends MirrorplaneError {
  readonly issues: readonly ConfigIssue[];

  constructor(issues: readonly ConfigIssue[]) {
    super(
      'MP_ERR_CONFIG',
      `invalid configuration:\n${issues.map((i) => `  ${i.key}: ${i.message}`).join('\n')}`,
    );
    this.issues = issues;
  }
}

/** Thrown when a stream entry cannot be decoded; never retryable. */
export class EntryDecodeError extends MirrorplaneError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('MP_ERR_ENTRY_DECODE', message, { ...options, retryable: false });
  }
}

/** Thrown when staging answered with a status the retry policy retries (default 5xx, 429). */
export class StagingStatusError extends MirrorplaneError {
  readonly status: number;

  constructor(status: number) {
    super('MP_ERR_STAGING_STATUS', `staging answered ${status}`, { retryable: true });
    this.status = status;
  }
}

/** Thrown when staging could not be reached or did not answer in time (connect, reset, timeout). */
export class StagingTransportError extends MirrorplaneError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('MP_ERR_STAGING_TRANSPORT', message, { ...options, retryable: true });
  }
}

/** Thrown when a request cannot be sent to staging at all (e.g. a request-target that is not a path). */
export class UnreplayableRequestError extends MirrorplaneError {
  constructor(message: string) {
    super('MP_ERR_UNREPLAYABLE', message, { retryable: false });
  }
}

/**
 * Thrown by `composePipeline` around an error a stage threw, naming the stage
 * (`rules`, `hooks`, `production`, `recording`); `message` is the stage's own.
 */
export class PipelineStageError extends MirrorplaneError {
  readonly stage: string;

  constructor(stage: string, cause: unknown) {
    super('MP_ERR_STAGE', cause instanceof Error ? cause.message : String(cause), { cause, retryable: false });
    this.stage = stage;
  }
}

/**
 * Thrown when a pipeline stage throws; the entry goes to the failed set, not retried. The
 * code names who threw: `MP_ERR_HOOK` for the user's hooks module (or a stage of unknown
 * name), `MP_ERR_STAGE` for a built-in stage (`pre stage rules threw: …`,
 * `pre stage production threw: …`).
 */
export class HookError extends MirrorplaneError {
  constructor(phase: 'pre' | 'post', options: { cause: unknown }) {
    const reason = options.cause instanceof Error ? options.cause.message : String(options.cause);
    const stage = options.cause instanceof PipelineStageError ? options.cause.stage : 'hooks';
    const builtIn = stage !== 'hooks';
    super(builtIn ? 'MP_ERR_STAGE' : 'MP_ERR_HOOK', builtIn ? `${phase} stage ${stage} threw: ${reason}` : `${phase} hook threw: ${reason}`, { ...options, retryable: false });
  }
}

/**
 * Thrown by a pipeline stage when the entry cannot be replayed yet but will be soon (an ID it
 * uses is still being created in staging): the worker schedules it again after `delayMs`,
 * holding no slot and spending no attempt. Subclasses name the reason by their `code`.
 */
export class ReplayLaterError extends MirrorplaneError {
  readonly delayMs: number;

  constructor(code: string, message: string, delayMs: number) {
    super(code, message, { retryable: true });
    this.delayMs = delayMs;
  }
}

/** Thrown when Redis rejected or did not answer a command the caller needs. */
export class RedisUnavailableError extends MirrorplaneError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('MP_ERR_REDIS_UNAVAILABLE', message, { ...options, retryable: true });
  }
}

/** Thrown when an operator command names something that does not exist (a failed job id, say). */
export class NotFoundError extends MirrorplaneError {
  constructor(message: string) {
    super('MP_ERR_NOT_FOUND', message);
  }
}

/** The message of any thrown value, for logs and the failed set. */
export function errorMessage(error: unknown): string {
  if (error instanceof Error) {
    const code = (error as { code?: unknown }).code;
    return typeof code === 'string' && !error.message.includes(code) ? `${code}: ${error.message}` : error.message;
  }
  return String(error);
}

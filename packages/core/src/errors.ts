/**
 * The error table: every error Mirrorplane throws, in one file. Each carries a stable `code`
 * (`MP_ERR_*`, listed in `ERROR_CODES`); branch on the code, never on the message. One
 * subclass per failure kind, each with a "Thrown when…" line; `retryable` says whether
 * another attempt can succeed. Nothing in the source throws a plain `Error`.
 */

/** Every code a `MirrorplaneError` can carry, with what it means. */
export const ERROR_CODES = {
  MP_ERR_CONFIG: 'configuration (env, flags or the config file) is invalid',
  MP_ERR_INVALID_VALUE: 'one setting value cannot be parsed (config wraps it into MP_ERR_CONFIG naming the key)',
  MP_ERR_USAGE: 'a command line is wrong (a flag value, a missing argument)',
  MP_ERR_DATA_KEY: 'MIRRORPLANE_DATA_KEY cannot be parsed',
  MP_ERR_TEMPLATE_SYNTAX: 'a `{{…}}` template in a rule is malformed',
  MP_ERR_JSON_PATH_SYNTAX: 'a JSON path in a rule is malformed',
  MP_ERR_REGEX_SYNTAX: 'a regular expression in a rule does not parse or cannot run in linear time',
  MP_ERR_ENTRY_DECODE: 'a stream entry cannot be decoded',
  MP_ERR_STAGING_STATUS: 'staging answered with a status the retry policy retries',
  MP_ERR_GRPC_STATUS: 'staging answered a gRPC call with a grpc-status the retry policy retries (GRPC_RETRY_STATUSES)',
  MP_ERR_STAGING_TRANSPORT: 'staging could not be reached or did not answer in time',
  MP_ERR_STAGING_RESPONSE: 'staging answered with broken HTTP/1.1 framing',
  MP_ERR_UNREPLAYABLE: 'a request cannot be sent to staging at all',
  MP_ERR_RULE: 'a rule failed at run time',
  MP_ERR_HOOK: 'a user hook threw',
  MP_ERR_STAGE: 'a built-in pipeline stage (rules, production, recording) threw',
  MP_ERR_HOOK_SETUP: "a hooks module's setup threw",
  MP_ERR_MAPPING_PENDING: 'an ID the request uses has no staging twin yet: replay later',
  MP_ERR_MAPPING_UNAVAILABLE: 'Redis did not answer the ID-mapping lookups: replay later',
  MP_ERR_REPLAY_FAILED: "a retry attempt failed in a retryable way; BullMQ schedules the next after the policy's delay",
  MP_ERR_SHUTDOWN_TIMEOUT: 'a shutdown step did not finish within SHUTDOWN_TIMEOUT_MS',
  MP_ERR_INTAKE: 'a production-response intake request is malformed',
  MP_ERR_REQUEST_REFUSED: 'the ingress refused a mirrored request (malformed or over a limit)',
  MP_ERR_REDIS_UNAVAILABLE: 'Redis rejected or did not answer a command',
  MP_ERR_REDIS_DB: 'the Redis URL names a database index this Redis does not have',
  MP_ERR_DEPLOYMENT_MISMATCH: "a process's deployment-wide settings differ from those stored in Redis",
  MP_ERR_NOT_FOUND: 'an operator command names something that does not exist',
  MP_ERR_RECORDING: 'a recording file cannot be read',
  MP_ERR_NGINX: 'nginx is missing, refuses its configuration or does not listen',
  MP_ERR_LOCAL_PROCESS: 'a local helper process (redis-server, a demo role) did not start',
  MP_ERR_PREREQUISITE: 'the demo or `start` needs a program that is not installed',
  MP_ERR_TLS_FILE: 'a TLS certificate, key or CA bundle a setting names cannot be read or used (the error names the setting and path, never the contents)',
  MP_ERR_REDIS_TLS:
    'the TLS handshake with Redis failed (unknown CA, expired certificate, wrong name, no client certificate); the error names the setting to fix',
  MP_ERR_INTERNAL: 'an invariant of Mirrorplane itself was broken (a bug)',
} as const;

/** The code of a `MirrorplaneError`. */
export type ErrorCode = keyof typeof ERROR_CODES;

export interface MirrorplaneErrorOptions {
  cause?: unknown;
  retryable?: boolean;
}

/** The base of every Mirrorplane error: a stable `code`, an optional `cause`, and `retryable`. */
export class MirrorplaneError extends Error {
  readonly code: ErrorCode;
  readonly retryable: boolean;

  constructor(code: ErrorCode, message: string, options?: MirrorplaneErrorOptions) {
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

  constructor(issues: readonly ConfigIssue[], options?: { cause?: unknown }) {
    super('MP_ERR_CONFIG', `invalid configuration:\n${issues.map((i) => `  ${i.key}: ${i.message}`).join('\n')}`, options);
    this.issues = issues;
  }
}

/** Thrown when the dashboard would bind beyond loopback without ADMIN_TOKEN; `message` is `KEY: why`. */
export class DashboardBindError extends ConfigError {
  constructor(message: string) {
    const colon = message.indexOf(': ');
    super([{ key: message.slice(0, colon), message: message.slice(colon + 2) }]);
  }
}

export interface RuleIssue {
  /** Path under `rules`: `[2, 'rewritePath', 'to']`. */
  path: (string | number)[];
  message: string;
}

/** Thrown when the `rules` of the config file do not compile; lists every problem by its path. */
export class RuleCompileError extends MirrorplaneError {
  readonly issues: readonly RuleIssue[];

  constructor(issues: readonly RuleIssue[]) {
    const lines = issues.map((i) => `  rules${i.path.map((p) => (typeof p === 'number' ? `[${p}]` : `.${p}`)).join('')}: ${i.message}`);
    super('MP_ERR_CONFIG', `invalid rules:\n${lines.join('\n')}`);
    this.issues = issues;
  }
}

/**
 * Thrown when one value (a Redis URL, a retention, a partition key, a time on the command
 * line) cannot be parsed. The message says what was expected; whoever knows the key (config,
 * a CLI flag) wraps it so the operator sees the key's name.
 */
export class InvalidValueError extends MirrorplaneError {
  constructor(message: string) {
    super('MP_ERR_INVALID_VALUE', message);
  }
}

/** Thrown when a command line is wrong (a flag's value, a missing argument); the CLI exits 2. */
export class UsageError extends MirrorplaneError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('MP_ERR_USAGE', message, options);
  }
}

/** Thrown when a port a role needs is taken or not allowed; names the setting, exit code 2, no stack trace. */
export class PortInUseError extends UsageError {}

/** Thrown when MIRRORPLANE_DATA_KEY cannot be parsed; the message names what is wrong, never the key. */
export class DataKeyError extends MirrorplaneError {
  constructor(message: string) {
    super('MP_ERR_DATA_KEY', message);
  }
}

/** Thrown by `compileTemplate` when a `{{…}}` template is malformed; the message names the variable. */
export class TemplateSyntaxError extends MirrorplaneError {
  constructor(message: string) {
    super('MP_ERR_TEMPLATE_SYNTAX', message);
  }
}

/** Thrown by `parseJsonPath` when a path is malformed; the message names the position. */
export class JsonPathSyntaxError extends MirrorplaneError {
  constructor(message: string) {
    super('MP_ERR_JSON_PATH_SYNTAX', message);
  }
}

/**
 * Thrown by `LinearRegExp` when a pattern does not parse, or uses a feature the linear-time
 * engine (RE2) cannot run (backreferences, lookaround); the message names it.
 */
export class LinearRegexSyntaxError extends MirrorplaneError {
  constructor(message: string) {
    super('MP_ERR_REGEX_SYNTAX', message);
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

/** Thrown when staging answered a gRPC call with a grpc-status GRPC_RETRY_STATUSES retries (default 8, 14). */
export class GrpcStatusError extends MirrorplaneError {
  readonly grpcStatus: number;

  constructor(grpcStatus: number, grpcMessage: string | null) {
    super('MP_ERR_GRPC_STATUS', `staging answered grpc-status ${grpcStatus}${grpcMessage ? ` (${grpcMessage.slice(0, 200)})` : ''}`, { retryable: true });
    this.grpcStatus = grpcStatus;
  }
}

/** Thrown when staging could not be reached or did not answer in time (connect, reset, timeout). */
export class StagingTransportError extends MirrorplaneError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('MP_ERR_STAGING_TRANSPORT', message, { ...options, retryable: true });
  }
}

/**
 * Thrown when staging's response is not valid HTTP/1.1 framing (a Content-Length that is not
 * digits, two different ones, a bad chunk line, …; RFC 9112 §6.3): retryable, like a transport
 * error, and the connection is dropped.
 */
export class StagingResponseError extends MirrorplaneError {
  constructor(message: string) {
    super('MP_ERR_STAGING_RESPONSE', message, { retryable: true });
  }
}

/** Thrown when a request cannot be sent to staging at all (e.g. a request-target that is not a path). */
export class UnreplayableRequestError extends MirrorplaneError {
  constructor(message: string) {
    super('MP_ERR_UNREPLAYABLE', message, { retryable: false });
  }
}

/**
 * Thrown by the worker's HTTP/1.1 client before anything is sent, when the request cannot be
 * written as HTTP/1.1 (a method or field name that is not a token, a control byte in a value).
 */
export class WireRequestError extends UnreplayableRequestError {}

/**
 * Thrown by the worker's HTTP/1.1 client when a kept-alive connection turned out closed before
 * any byte of the answer: the request is sent again on a fresh connection, never reported.
 */
export class StaleConnectionError extends StagingTransportError {}

/**
 * Thrown by the ingress's HTTP/1.1 parser when a request must be refused (`status`, the counted
 * `reason`, a `detail` for the log); the parser turns it into a `refused` event.
 */
export class RequestRefusedError extends MirrorplaneError {
  readonly status: number;
  readonly reason: string;

  constructor(status: number, reason: string, detail: string) {
    super('MP_ERR_REQUEST_REFUSED', detail);
    this.status = status;
    this.reason = reason;
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

/** Thrown by a rule at run time (a rewrite that leaves no path); the entry goes to the failed set. */
export class RuleError extends MirrorplaneError {
  constructor(rule: string, message: string) {
    super('MP_ERR_RULE', `rule ${JSON.stringify(rule)}: ${message}`, { retryable: false });
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
    super(builtIn ? 'MP_ERR_STAGE' : 'MP_ERR_HOOK', builtIn ? `${phase} stage ${stage} threw: ${reason}` : `${phase} hook threw: ${reason}`, {
      ...options,
      retryable: false,
    });
  }
}

/** Thrown when a hooks module's `setup` throws: the worker does not start half-configured. */
export class HookSetupError extends MirrorplaneError {
  constructor(path: string, cause: unknown) {
    super('MP_ERR_HOOK_SETUP', `hooks ${path}: setup threw: ${errorMessage(cause)}`, { cause });
  }
}

/**
 * Thrown by a pipeline stage when the entry cannot be replayed yet but will be soon (an ID it
 * uses is still being created in staging): the worker schedules it again after `delayMs`,
 * holding no slot and spending no attempt. Subclasses name the reason by their `code`.
 */
export class ReplayLaterError extends MirrorplaneError {
  readonly delayMs: number;

  constructor(code: ErrorCode, message: string, delayMs: number) {
    super(code, message, { retryable: true });
    this.delayMs = delayMs;
  }
}

/** Thrown by the ID-mapping stage when a request uses an ID whose staging twin is not known yet: replay later. */
export class MappingPendingError extends ReplayLaterError {
  constructor(delayMs: number, kind: string, productionId: string, why: 'pending' | 'create in flight' = 'pending') {
    super('MP_ERR_MAPPING_PENDING', `waiting for the staging ID of ${kind} ${productionId} (${why})`, delayMs);
  }
}

/**
 * Thrown by the ID-mapping stage when Redis did not answer its lookups: the entry is replayed
 * later (no attempt spent) rather than sent with IDs unmapped or failed for good.
 */
export class MappingUnavailableError extends ReplayLaterError {
  constructor(delayMs: number, cause: unknown) {
    super('MP_ERR_MAPPING_UNAVAILABLE', `ID mapping: Redis did not answer (${errorMessage(cause)}); replaying later`, delayMs);
  }
}

/**
 * Thrown by a retry job when the attempt failed in a retryable way and the retry policy allows
 * another try: thrown to BullMQ, whose backoff strategy (`policyBackoff` in the worker) reads
 * `delayMs`, the delay the policy chose. The message is the failure's, kept as the job's reason.
 */
export class ReplayFailedError extends MirrorplaneError {
  /** The delay before the next try, in ms. */
  readonly delayMs: number;

  constructor(message: string, delayMs: number, options?: { cause?: unknown }) {
    super('MP_ERR_REPLAY_FAILED', message, { ...options, retryable: true });
    this.delayMs = delayMs;
  }
}

/** Thrown when a shutdown step did not finish within SHUTDOWN_TIMEOUT_MS; the shutdown goes on with the next step. */
export class ShutdownTimeoutError extends MirrorplaneError {
  constructor(step: string) {
    super('MP_ERR_SHUTDOWN_TIMEOUT', `${step}: timed out`);
  }
}

/** Thrown when a production-response intake request lacks or malforms a field; `status` is the HTTP answer (4xx). */
export class IntakeError extends MirrorplaneError {
  readonly status: number;

  constructor(status: number, message: string) {
    super('MP_ERR_INTAKE', message);
    this.status = status;
  }
}

/** Thrown when Redis rejected or did not answer a command the caller needs. */
export class RedisUnavailableError extends MirrorplaneError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('MP_ERR_REDIS_UNAVAILABLE', message, { ...options, retryable: true });
  }
}

/**
 * Thrown when a TLS file a setting names (INGRESS_TLS_CERT, REDIS_TLS_CA, an origin's `ca`…)
 * cannot be read or does not make a usable certificate, key or CA bundle. `setting` is the
 * setting's name; the message names it and the path, never the file's contents.
 */
export class TlsFileError extends MirrorplaneError {
  readonly setting: string;

  constructor(setting: string, message: string, options?: { cause?: unknown }) {
    super('MP_ERR_TLS_FILE', `${setting}: ${message}`, options);
    this.setting = setting;
  }
}

/**
 * Thrown when the TLS handshake with Redis fails: the server's certificate is signed by a CA
 * we do not trust, expired, or names another host, or Redis wants a client certificate.
 * `setting` names what to fix (REDIS_TLS_CA, REDIS_TLS_SERVERNAME, REDIS_TLS_CERT…).
 */
export class RedisTlsError extends MirrorplaneError {
  readonly setting: string;

  constructor(setting: string, message: string, options?: { cause?: unknown }) {
    super('MP_ERR_REDIS_TLS', message, options);
    this.setting = setting;
  }
}

/** Thrown when an operator command names something that does not exist (a failed job id, say). */
export class NotFoundError extends MirrorplaneError {
  constructor(message: string) {
    super('MP_ERR_NOT_FOUND', message);
  }
}

/** Thrown when a recording file cannot be read or holds a line that is not a recording. */
export class RecordingFormatError extends MirrorplaneError {
  constructor(message: string) {
    super('MP_ERR_RECORDING', message);
  }
}

/** Thrown when nginx is not installed, refuses its configuration, or does not start listening. */
export class NginxError extends MirrorplaneError {
  constructor(message: string) {
    super('MP_ERR_NGINX', message);
  }
}

/** Thrown when a local helper process (redis-server, a demo role) exits early or is not ready in time. */
export class LocalProcessError extends MirrorplaneError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('MP_ERR_LOCAL_PROCESS', message, options);
  }
}

/** Thrown when the demo or `start` needs a program (nginx, redis-server) that is not installed. */
export class PrerequisiteError extends MirrorplaneError {
  constructor(message: string) {
    super('MP_ERR_PREREQUISITE', message);
  }
}

/** Thrown when an invariant of Mirrorplane itself does not hold: a bug, never bad input. */
export class InternalError extends MirrorplaneError {
  constructor(message: string) {
    super('MP_ERR_INTERNAL', message);
  }
}

/** The message of any thrown value, for logs and the failed set; a coded error's message starts with its code. */
export function errorMessage(error: unknown): string {
  if (error instanceof Error) {
    const code = (error as { code?: unknown }).code;
    return typeof code === 'string' && !error.message.includes(code) ? `${code}: ${error.message}` : error.message;
  }
  return String(error);
}

/** Thrown when the Redis URL names a database index this Redis does not have; never falls back to database 0. */
export class RedisDatabaseError extends MirrorplaneError {
  constructor(message: string) {
    super('MP_ERR_REDIS_DB', message);
  }
}

/**
 * Thrown when a process's deployment-wide settings (partitions, partition key, …) differ
 * from those stored in Redis by the first process of the deployment.
 */
export class DeploymentMismatchError extends MirrorplaneError {
  constructor(message: string) {
    super('MP_ERR_DEPLOYMENT_MISMATCH', message);
  }
}

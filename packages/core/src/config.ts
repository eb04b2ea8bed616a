import { dirname, resolve as resolvePath } from 'node:path';
import { z } from 'zod';
import { parse as parseYaml } from 'yaml';
import { ConfigError, MirrorplaneError, RuleCompileError, type ConfigIssue } from './errors.js';
import { HTTP_TOKEN } from './http-token.js';
import { RedactOptions, redactionSettings, type RedactionSettings } from './redaction.js';
import { parseDataKeys } from './entry-cipher.js';
import { ORIGIN_NAME, RuleOptions } from './rule-schema.js';
import { compileRules } from './rules.js';
import { parseStreamRetention, type StreamRetention } from './stream-retention.js';
import { maskUrlsIn, parseRedisUrl } from './redis-url.js';
import { parsePartitionKey, type PartitionKey } from './partitions.js';
import { parseRateLimit, RateLimitOptions, type RateLimit } from './rate-limit.js';
import { parseOrderBy, type OrderBy } from './order-by.js';
import {
  CompareOptions,
  IdMappingOptions,
  ProductionResponsesOptions,
  type CompareSettings,
  type IdMappingSettings,
  type ProductionResponsesSettings,
} from './id-mapping.js';

/**
 * Configuration: one table of settings, each with its environment variable, its flag and
 * its parser. Sources, weakest first: defaults, the config file, the environment, flags.
 * `loadConfig` is called once per process, in `main`; nothing else reads a setting from
 * `process.env`. The only other uses, none of them a Mirrorplane setting (test/unit/env-readers.test.ts
 * holds this list to the code): the CLI's entry points hand `process.env` to `loadConfig`
 * (`apps/cli/src/process.ts`, `commands/start.ts`, `commands/demo.ts`); `apps/cli/src/hook-imports.ts`
 * prepends to Node's own `NODE_PATH` so that hooks resolve `@mirrorplane/*`; and
 * `apps/sample-backend/src/nginx-mirror.ts` (tests and the demo) searches `PATH` for nginx.
 */

export type Role = 'ingress' | 'worker' | 'cli' | 'start';

const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;

function integer(min: number, max: number) {
  return z.union([z.number(), z.string().trim()]).transform((value, ctx) => {
    const n = typeof value === 'number' ? value : /^-?\d+$/.test(value) ? Number(value) : NaN;
    if (!Number.isSafeInteger(n) || n < min || n > max) {
      ctx.addIssue({ code: 'custom', message: `expected an integer from ${min} to ${max}, got ${JSON.stringify(value)}` });
      return z.NEVER;
    }
    return n;
  });
}

const port = integer(0, 65535);

function url(protocols: readonly string[]) {
  return z
    .string()
    .trim()
    .transform((value, ctx) => {
      let parsed: URL;
      try {
        parsed = new URL(value);
      } catch {
        ctx.addIssue({ code: 'custom', message: `expected a URL (${protocols.join('//, ')}//…), got ${JSON.stringify(value)}` });
        return z.NEVER;
      }
      if (!protocols.includes(parsed.protocol)) {
        ctx.addIssue({
          code: 'custom',
          message: `expected a ${protocols.join(' or ')} URL, got ${JSON.stringify(parsed.protocol)}`,
        });
        return z.NEVER;
      }
      return value;
    });
}

/** A shared secret: visible ASCII (it travels in a header), long enough not to be guessed. */
const secret = z.string().regex(/^[\x21-\x7e]{16,512}$/, 'expected 16-512 visible ASCII characters (openssl rand -hex 32)');

/**
 * A string setting read by one of core's value parsers: the parser's coded error (a bad value,
 * MP_ERR_INVALID_VALUE or MP_ERR_DATA_KEY) becomes an issue under the setting's key; anything
 * else is a bug and is thrown on.
 */
function parsedBy<T>(parse: (text: string) => T) {
  return z
    .string()
    .trim()
    .transform((value, ctx) => {
      try {
        return parse(value);
      } catch (error) {
        if (!(error instanceof MirrorplaneError) || (error.code !== 'MP_ERR_INVALID_VALUE' && error.code !== 'MP_ERR_DATA_KEY')) throw error;
        ctx.addIssue({ code: 'custom', message: error.message });
        return z.NEVER;
      }
    });
}

/** `id:base64key[,id:base64key…]`; the value stays a string, parsed again by EntryCipher. */
const dataKeys = parsedBy((value) => (parseDataKeys(value), value));

const BOOL_ERROR = 'expected true or false (also 1/0, yes/no, on/off)';
const bool = z.union([z.boolean(), z.stringbool({ error: BOOL_ERROR })], { error: BOOL_ERROR });

/** Statuses that make a replay retryable: `5xx,429` means every 5xx and 429. */
const statusList = z.union([z.string(), z.array(z.union([z.string(), z.number()]))]).transform((value, ctx) => {
  const items = (Array.isArray(value) ? value.map(String) : value.split(',')).map((s) => s.trim()).filter(Boolean);
  const out: string[] = [];
  for (const item of items) {
    if (!/^[1-5](xx|\d\d)$/i.test(item)) {
      ctx.addIssue({ code: 'custom', message: `expected statuses like 5xx,429, got ${JSON.stringify(item)}` });
      return z.NEVER;
    }
    out.push(item.toLowerCase());
  }
  return out;
});

/** gRPC status codes (0–16), comma-separated; empty: none retried. */
const grpcStatusList = z.union([z.string(), z.array(z.union([z.string(), z.number()]))]).transform((value, ctx) => {
  const items = (Array.isArray(value) ? value.map(String) : value.split(',')).map((s) => s.trim()).filter(Boolean);
  const out: number[] = [];
  for (const item of items) {
    if (!/^\d{1,2}$/.test(item) || Number(item) > 16) {
      ctx.addIssue({ code: 'custom', message: `expected gRPC status codes from 0 to 16 like 8,14, got ${JSON.stringify(item)}` });
      return z.NEVER;
    }
    out.push(Number(item));
  }
  return out;
});

/** The path of a file (a certificate, key or CA bundle); read by the process that uses it, which names the setting if it cannot. */
const filePath = z.string().trim().min(1, 'expected the path of a file');

/** Peer names of an allow-list: subject CNs or `spiffe://trust-domain/path` IDs, comma-separated. */
const peerNames = z.union([z.string(), z.array(z.string())]).transform((value, ctx) => {
  const items = (Array.isArray(value) ? value : value.split(',')).map((s) => s.trim()).filter(Boolean);
  for (const item of items) {
    if (/^spiffe:/i.test(item) && !/^spiffe:\/\/[a-z0-9._-]+(\/[^\s,]*)?$/i.test(item)) {
      ctx.addIssue({ code: 'custom', message: `expected a SPIFFE ID like spiffe://example.org/mirror, got ${JSON.stringify(item)}` });
      return z.NEVER;
    }
  }
  if (items.length === 0) {
    ctx.addIssue({ code: 'custom', message: 'expected subject CNs or spiffe:// IDs, comma-separated' });
    return z.NEVER;
  }
  return items;
});

interface Setting {
  env: string;
  flag?: string;
  schema: z.ZodType;
  default?: unknown;
  /** Roles that cannot run without it. */
  requiredBy?: readonly Role[];
  doc: string;
}

/** Every setting, by its key in the config file. The table is the documentation's source too. */
export const SETTINGS = {
  redisUrl: {
    env: 'REDIS_URL',
    flag: '--redis-url',
    schema: parsedBy((value) => (parseRedisUrl(value), value)),
    default: 'redis://127.0.0.1:6379',
    doc: 'Redis to use: redis:// or rediss:// (user and password in the URL), redis+cluster://host:port[,host:port…] for a Redis Cluster, redis+sentinel://host:26379[,…]/master for Sentinel',
  },
  prefix: {
    env: 'MIRRORPLANE_PREFIX',
    flag: '--prefix',
    schema: z.string().regex(/^[A-Za-z0-9_.:-]{1,64}$/, 'expected 1-64 characters of A-Z a-z 0-9 _ . : -'),
    default: 'mirrorplane',
    doc: 'prefix of every Redis key, so deployments can share a Redis',
  },
  ingressHost: { env: 'INGRESS_HOST', flag: '--host', schema: z.string().min(1), default: '0.0.0.0', doc: 'address the traffic port binds' },
  ingressPort: { env: 'INGRESS_PORT', flag: '--port', schema: port, default: 8080, doc: 'traffic port of the ingress' },
  ingressProcesses: {
    env: 'INGRESS_PROCESSES',
    flag: '--processes',
    schema: integer(1, 256),
    default: 1,
    doc: "ingress processes sharing the traffic port (node:cluster); process i serves its admin port at ADMIN_PORT + i, ADMIN_PORT then defaulting to 9100 (clear of the worker's 9091 and the dashboard's 9092)",
  },
  adminHost: {
    env: 'ADMIN_HOST',
    flag: '--admin-host',
    schema: z.string().min(1),
    default: '127.0.0.1',
    doc: 'address the admin port binds (loopback unless told otherwise)',
  },
  adminPort: {
    env: 'ADMIN_PORT',
    flag: '--admin-port',
    schema: port,
    doc: 'admin port (health, readiness, metrics); ingress 9090, worker 9091; 0 turns it off',
  },
  stagingUrl: {
    env: 'STAGING_URL',
    flag: '--staging',
    schema: url(['http:', 'https:']),
    requiredBy: ['worker', 'start'],
    doc: 'staging origin every replay goes to (and nowhere else)',
  },
  stagingRateLimit: {
    env: 'STAGING_RATE_LIMIT',
    flag: '--rate-limit',
    schema: parsedBy(parseRateLimit),
    default: 'off',
    doc: 'cap on the requests the default staging origin receives from the whole deployment: <per second>[,<burst>] (200 or 200,50; burst defaults to one second), or off; `mirrorplane rate-limit set` changes it live',
  },
  orderBy: {
    env: 'ORDER_BY',
    flag: '--order-by',
    schema: parsedBy(parseOrderBy),
    default: 'off',
    doc: 'per-key ordering: requests with the same header:<name>, cookie:<name> or path:<regex group> reach staging in acceptance order, each after the previous answer; off: no ordering',
  },
  orderMaxWaitMs: {
    env: 'ORDER_MAX_WAIT_MS',
    schema: integer(0, 86_400_000),
    default: 30000,
    doc: 'with ORDER_BY: how long a request that does not finish (retrying, or its worker died) holds back the later ones of its key before they overtake it (counted)',
  },
  workerConcurrency: { env: 'WORKER_CONCURRENCY', flag: '--concurrency', schema: integer(1, 10000), default: 64, doc: 'replays in flight per worker process' },
  replayAttempts: {
    env: 'REPLAY_ATTEMPTS',
    flag: '--attempts',
    schema: integer(0, 100_000),
    default: 0,
    doc: 'tries in all before an entry goes to the failed set; 0: no cap, RETRY_WINDOW_MS alone decides',
  },
  replayBackoffMs: {
    env: 'REPLAY_BACKOFF_MS',
    schema: integer(1, 86_400_000),
    default: 1000,
    doc: 'retry policy: cap of the first delay between tries; each later cap doubles, the delay is random in [cap/2, cap]',
  },
  retryMaxDelayMs: {
    env: 'RETRY_MAX_DELAY_MS',
    schema: integer(1, 86_400_000),
    default: 30000,
    doc: 'retry policy: no delay between two tries is longer than this',
  },
  retryWindowMs: {
    env: 'RETRY_WINDOW_MS',
    schema: integer(0, 30 * 86_400_000),
    default: 600000,
    doc: 'retry policy: no try starts later than this after the first try; then the entry goes to the failed set (exhausted)',
  },
  heartbeatMs: {
    env: 'HEARTBEAT_MS',
    schema: integer(100, 3_600_000),
    default: 5000,
    doc: 'how often each worker writes its heartbeat; it expires after 3 periods, and a consumer without heartbeat and with nothing pending is removed from the group',
  },
  retryStallCheckMs: {
    env: 'RETRY_STALL_CHECK_MS',
    schema: integer(1000, 600_000),
    default: 30000,
    doc: 'how often workers look for retry jobs whose worker died and run them again; a retry job is locked for the longer of this and 2 × REPLAY_TIMEOUT_MS',
  },
  replayTimeoutMs: {
    env: 'REPLAY_TIMEOUT_MS',
    schema: integer(1, 3_600_000),
    default: 10000,
    doc: 'time staging has to answer (headers and body) before the try counts as failed',
  },
  retryStatuses: {
    env: 'RETRY_STATUSES',
    schema: statusList,
    default: '5xx,429',
    doc: 'staging statuses that are retried; any other answer completes the replay',
  },
  preserveHost: { env: 'PRESERVE_HOST', schema: bool, default: false, doc: 'send the mirrored Host (without the -shadow suffix) instead of the staging host' },
  maxBodyBytes: {
    env: 'MAX_BODY_BYTES',
    // At most 512 MiB: the largest value Redis takes (its default proto-max-bulk-len).
    schema: integer(0, 512 * 1024 * 1024),
    default: 10 * 1024 * 1024,
    doc: "largest request body the ingress accepts (at most 512 MiB, Redis's largest value); larger gets 413",
  },
  maxHeaderBytes: {
    env: 'MAX_HEADER_BYTES',
    schema: integer(1024, 16 * 1024 * 1024),
    default: 128 * 1024,
    doc: 'largest request head (request line and fields) the ingress accepts, and separately largest trailer section; larger gets 431',
  },
  bodyTimeoutMs: { env: 'BODY_TIMEOUT_MS', schema: integer(100, 3_600_000), default: 30000, doc: 'time a client has to send a whole request to the ingress' },
  redisConnectTimeoutMs: {
    env: 'REDIS_CONNECT_TIMEOUT_MS',
    flag: '--redis-timeout',
    schema: integer(100, 600_000),
    default: 10000,
    doc: 'time to reach Redis (and, for operator commands, for each command to answer) before giving up with a message naming the URL and the cause',
  },
  appendTimeoutMs: {
    env: 'APPEND_TIMEOUT_MS',
    schema: integer(10, 60_000),
    default: 2000,
    doc: 'time Redis has to accept an append before the ingress answers 503 (the entry may still be stored if Redis resumes); a readiness probe unanswered this long makes the ingress not ready',
  },
  headersTimeoutMs: {
    env: 'HEADERS_TIMEOUT_MS',
    schema: integer(100, 3_600_000),
    default: 20000,
    doc: "time a client has from a request's first byte to the end of its head (then 408 headers_timeout); like node's headersTimeout",
  },
  maxConnections: {
    env: 'MAX_CONNECTIONS',
    schema: integer(0, 1_000_000),
    default: 1024,
    doc: "connections open at once on each ingress process's traffic port; more are closed on arrival (0: no cap). Partial heads in memory are at most MAX_CONNECTIONS × (MAX_HEADER_BYTES + 64 KiB)",
  },
  maxConcurrentStreams: {
    env: 'MAX_CONCURRENT_STREAMS',
    schema: integer(1, 65_535),
    default: 100,
    doc: 'HTTP/2 (h2c) streams open at once on one connection to the ingress (SETTINGS_MAX_CONCURRENT_STREAMS); more are refused with RST_STREAM REFUSED_STREAM',
  },
  grpcRetryStatuses: {
    env: 'GRPC_RETRY_STATUSES',
    schema: grpcStatusList,
    default: '8,14',
    doc: 'gRPC statuses (grpc-status of staging) that are retried, like RETRY_STATUSES; any other completes the replay (default RESOURCE_EXHAUSTED, UNAVAILABLE)',
  },
  claimIdleMs: {
    env: 'CLAIM_IDLE_MS',
    schema: integer(100, 86_400_000),
    default: 30000,
    doc: 'idle time after which another worker takes over an unfinished entry',
  },
  shutdownTimeoutMs: {
    env: 'SHUTDOWN_TIMEOUT_MS',
    schema: integer(0, 600_000),
    default: 10000,
    doc: 'time in-flight work has to finish on SIGTERM before it is handed back',
  },
  partitions: {
    env: 'PARTITIONS',
    schema: integer(1, 1024),
    default: 1,
    doc: 'streams the traffic is spread over, each with its own hash tag (its own shard in a Redis Cluster); every process of a deployment must agree',
  },
  partitionKey: {
    env: 'PARTITION_KEY',
    schema: parsedBy(parsePartitionKey),
    default: 'request-id',
    doc: "what picks a request's partition: request-id (x-request-id) or header:<name> (a session key keeps a session in order in one partition)",
  },
  streamRetention: {
    env: 'STREAM_RETENTION',
    schema: parsedBy(parseStreamRetention),
    default: 'off',
    doc: 'how long finished entries stay in the stream for `mirrorplane replay --from --to`: an age (1h), an entry count (500000) or both (1h,500000); off deletes them at once',
  },
  responseBodyLimit: {
    env: 'RESPONSE_BODY_LIMIT',
    schema: integer(0, 1024 * 1024 * 1024),
    default: 1024 * 1024,
    doc: 'bytes of staging responses kept for post handlers; the rest is read and discarded',
  },
  ingressToken: {
    env: 'INGRESS_TOKEN',
    schema: secret,
    doc: 'shared secret the mirror proxy sends in x-mirrorplane-token; requests without it get 401 (off when unset)',
  },
  maxBacklog: {
    env: 'MAX_BACKLOG',
    schema: integer(0, Number.MAX_SAFE_INTEGER),
    default: 0,
    doc: 'entries accepted and not yet finished (stream, pending, retry queue; not the failed set) the ingress holds at most: at the cap it sheds with 503 backlog_full (0: no cap)',
  },
  maxBacklogBytes: {
    env: 'MAX_BACKLOG_BYTES',
    schema: integer(0, Number.MAX_SAFE_INTEGER),
    default: 0,
    doc: 'Redis used_memory at which the ingress sheds with 503 backlog_full (0: no cap)',
  },
  ingressTlsCert: {
    env: 'INGRESS_TLS_CERT',
    schema: filePath,
    doc: 'PEM certificate chain of the traffic port: set with INGRESS_TLS_KEY, the port speaks TLS only; both files are re-read when they change (TLS_RELOAD_MS)',
  },
  ingressTlsKey: { env: 'INGRESS_TLS_KEY', schema: filePath, doc: 'PEM private key of INGRESS_TLS_CERT (its path is shown, never its contents)' },
  ingressTlsCa: {
    env: 'INGRESS_TLS_CA',
    schema: filePath,
    doc: 'PEM CA bundle: the traffic port then requires a client certificate signed by it (mutual TLS); needs INGRESS_TLS_CERT',
  },
  ingressTlsAllow: {
    env: 'INGRESS_TLS_ALLOW',
    schema: peerNames,
    doc: 'client certificates the traffic port takes, by subject CN or SPIFFE ID (spiffe://… URI SAN), comma-separated; others are refused at the handshake (off when unset; needs INGRESS_TLS_CA)',
  },
  adminTlsCert: {
    env: 'ADMIN_TLS_CERT',
    schema: filePath,
    doc: 'PEM certificate chain of the admin port and of `mirrorplane dashboard` (with ADMIN_TLS_KEY: HTTPS only, re-read when changed)',
  },
  adminTlsKey: { env: 'ADMIN_TLS_KEY', schema: filePath, doc: 'PEM private key of ADMIN_TLS_CERT' },
  adminTlsCa: { env: 'ADMIN_TLS_CA', schema: filePath, doc: 'PEM CA bundle: the admin port and dashboard then require a client certificate signed by it' },
  adminTlsAllow: {
    env: 'ADMIN_TLS_ALLOW',
    schema: peerNames,
    doc: 'client certificates the admin port and dashboard take, by subject CN or spiffe:// ID, comma-separated (needs ADMIN_TLS_CA)',
  },
  redisTlsCa: {
    env: 'REDIS_TLS_CA',
    schema: filePath,
    doc: "PEM CA bundle Redis's certificate must chain to (rediss:// only; default: the system's CAs); also for the sentinels of rediss+sentinel://",
  },
  redisTlsCert: { env: 'REDIS_TLS_CERT', schema: filePath, doc: 'PEM client certificate presented to Redis (tls-auth-clients yes); needs REDIS_TLS_KEY' },
  redisTlsKey: { env: 'REDIS_TLS_KEY', schema: filePath, doc: 'PEM private key of REDIS_TLS_CERT' },
  redisTlsServername: {
    env: 'REDIS_TLS_SERVERNAME',
    schema: z.string().trim().min(1),
    doc: "name Redis's certificate must carry when it is not the host in REDIS_URL (a Cluster's nodes are reached by address: give the name here)",
  },
  tlsReloadMs: {
    env: 'TLS_RELOAD_MS',
    schema: integer(100, 3_600_000),
    default: 5000,
    doc: 'how often the certificate, key and CA files of the TLS ports are checked for a change; a new pair that does not load is logged (MP_ERR_TLS_FILE) and the old one kept',
  },
  adminToken: { env: 'ADMIN_TOKEN', schema: secret, doc: 'bearer token the admin port requires; needed when ADMIN_HOST is not a loopback address' },
  dataKey: {
    env: 'MIRRORPLANE_DATA_KEY',
    schema: dataKeys,
    doc: 'AES-256-GCM keys for entry payloads at rest, id:base64key[,…]; the first encrypts, all decrypt (off when unset)',
  },
  logLevel: {
    env: 'LOG_LEVEL',
    flag: '--log-level',
    schema: z.enum(LOG_LEVELS, { error: `expected one of ${LOG_LEVELS.join(', ')}` }),
    default: 'info',
    doc: 'pino log level',
  },
} as const satisfies Record<string, Setting>;

export type SettingKey = keyof typeof SETTINGS;

/** The validated configuration every process receives, frozen. */
export interface Config {
  readonly role: Role;
  readonly redisUrl: string;
  readonly prefix: string;
  readonly ingressHost: string;
  readonly ingressPort: number;
  /** Ingress processes sharing the traffic port (1: no cluster). */
  readonly ingressProcesses: number;
  readonly adminHost: string;
  /** The admin port, or 0 when turned off. */
  readonly adminPort: number;
  readonly stagingUrl: string | null;
  readonly workerConcurrency: number;
  /** Per-key ordering (ORDER_BY), or null when off. */
  readonly orderBy: OrderBy | null;
  /** How long an unfinished request holds back the later ones of its key (ms). */
  readonly orderMaxWaitMs: number;
  /** STAGING_RATE_LIMIT as given: the default origin's cap, or null (off, or left to `rateLimit`). */
  readonly stagingRateLimit: RateLimit | null;
  /** Caps by origin name (the file's `rateLimit`, `default` from STAGING_RATE_LIMIT when set); an origin absent is uncapped. */
  readonly rateLimits: Readonly<Record<string, RateLimit>>;
  readonly replayAttempts: number;
  /** Retry policy: cap of the first delay (ms). */
  readonly replayBackoffMs: number;
  /** Retry policy: cap of every delay (ms). */
  readonly retryMaxDelayMs: number;
  /** Retry policy: no try starts later than this after the first (ms). */
  readonly retryWindowMs: number;
  /** Heartbeat period of a worker (ms); the heartbeat expires after three. */
  readonly heartbeatMs: number;
  /** How often workers look for retry jobs whose worker died (ms); also the floor of a retry job's lock. */
  readonly retryStallCheckMs: number;
  readonly replayTimeoutMs: number;
  readonly retryStatuses: readonly string[];
  readonly preserveHost: boolean;
  readonly maxBodyBytes: number;
  /** Bytes of a request head (and, separately, of a trailer section) the ingress accepts. */
  readonly maxHeaderBytes: number;
  readonly bodyTimeoutMs: number;
  readonly headersTimeoutMs: number;
  readonly maxConnections: number;
  /** HTTP/2 streams open at once on one ingress connection. */
  readonly maxConcurrentStreams: number;
  /** gRPC statuses of staging that are retried. */
  readonly grpcRetryStatuses: readonly number[];
  readonly appendTimeoutMs: number;
  /** Milliseconds to reach Redis at start (and for each operator command) before failing. */
  readonly redisConnectTimeoutMs: number;
  readonly claimIdleMs: number;
  readonly shutdownTimeoutMs: number;
  /** How long finished entries stay in the stream; null: deleted once finished. */
  readonly streamRetention: StreamRetention | null;
  /** Streams the traffic is spread over (1: no partitions). */
  readonly partitions: number;
  /** What picks a request's partition. */
  readonly partitionKey: PartitionKey;
  readonly responseBodyLimit: number;
  readonly logLevel: (typeof LOG_LEVELS)[number];
  /** Shared secret required in `x-mirrorplane-token`, or null when the ingress takes any request. */
  readonly ingressToken: string | null;
  /** Unfinished entries above which the ingress sheds (0: no cap). */
  readonly maxBacklog: number;
  /** Redis used_memory above which the ingress sheds (0: no cap). */
  readonly maxBacklogBytes: number;
  /** Bearer token of the admin port, or null. */
  readonly adminToken: string | null;
  /** Client TLS settings for rediss:// (REDIS_TLS_*), or null when none is set. */
  readonly redisTls: RedisTlsSettings | null;
  /** TLS of the traffic port (INGRESS_TLS_*), or null when it speaks clear text. */
  readonly ingressTls: ServerTlsSettings | null;
  /** TLS of the admin port and the dashboard (ADMIN_TLS_*), or null. */
  readonly adminTls: ServerTlsSettings | null;
  /** MIRRORPLANE_DATA_KEY as given (validated), or null when entries are stored in clear. */
  readonly dataKey: string | null;
  /** Path of the config file, when one was given. */
  readonly configFile: string | null;
  /** Staging origins by name; `default` is STAGING_URL. Replays go to these and nowhere else. */
  readonly origins: Readonly<Record<string, string>>;
  /** TLS settings of the origins that have any (`origins.<name>: { url, ca, … }`), by name. */
  readonly originTls: Readonly<Record<string, OriginTlsSettings>>;
  /** Declarative rules, validated (compiled by the worker's pipeline builder). */
  readonly rules: readonly RuleOptions[];
  /** Absolute path of the hooks module, or null. */
  readonly hooks: string | null;
  /** The recording post handler, or null when recording is off. */
  readonly recording: RecordingSettings | null;
  /** Lower-case names of headers whose values never appear in logs or recordings (`redaction.headers`). */
  readonly redactHeaders: readonly string[];
  /** What is hidden wherever a human or a file reads a request: the defaults, extended or trimmed by `redact:`. */
  readonly redaction: RedactionSettings;
  /** Production responses received on the ingress admin port (`POST /production-responses`). */
  readonly productionResponses: ProductionResponsesSettings;
  /** ID kinds mapped between production and staging, or null. */
  readonly idMapping: IdMappingSettings | null;
  /** Comparison of staging's answers with production's, or null when off. */
  readonly compare: CompareSettings | null;
  /** This process's index among the ingress processes of one host (0 unless forked by the ingress primary). */
  readonly ingressProcessIndex: number;
}

/** How the worker speaks TLS to one staging origin; paths absolute, each null when not set. */
export interface OriginTlsSettings {
  readonly ca: string | null;
  readonly cert: string | null;
  readonly key: string | null;
  readonly servername: string | null;
  /** No verification of staging's certificate: given explicitly, logged at start. */
  readonly insecure: boolean;
  /** Where it is set, for errors: `config.yaml: origins.<name>`. */
  readonly where: string;
}

/** How to speak TLS to Redis: files (paths) and the name to verify; each null when not set. */
export interface RedisTlsSettings {
  /** REDIS_TLS_CA: trust anchors instead of the system's. */
  readonly ca: string | null;
  /** REDIS_TLS_CERT and REDIS_TLS_KEY: a client certificate, or both null. */
  readonly cert: string | null;
  readonly key: string | null;
  /** REDIS_TLS_SERVERNAME: the name verified (and sent as SNI) instead of the URL's host. */
  readonly servername: string | null;
}

/**
 * A TLS listener's files (paths, read by the process) and who may connect. The setting names
 * travel along so that whoever reads the files can name the setting when one is unusable.
 */
export interface ServerTlsSettings {
  readonly cert: string;
  readonly key: string;
  /** CA bundle client certificates must chain to; null: no client certificate asked for. */
  readonly ca: string | null;
  /** Subject CNs and spiffe:// IDs allowed; empty: any certificate the CA signed. */
  readonly allow: readonly string[];
  /** How often the files are checked for a change (ms). */
  readonly reloadMs: number;
  /** The settings' names, for errors: `{ cert: 'INGRESS_TLS_CERT', … }`. */
  readonly names: { readonly cert: string; readonly key: string; readonly ca: string };
}

/**
 * Set by the ingress primary in each ingress process it forks (`INGRESS_PROCESSES` > 1), never
 * by an operator; read here so that nothing outside config reads the environment.
 */
export const INGRESS_INDEX_ENV = 'MIRRORPLANE_INGRESS_INDEX';

/** Where and how finished replays are recorded (one JSON line each). */
export interface RecordingSettings {
  /** Absolute directory the JSONL files are written to. */
  readonly dir: string;
  /** Bytes of each request and response body kept; the rest is cut and marked truncated. */
  readonly bodyLimit: number;
  /** A file is closed and a new one begun when it reaches this size… */
  readonly maxFileBytes: number;
  /** …or this age. */
  readonly maxFileAgeMs: number;
  /** Lines waiting for the disk beyond this many bytes are dropped and counted, never block a replay. */
  readonly maxQueuedBytes: number;
  /** Each line sealed with MIRRORPLANE_DATA_KEY (`mps1:<base64>`); readers need the key. */
  readonly encrypt: boolean;
}

const RECORDING_DEFAULTS = { bodyLimit: 64 * 1024, maxFileBytes: 100 * 1024 * 1024, maxFileAgeMs: 3_600_000, maxQueuedBytes: 64 * 1024 * 1024 } as const;

/**
 * An origin written out with its TLS settings (https:// only): `ca` (PEM bundle staging's
 * certificate must chain to, instead of the system's), `cert` and `key` (a client certificate),
 * `servername` (the name verified, when not the URL's host), `insecure: true` (no verification
 * at all: logged at every start, never the default). Paths are relative to the config file.
 */
const OriginOptions = z.strictObject({
  url: url(['http:', 'https:']),
  ca: z.string({ error: 'expected the path of a PEM CA bundle' }).min(1).optional(),
  cert: z.string({ error: 'expected the path of a PEM certificate' }).min(1).optional(),
  key: z.string({ error: 'expected the path of a PEM private key' }).min(1).optional(),
  servername: z.string({ error: 'expected a host name' }).min(1).optional(),
  insecure: z.literal(true, { error: 'expected true (or leave it out: verification is on by default)' }).optional(),
});
type OriginOptions = z.infer<typeof OriginOptions>;

/** An origin: its URL, or the object form with TLS settings; each form reports its own issues. */
const originEntry = z.unknown().transform((value, ctx) => {
  const result =
    typeof value === 'string' ? url(['http:', 'https:']).safeParse(value) : typeof value === 'object' && value !== null ? OriginOptions.safeParse(value) : null;
  if (result === null) {
    ctx.addIssue({ code: 'custom', message: 'expected a URL, or { url, ca, cert, key, servername, insecure }' });
    return z.NEVER;
  }
  if (!result.success) {
    for (const issue of result.error.issues)
      ctx.addIssue({ code: 'custom', message: issue.code === 'unrecognized_keys' ? `unknown key ${issue.keys.join(', ')}` : issue.message, path: issue.path });
    return z.NEVER;
  }
  return result.data as string | OriginOptions;
});

/** Keys only the config file has: structured settings no env var or flag can express. */
const FILE_ONLY = {
  origins: z.record(z.string().regex(ORIGIN_NAME, 'expected an origin name (1-64 characters of A-Z a-z 0-9 _ -)'), originEntry, {
    error: 'expected a map of origin name to URL',
  }),
  rateLimit: z.record(z.string().regex(ORIGIN_NAME, 'expected an origin name (1-64 characters of A-Z a-z 0-9 _ -)'), RateLimitOptions, {
    error: 'expected a map of origin name to { perSecond, burst }',
  }),
  // Each rule is validated on its own (see loadConfig), so one bad rule does not hide the others' problems.
  rules: z.array(z.unknown(), { error: 'expected a list of rules' }),
  hooks: z
    .string({ error: 'expected the path of a .js, .mjs or .ts module' })
    .min(1)
    .regex(/\.(c|m)?(j|t)s$/, 'expected the path of a .js, .mjs, .cjs, .ts, .mts or .cts module'),
  recording: z.strictObject({
    dir: z.string({ error: 'expected a directory' }).min(1),
    bodyLimit: integer(0, 1024 * 1024 * 1024).optional(),
    maxFileBytes: integer(4096, Number.MAX_SAFE_INTEGER).optional(),
    maxFileAgeMs: integer(1000, 366 * 86_400_000).optional(),
    maxQueuedBytes: integer(64 * 1024, 16 * 1024 * 1024 * 1024).optional(),
    encrypt: bool.optional(),
  }),
  redactHeaders: z.array(z.string().regex(HTTP_TOKEN, 'expected a header name')),
  redact: RedactOptions,
  productionResponses: ProductionResponsesOptions,
  idMapping: IdMappingOptions,
  compare: CompareOptions,
} as const;
type FileOnlyKey = keyof typeof FILE_ONLY;

/** The config file: the settings above by key and the file-only keys, all optional, unknown keys refused. */
const FileSettings = z.strictObject({
  ...(Object.fromEntries(Object.entries(SETTINGS).map(([key, s]) => [key, s.schema.optional()])) as unknown as Record<SettingKey, z.ZodOptional<z.ZodType>>),
  ...(Object.fromEntries(Object.entries(FILE_ONLY).map(([key, s]) => [key, s.optional()])) as unknown as Record<FileOnlyKey, z.ZodOptional<z.ZodType>>),
});

/** The first admin port of an ingress with several processes (process i at 9100 + i). */
export const INGRESS_CLUSTER_ADMIN_PORT = 9100;

/** The admin port each role uses when ADMIN_PORT is not set. */
export const DEFAULT_ADMIN_PORT: Readonly<Record<Role, number>> = { ingress: 9090, worker: 9091, cli: 0, start: 9090 };

export interface ConfigOptions {
  role: Role;
  /** Usually `process.env`. */
  env: Readonly<Record<string, string | undefined>>;
  /** Flag values by setting key, as the CLI parsed them (strings). */
  flags?: Partial<Record<SettingKey, string | number | boolean>>;
  /** The config file's path and text, when `MIRRORPLANE_CONFIG` or `--config` names one. */
  file?: { path: string; text: string };
}

function formatPath(path: readonly PropertyKey[]): string {
  let out = '';
  for (const p of path) out += typeof p === 'number' ? `[${p}]` : out ? `.${String(p)}` : String(p);
  return out;
}

/** The message of a zod issue as the operator should read it. */
function issueMessage(issue: z.core.$ZodIssue): string {
  if (issue.code === 'unrecognized_keys') return 'unknown key';
  if (issue.code === 'invalid_type' && issue.input === undefined) return 'required';
  // A record key that failed its own check: its message says why, the wrapper only that it failed.
  if (issue.code === 'invalid_key' && issue.issues[0]) return issue.issues[0].message;
  return issue.message;
}

/** Edit distance, for "did you mean". */
function distance(a: string, b: string): number {
  let row = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    const next = [i];
    for (let j = 1; j <= b.length; j++)
      next[j] = Math.min((row[j] as number) + 1, (next[j - 1] as number) + 1, (row[j - 1] as number) + (a[i - 1] === b[j - 1] ? 0 : 1));
    row = next;
  }
  return row[b.length] as number;
}

/** The known name closest to an unknown one, when it is close enough to be a typo. */
export function closestName(name: string, known: readonly string[]): string | null {
  let best: string | null = null;
  let bestDistance = Infinity;
  for (const k of known) {
    const d = distance(name.toLowerCase(), k.toLowerCase());
    if (d < bestDistance) [best, bestDistance] = [k, d];
  }
  return best !== null && bestDistance <= Math.max(2, Math.floor(name.length / 3)) ? best : null;
}

function zodIssues(error: z.ZodError, prefix: readonly PropertyKey[], key: (path: string) => string, known: readonly string[] = []): ConfigIssue[] {
  const out: ConfigIssue[] = [];
  for (const issue of error.issues) {
    const base = [...prefix, ...issue.path];
    if (issue.code === 'unrecognized_keys') {
      for (const k of issue.keys) {
        // Only top-level keys are known here; nested objects name their own keys in CONFIG.md.
        const guess = base.length === 0 ? closestName(k, known) : null;
        out.push({ key: key(formatPath([...base, k])), message: guess ? `unknown key (did you mean ${JSON.stringify(guess)}?)` : 'unknown key' });
      }
      continue;
    }
    out.push({ key: key(formatPath(base) || '(top level)'), message: issueMessage(issue) });
  }
  return out;
}

/** Validates each rule alone, then compiles the valid ones against the origins, so every problem is listed. */
function validateRules(
  items: readonly unknown[],
  origins: ReadonlySet<string>,
  key: (path: string) => string,
): { rules: RuleOptions[]; issues: ConfigIssue[] } {
  const issues: ConfigIssue[] = [];
  const rules: RuleOptions[] = [];
  const positions: number[] = [];
  const names = new Map<string, number>();
  items.forEach((item, i) => {
    const name = (item as { name?: unknown } | null)?.name;
    if (typeof name === 'string') {
      const first = names.get(name);
      if (first !== undefined) issues.push({ key: key(`rules[${i}].name`), message: `duplicate rule name ${JSON.stringify(name)} (also rules[${first}])` });
      else names.set(name, i);
    }
    const result = RuleOptions.safeParse(item, { reportInput: true });
    if (result.success) {
      rules.push(result.data);
      positions.push(i);
    } else {
      issues.push(...zodIssues(result.error, ['rules', i], key));
    }
  });
  try {
    // Compiled here only to report every problem at start-up; the worker compiles its own copy once.
    compileRules(rules, { origins });
  } catch (error) {
    if (!(error instanceof RuleCompileError)) throw error;
    for (const i of error.issues)
      issues.push({ key: key(formatPath(['rules', positions[i.path[0] as number] as number, ...i.path.slice(1)])), message: i.message });
  }
  return { rules, issues };
}

function parseFile(path: string, text: string): unknown {
  try {
    return /\.json$/i.test(path) ? JSON.parse(text) : parseYaml(text);
  } catch (error) {
    // yaml's message ends in "at line 5, column 1:" followed by the source excerpt: keep the
    // position, and quote the line itself rather than leave the sentence hanging.
    // The quoted line may hold a Redis URL with its password: shown masked.
    const first = maskUrlsIn(((error as Error).message.split('\n')[0] ?? '').replace(/:\s*$/, ''));
    const line = (error as { linePos?: { line: number }[] }).linePos?.[0]?.line;
    const raw = line === undefined ? undefined : text.split('\n')[line - 1];
    const source = raw === undefined ? undefined : maskUrlsIn(raw);
    throw new ConfigError([{ key: path, message: `cannot parse: ${first}${source === undefined ? '' : ` (the line reads ${JSON.stringify(source)})`}` }], {
      cause: error,
    });
  }
}

/**
 * Validates every source at once and returns the frozen configuration, or throws one
 * `ConfigError` that lists every problem with the name the operator used for it.
 */
export function loadConfig(options: ConfigOptions): Config {
  const issues: ConfigIssue[] = [];
  let fileValues: Record<string, unknown> = {};
  let fileOnly: Partial<Record<FileOnlyKey, unknown>> = {};
  let fileNamesStaging = false;
  let rawRules: unknown[] | undefined;
  let rawOriginNames: string[] = [];
  if (options.file) {
    const raw = parseFile(options.file.path, options.file.text) ?? {};
    // reportInput: a missing key is reported as `required`, not as a type mismatch with undefined.
    const result = FileSettings.safeParse(raw, { reportInput: true });
    const filePath = options.file.path;
    const top = typeof raw === 'object' && raw !== null ? (raw as { rules?: unknown; origins?: unknown }) : {};
    // Rules are checked even when other keys are wrong, so one run lists every problem.
    if (Array.isArray(top.rules)) rawRules = top.rules;
    if (typeof top.origins === 'object' && top.origins !== null) rawOriginNames = Object.keys(top.origins);
    if (!result.success) {
      issues.push(...zodIssues(result.error, [], (path) => `${filePath}: ${path}`, [...Object.keys(SETTINGS), ...Object.keys(FILE_ONLY)]));
      // The default origin may well be in the file; without this, its other errors would
      // also bring a misleading "STAGING_URL: required".
      const r = raw as { stagingUrl?: unknown; origins?: { default?: unknown } } | null;
      fileNamesStaging =
        typeof r === 'object' && r !== null && (r.stagingUrl !== undefined || (typeof r.origins === 'object' && r.origins?.default !== undefined));
    } else {
      const parsed = result.data as Record<string, unknown>;
      fileValues = Object.fromEntries(Object.entries(raw as Record<string, unknown>).filter(([k]) => !(k in FILE_ONLY)));
      fileOnly = Object.fromEntries(
        Object.keys(FILE_ONLY)
          .filter((k) => parsed[k] !== undefined)
          .map((k) => [k, parsed[k]]),
      );
    }
  }

  const values: Record<string, unknown> = {};
  for (const [key, setting] of Object.entries(SETTINGS) as [SettingKey, Setting][]) {
    const flagValue = options.flags?.[key];
    const envValue = options.env[setting.env];
    let source: string;
    let raw: unknown;
    if (flagValue !== undefined) {
      source = setting.flag ?? key;
      raw = flagValue;
    } else if (envValue !== undefined && envValue !== '') {
      source = setting.env;
      raw = envValue;
    } else if (fileValues[key] !== undefined) {
      continue; // already validated with the file
    } else {
      if (setting.default !== undefined) values[key] = setting.schema.parse(setting.default);
      continue;
    }
    const result = setting.schema.safeParse(raw);
    if (result.success) values[key] = result.data;
    else issues.push({ key: source, message: result.error.issues.map((i) => i.message).join('; ') });
  }
  if (options.file && issues.length === 0) {
    for (const [key, value] of Object.entries(fileValues)) {
      if (values[key] === undefined) values[key] = SETTINGS[key as SettingKey].schema.parse(value);
    }
  }
  const fileKey = (path: string) => `${options.file?.path ?? 'config file'}: ${path}`;
  // STAGING_URL is the origin named `default`: from the env or a flag it overrides the file's
  // `origins.default`; in the file, one of the two may be given, not both.
  const origins: Record<string, string> = {};
  const originTls: Record<string, OriginTlsSettings> = {};
  for (const [name, origin] of Object.entries((fileOnly.origins as Record<string, string | OriginOptions> | undefined) ?? {})) {
    if (typeof origin === 'string') {
      origins[name] = origin;
      continue;
    }
    origins[name] = origin.url;
    const tls = originTlsSettings(name, origin, options.file?.path ?? '.', fileKey, issues);
    if (tls !== null) originTls[name] = tls;
  }
  const stagingFromFile = options.flags?.stagingUrl === undefined && !options.env.STAGING_URL;
  if (values.stagingUrl !== undefined) {
    if (stagingFromFile && origins.default !== undefined && origins.default !== values.stagingUrl) {
      issues.push({ key: fileKey('origins.default'), message: 'conflicts with stagingUrl; give the default origin once' });
    }
    origins.default = values.stagingUrl as string;
  } else if (origins.default !== undefined) {
    values.stagingUrl = origins.default;
  }
  const rateLimits: Record<string, RateLimit> = { ...((fileOnly.rateLimit as Record<string, RateLimit> | undefined) ?? {}) };
  for (const name of Object.keys(rateLimits)) {
    if (name !== 'default' && origins[name] === undefined) {
      issues.push({
        key: fileKey(`rateLimit.${name}`),
        message: `unknown origin; configured: ${['default', ...Object.keys(origins).filter((o) => o !== 'default')].join(', ')}`,
      });
    }
  }
  // Same-key entries must share a stream, or nothing orders them: with partitions the partition key is the order key.
  const orderBy = values.orderBy as OrderBy | null | undefined;
  const partitionKey = values.partitionKey as PartitionKey | undefined;
  if (
    orderBy &&
    ((values.partitions as number | undefined) ?? 1) > 1 &&
    !(orderBy.kind === 'header' && partitionKey?.kind === 'header' && partitionKey.name === orderBy.name)
  ) {
    issues.push({
      key: 'ORDER_BY',
      message: `with PARTITIONS > 1, ORDER_BY must be a header and PARTITION_KEY the same header (PARTITION_KEY=header:${orderBy.kind === 'header' ? orderBy.name : '<name>'}), so that a key's requests share a partition`,
    });
  }
  if (values.stagingRateLimit) rateLimits.default = values.stagingRateLimit as RateLimit;
  let rules: RuleOptions[] = [];
  if (rawRules !== undefined) {
    // `default` is always a known name: STAGING_URL may come from the worker's env alone.
    const checked = validateRules(rawRules, new Set([...rawOriginNames, 'default']), fileKey);
    rules = checked.rules;
    issues.push(...checked.issues);
  }
  for (const [key, setting] of Object.entries(SETTINGS) as [SettingKey, Setting][]) {
    if (
      setting.requiredBy?.includes(options.role) &&
      values[key] === undefined &&
      !(key === 'stagingUrl' && fileNamesStaging) &&
      !issues.some((i) => i.key === setting.env || i.key === setting.flag)
    ) {
      issues.push({ key: setting.env, message: `required by the ${options.role} (or ${setting.flag ?? 'the config file'})` });
    }
  }
  // An admin port reachable from other hosts serves metrics (and more) only to who holds the token.
  const adminPort = (values.adminPort as number | undefined) ?? DEFAULT_ADMIN_PORT[options.role];
  if (adminPort !== 0 && options.role !== 'cli' && values.adminToken === undefined && typeof values.adminHost === 'string' && !isLoopback(values.adminHost)) {
    issues.push({ key: 'ADMIN_TOKEN', message: `required when the admin port binds ${JSON.stringify(values.adminHost)}, which is not a loopback address` });
  }
  if ((fileOnly.recording as RecordingFile | undefined)?.encrypt === true && values.dataKey === undefined) {
    issues.push({ key: fileKey('recording.encrypt'), message: 'needs MIRRORPLANE_DATA_KEY (the key the lines are sealed with)' });
  }
  const redisTls = redisTlsSettings(values, issues);
  const ingressTls = serverTlsSettings(values, 'ingress', 'INGRESS', issues);
  const adminTls = serverTlsSettings(values, 'admin', 'ADMIN', issues);
  const indexText = options.env[INGRESS_INDEX_ENV] ?? '0';
  const ingressProcessIndex = /^\d{1,3}$/.test(indexText) ? Number(indexText) : -1;
  if (ingressProcessIndex < 0)
    issues.push({ key: INGRESS_INDEX_ENV, message: `expected the index of a forked ingress process (0, 1, …), got ${JSON.stringify(indexText)}` });
  if (issues.length > 0) throw new ConfigError(issues);
  const redaction = redactionSettings(fileOnly.redact as RedactOptions | undefined, fileOnly.redactHeaders as string[] | undefined);

  return Object.freeze({
    role: options.role,
    ...(values as Omit<
      Config,
      | 'role'
      | 'adminPort'
      | 'stagingUrl'
      | 'configFile'
      | 'origins'
      | 'stagingRateLimit'
      | 'rateLimits'
      | 'orderBy'
      | 'rules'
      | 'hooks'
      | 'recording'
      | 'redactHeaders'
      | 'redaction'
      | 'productionResponses'
      | 'idMapping'
      | 'compare'
    >),
    adminPort:
      (values.adminPort as number | undefined) ??
      (options.role === 'ingress' && (values.ingressProcesses as number) > 1 ? INGRESS_CLUSTER_ADMIN_PORT : DEFAULT_ADMIN_PORT[options.role]),
    stagingUrl: (values.stagingUrl as string | undefined) ?? null,
    retryStatuses: Object.freeze([...(values.retryStatuses as string[])]),
    grpcRetryStatuses: Object.freeze([...(values.grpcRetryStatuses as number[])]),
    configFile: options.file?.path ?? null,
    origins: Object.freeze(origins),
    stagingRateLimit: (values.stagingRateLimit as RateLimit | null | undefined) ?? null,
    orderBy: orderBy ?? null,
    rateLimits: Object.freeze(rateLimits),
    originTls: Object.freeze(originTls),
    rules: Object.freeze(rules),
    hooks: fileOnly.hooks !== undefined && options.file ? resolvePath(dirname(options.file.path), fileOnly.hooks as string) : null,
    recording: fileOnly.recording !== undefined && options.file ? recordingSettings(fileOnly.recording as RecordingFile, options.file.path) : null,
    ingressToken: (values.ingressToken as string | undefined) ?? null,
    adminToken: (values.adminToken as string | undefined) ?? null,
    dataKey: (values.dataKey as string | undefined) ?? null,
    ingressTls,
    adminTls,
    redisTls,
    redactHeaders: redaction.headers,
    redaction,
    productionResponses: Object.freeze((fileOnly.productionResponses as ProductionResponsesSettings | undefined) ?? ProductionResponsesOptions.parse({})),
    idMapping: (fileOnly.idMapping as IdMappingSettings | undefined) ?? null,
    compare: (fileOnly.compare as CompareSettings | undefined) ?? null,
    ingressProcessIndex,
  });
}

/** An origin's TLS settings, or null when it gives none; issues for contradictions, keyed by their path. */
function originTlsSettings(
  name: string,
  origin: OriginOptions,
  configPath: string,
  fileKey: (path: string) => string,
  issues: ConfigIssue[],
): OriginTlsSettings | null {
  const given = origin.ca !== undefined || origin.cert !== undefined || origin.key !== undefined || origin.servername !== undefined || origin.insecure === true;
  if (!given) return null;
  const at = (key: string) => fileKey(`origins.${name}.${key}`);
  if (!origin.url.toLowerCase().startsWith('https:')) issues.push({ key: at('url'), message: 'TLS settings need an https:// URL' });
  if (origin.cert !== undefined && origin.key === undefined) issues.push({ key: at('key'), message: "required with cert (the certificate's private key)" });
  if (origin.key !== undefined && origin.cert === undefined) issues.push({ key: at('cert'), message: "required with key (the key's certificate)" });
  if (origin.insecure === true && (origin.ca !== undefined || origin.servername !== undefined))
    issues.push({ key: at('insecure'), message: 'contradicts ca/servername: insecure turns verification off, they configure it; keep one' });
  const file = (path: string | undefined) => (path === undefined ? null : resolvePath(dirname(configPath), path));
  return Object.freeze({
    ca: file(origin.ca),
    cert: file(origin.cert),
    key: file(origin.key),
    servername: origin.servername ?? null,
    insecure: origin.insecure === true,
    where: fileKey(`origins.${name}`),
  });
}

/**
 * REDIS_TLS_* together, or null when none is set. A half-given client pair, or any of them
 * with a REDIS_URL that does not use TLS, is an issue naming the setting.
 */
function redisTlsSettings(values: Record<string, unknown>, issues: ConfigIssue[]): RedisTlsSettings | null {
  const ca = (values.redisTlsCa as string | undefined) ?? null;
  const cert = (values.redisTlsCert as string | undefined) ?? null;
  const key = (values.redisTlsKey as string | undefined) ?? null;
  const servername = (values.redisTlsServername as string | undefined) ?? null;
  if (cert !== null && key === null) issues.push({ key: 'REDIS_TLS_KEY', message: "required with REDIS_TLS_CERT (the certificate's private key)" });
  if (key !== null && cert === null) issues.push({ key: 'REDIS_TLS_CERT', message: "required with REDIS_TLS_KEY (the key's certificate)" });
  if (ca === null && cert === null && key === null && servername === null) return null;
  const url = values.redisUrl as string | undefined;
  let tls = true;
  try {
    tls = url === undefined || parseRedisUrl(url).tls;
  } catch {
    // REDIS_URL itself is reported.
  }
  if (!tls) {
    const given = [
      ['REDIS_TLS_CA', ca],
      ['REDIS_TLS_CERT', cert],
      ['REDIS_TLS_KEY', key],
      ['REDIS_TLS_SERVERNAME', servername],
    ].filter(([, v]) => v !== null);
    for (const [name] of given)
      issues.push({ key: name as string, message: 'needs a TLS REDIS_URL (rediss://, rediss+cluster:// or rediss+sentinel://); it would be ignored' });
  }
  return Object.freeze({ ca, cert, key, servername });
}

/**
 * The TLS settings of one listener from its four settings, or null when neither certificate
 * nor key is set. A half-given pair, a CA without a certificate, or an allow-list without a CA
 * is an issue naming the setting that is missing.
 */
function serverTlsSettings(
  values: Record<string, unknown>,
  key: 'ingress' | 'admin',
  env: 'INGRESS' | 'ADMIN',
  issues: ConfigIssue[],
): ServerTlsSettings | null {
  const cert = values[`${key}TlsCert`] as string | undefined;
  const tlsKey = values[`${key}TlsKey`] as string | undefined;
  const ca = values[`${key}TlsCa`] as string | undefined;
  const allow = values[`${key}TlsAllow`] as string[] | undefined;
  if (cert !== undefined && tlsKey === undefined)
    issues.push({ key: `${env}_TLS_KEY`, message: `required with ${env}_TLS_CERT (the certificate's private key)` });
  if (tlsKey !== undefined && cert === undefined) issues.push({ key: `${env}_TLS_CERT`, message: `required with ${env}_TLS_KEY (the key's certificate)` });
  if (ca !== undefined && cert === undefined)
    issues.push({ key: `${env}_TLS_CERT`, message: `required with ${env}_TLS_CA (client certificates are asked for over TLS only)` });
  if (allow !== undefined && ca === undefined)
    issues.push({ key: `${env}_TLS_CA`, message: `required with ${env}_TLS_ALLOW (the CA the allowed client certificates chain to)` });
  if (cert === undefined || tlsKey === undefined) return null;
  return Object.freeze({
    cert,
    key: tlsKey,
    ca: ca ?? null,
    allow: Object.freeze([...(allow ?? [])]),
    reloadMs: values.tlsReloadMs as number,
    names: Object.freeze({ cert: `${env}_TLS_CERT`, key: `${env}_TLS_KEY`, ca: `${env}_TLS_CA` }),
  });
}

/** Whether an address only this host can reach (127.0.0.0/8, ::1, localhost). */
export function isLoopback(host: string): boolean {
  const h = host.replace(/^\[|\]$/g, '').toLowerCase();
  return h === 'localhost' || h === '::1' || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(h) || h === '::ffff:127.0.0.1';
}

type RecordingFile = { dir: string } & Partial<Omit<RecordingSettings, 'dir'>>;

function recordingSettings(file: RecordingFile, configPath: string): RecordingSettings {
  return Object.freeze({
    dir: resolvePath(dirname(configPath), file.dir),
    bodyLimit: file.bodyLimit ?? RECORDING_DEFAULTS.bodyLimit,
    maxFileBytes: file.maxFileBytes ?? RECORDING_DEFAULTS.maxFileBytes,
    maxFileAgeMs: file.maxFileAgeMs ?? RECORDING_DEFAULTS.maxFileAgeMs,
    maxQueuedBytes: file.maxQueuedBytes ?? RECORDING_DEFAULTS.maxQueuedBytes,
    encrypt: file.encrypt === true,
  });
}

/** Whether a staging status is retried under the configured policy. */
export function compileRetryPolicy(statuses: readonly string[]): (status: number) => boolean {
  const exact = new Set<number>();
  const classes = new Set<number>();
  for (const s of statuses) {
    if (s.endsWith('xx')) classes.add(Number(s[0]));
    else exact.add(Number(s));
  }
  return (status) => exact.has(status) || classes.has(Math.floor(status / 100));
}

/**
 * Every Redis key Mirrorplane uses, named in this one file. A deployment's keys share the hash
 * tag `{prefix}` so that in Redis Cluster the stream, the counters, the retry queue and the
 * shared stores of partition 0 live on one shard; partition i > 0 has its own tag
 * `{prefix~i}` for its stream and counter (see partitions.ts). `KEY_FAMILIES` lists them
 * all for docs/ARCHITECTURE.md, which a unit test checks against this file.
 */

import type { EntryCipher } from './entry-cipher.js';

/** The keys of one partition (partition 0 is the deployment's own). */
export interface Keys {
  /** The stream of accepted entries. */
  readonly stream: string;
  /** The consumer group every worker reads through. */
  readonly group: string;
  /** Completed replays since the deployment began. */
  readonly replayed: string;
  /** The BullMQ prefix; the retry queue's keys are `${bullPrefix}:${retryQueue}:*`. */
  readonly bullPrefix: string;
  /** The BullMQ queue carrying retries and the failed set. */
  readonly retryQueue: string;
}

/** The hash tag of a partition: `{prefix}` for partition 0, `{prefix~i}` for partition i. */
export function partitionTag(prefix: string, partition = 0): string {
  return partition === 0 ? `{${prefix}}` : `{${prefix}~${partition}}`;
}

/** The keys of partition 0, which is the whole layout of a deployment without partitions. */
export function keysFor(prefix: string): Keys {
  const tag = partitionTag(prefix);
  return Object.freeze({
    stream: `${tag}:stream`,
    group: 'workers',
    replayed: `${tag}:replayed`,
    bullPrefix: tag,
    retryQueue: 'retry',
  });
}

/**
 * The key BullMQ keeps one state of the retry queue under (`${bullPrefix}:${retryQueue}:<state>`,
 * `state` as BullMQ names it: `wait`, `paused`, `active` are lists; `delayed`, `prioritized`,
 * `waiting-children` sorted sets), for the readers that count jobs without a BullMQ connection.
 */
export function retryStateKey(keys: Keys, state: string): string {
  return `${keys.bullPrefix}:${keys.retryQueue}:${state}`;
}

/**
 * The keys of every partition; `[keysFor(prefix)]` when there is one. The retry queue, the
 * failed set and every deployment-wide key stay with partition 0.
 */
export function partitionKeys(prefix: string, partitions: number): Keys[] {
  const base = keysFor(prefix);
  const out: Keys[] = [base];
  for (let i = 1; i < partitions; i++) {
    const tag = partitionTag(prefix, i);
    out.push(Object.freeze({ ...base, stream: `${tag}:stream`, replayed: `${tag}:replayed` }));
  }
  return out;
}

/**
 * Production responses, ID mappings and comparisons, shared by every ingress and worker of a
 * deployment (under partition 0's tag). With MIRRORPLANE_DATA_KEY (`cipher`), every payload
 * is sealed with the entry cipher, bound to its key name, and the production ID in an `idmap`
 * key name is replaced by a keyed digest (`#<digest>`).
 */
export interface ProductionKeys {
  /** Seals and opens the payloads, or null when they are stored in clear. */
  readonly cipher: EntryCipher | null;
  /** Hash: status `s`, method `m`, and headers `h`, body `b`, path `u` (or sealed together as `e`); TTL. */
  response(requestId: string): string;
  /** `<learner index>\n<staging id>` once staging answered a learning request. */
  learned(requestId: string): string;
  /** `=<staging id>` (mapped) or `?<request id>` (created in production, staging's answer not known yet). */
  idmap(kind: string, productionId: string): string;
  /** When an entry first waited for a mapping. */
  wait(entryId: string): string;
  /** Set once an entry's unmapped IDs were counted (once per request, not per attempt); TTL. */
  counted(entryId: string): string;
  /**
   * Sorted set of creates a worker started whose production answer has not reached the intake
   * yet: member the request id, score the entry's receive time.
   */
  inflight(kind: string): string;
  /** Hash `<kind>\t<outcome>` → count of requests sent on with an ID unmapped (`unmapped`, `unknown`). */
  readonly idOutcomes: string;
  /** Staging's answer kept until production's arrives, for the comparison. */
  stagingAnswer(requestId: string): string;
  /** List of the latest differing comparisons (JSON), trimmed to `keepDiffs`. */
  readonly diffs: string;
  /** Hash `<route>\t(match|mismatch)` → count. */
  readonly diffRoutes: string;
  /** Set of the routes counted by name (at most `compare.maxRoutes`, the overflow bucket included). */
  readonly diffRouteNames: string;
  /** Hash `<route>\t<json path>` → count of differences. */
  readonly diffPaths: string;
}

export function productionKeys(prefix: string, cipher: EntryCipher | null = null): ProductionKeys {
  const tag = partitionTag(prefix);
  return Object.freeze({
    cipher,
    response: (id: string) => `${tag}:prod:${id}`,
    learned: (id: string) => `${tag}:learned:${id}`,
    idmap: cipher
      ? (kind: string, id: string) => `${tag}:idmap:${kind}:#${cipher.digestName(`${kind}\n${id}`)}`
      : (kind: string, id: string) => `${tag}:idmap:${kind}:${id}`,
    wait: (id: string) => `${tag}:idwait:${id}`,
    counted: (id: string) => `${tag}:idcounted:${id}`,
    inflight: (kind: string) => `${tag}:inflight:${kind}`,
    idOutcomes: `${tag}:idmap:outcomes`,
    stagingAnswer: (id: string) => `${tag}:stgans:${id}`,
    diffs: `${tag}:diffs`,
    diffRoutes: `${tag}:diff:routes`,
    diffRouteNames: `${tag}:diff:routenames`,
    diffPaths: `${tag}:diff:paths`,
  });
}

/** The set of the consumer names of the workers that wrote a heartbeat (runtime/workers.ts). */
export function workersSetKey(prefix: string): string {
  return `${partitionTag(prefix)}:workers`;
}

/** A worker's heartbeat (JSON, expiring after three HEARTBEAT_MS periods). */
export function workerKey(prefix: string, consumer: string): string {
  return `${partitionTag(prefix)}:worker:${consumer}`;
}

/** The hash of deployment-wide settings (partitions, partition key, …) the first process stored. */
export function deploymentKey(prefix: string): string {
  return `${partitionTag(prefix)}:deployment`;
}

/** The prefix of the hooks' shared key-value store: a hook's key `k` is `${hookStorePrefix(p)}k`. */
export function hookStorePrefix(prefix: string): string {
  return `${partitionTag(prefix)}:kv:`;
}

/** The key of the lock that elects the one process exporting deployment metrics. */
export function exporterLockKey(prefix: string): string {
  return `${partitionTag(prefix)}:metrics-exporter`;
}

/** The token bucket of a staging origin's rate cap (hash: `t` tokens, `ts` last refill in ms). */
export function rateBucketKey(prefix: string, origin: string): string {
  return `${partitionTag(prefix)}:rate:${origin}`;
}

/** Live overrides of the rate caps (hash: origin name → `off` or `<per second>,<burst>`), re-read by workers every second. */
export function rateLimitsKey(prefix: string): string {
  return `${partitionTag(prefix)}:rate-limits`;
}

/**
 * The keys of per-key ordering (ORDER_BY) in one partition, under the partition's own tag so
 * that the scripts touching them and the stream run on one shard.
 */
export interface OrderKeys {
  /** The partition's stream (the read script delivers and records in one step). */
  readonly stream: string;
  /** Sorted set (score 0, members sortable ids) of entries delivered whose key is not registered yet. */
  readonly unkeyed: string;
  /** Hash: member → ms when it became the first of its key (for ORDER_MAX_WAIT_MS). */
  readonly heads: string;
  /** Sorted set (score 0) of one key's unfinished entries, in acceptance order; `digest` from orderKeyDigest. */
  key(digest: string): string;
}

export function orderKeys(prefix: string, partition = 0): OrderKeys {
  const tag = partitionTag(prefix, partition);
  return Object.freeze({
    stream: `${tag}:stream`,
    unkeyed: `${tag}:order:unkeyed`,
    heads: `${tag}:order:heads`,
    key: (digest: string) => `${tag}:order:k:${digest}`,
  });
}

/** One family of Redis keys, as docs/ARCHITECTURE.md lists it. */
export interface KeyFamily {
  /** The key with `{p}` for the partition-0 tag and `<…>` for the variable parts. */
  readonly pattern: string;
  /** The Redis type (`stream`, `string`, `hash`, `list`, `set`, `sorted set`, or `BullMQ` for the queue's own keys). */
  readonly type: string;
  /** `partition` when every partition has one (`{p~i}` for i > 0), else `deployment`. */
  readonly scope: 'partition' | 'deployment';
  readonly holds: string;
}

/** Every family of keys, in the order docs/ARCHITECTURE.md lists them. */
export const KEY_FAMILIES: readonly KeyFamily[] = Object.freeze([
  { pattern: '{p}:stream', type: 'stream', scope: 'partition', holds: 'accepted entries, read by the consumer group `workers`' },
  { pattern: '{p}:replayed', type: 'string', scope: 'partition', holds: 'completed replays since the deployment began (counter)' },
  {
    pattern: '{p}:retry:<…>',
    type: 'BullMQ',
    scope: 'deployment',
    holds: 'the retry queue (delayed jobs with backoff) and the failed set; the ingress counts its unfinished states (`retryStateKey`) for MAX_BACKLOG',
  },
  { pattern: '{p}:kv:<key>', type: 'string', scope: 'deployment', holds: "hooks' shared store (`ctx.store`), every key with a TTL" },
  { pattern: '{p}:metrics-exporter', type: 'string', scope: 'deployment', holds: 'lock electing the one process that exports deployment gauges' },
  { pattern: '{p}:prod:<request id>', type: 'hash', scope: 'deployment', holds: 'a production response (status, headers, body, method, path); TTL' },
  { pattern: '{p}:learned:<request id>', type: 'string', scope: 'deployment', holds: "staging's id for a request that creates an id, once staging answered" },
  {
    pattern: '{p}:idmap:<kind>:<production id>',
    type: 'string',
    scope: 'deployment',
    holds: '`=<staging id>` (mapped) or `?<request id>` (pending); TTL; with a data key the production id is `#<digest>`',
  },
  { pattern: '{p}:idwait:<entry id>', type: 'string', scope: 'deployment', holds: 'when an entry first waited for an id mapping' },
  {
    pattern: '{p}:inflight:<kind>',
    type: 'sorted set',
    scope: 'deployment',
    holds: 'creates a worker started whose production answer has not arrived: request id scored by receive time',
  },
  { pattern: '{p}:idmap:outcomes', type: 'hash', scope: 'deployment', holds: '`<kind>\\t<outcome>` → count of requests sent on with an id unmapped' },
  {
    pattern: '{p}:stgans:<request id>',
    type: 'string',
    scope: 'deployment',
    holds: "staging's answer kept until production's arrives, for the comparison; TTL",
  },
  { pattern: '{p}:diffs', type: 'list', scope: 'deployment', holds: 'the latest differing comparisons (JSON), trimmed to COMPARE keepDiffs' },
  { pattern: '{p}:diff:routes', type: 'hash', scope: 'deployment', holds: '`<route>\\t<match or mismatch>` → count' },
  { pattern: '{p}:diff:paths', type: 'hash', scope: 'deployment', holds: '`<route>\\t<json path>` → count of differences' },
  { pattern: '{p}:workers', type: 'set', scope: 'deployment', holds: 'consumer names of the workers that wrote a heartbeat' },
  { pattern: '{p}:worker:<consumer>', type: 'string', scope: 'deployment', holds: "a worker's heartbeat (JSON); expires after three HEARTBEAT_MS" },
  {
    pattern: '{p}:deployment',
    type: 'hash',
    scope: 'deployment',
    holds: 'deployment-wide settings (partitions, partition key, …) stored by the first process',
  },
  { pattern: '{p}:rate:<origin>', type: 'hash', scope: 'deployment', holds: "a staging origin's token bucket (tokens, last refill); expires when idle" },
  {
    pattern: '{p}:rate-limits',
    type: 'hash',
    scope: 'deployment',
    holds: 'live rate-cap overrides by origin (`off` or `<per second>,<burst>`), set by `mirrorplane rate-limit`',
  },
  {
    pattern: '{p}:order:unkeyed',
    type: 'sorted set',
    scope: 'partition',
    holds: 'ORDER_BY: entries delivered whose ordering key is not registered yet (later entries of any key wait while one is older)',
  },
  {
    pattern: '{p}:order:heads',
    type: 'hash',
    scope: 'partition',
    holds: 'ORDER_BY: entry → when it became the first of its key, `u:<entry>` → when a later entry first waited for it in `unkeyed` (ORDER_MAX_WAIT_MS)',
  },
  {
    pattern: '{p}:order:k:<key digest>',
    type: 'sorted set',
    scope: 'partition',
    holds: "ORDER_BY: one key's unfinished entries in acceptance order; the key is a digest, never the value",
  },
] satisfies KeyFamily[]);

/** The markdown table of `KEY_FAMILIES`, as it stands in docs/ARCHITECTURE.md. */
export function keyFamilyTable(): string {
  const rows = KEY_FAMILIES.map((f) => `| \`${f.pattern}\` | ${f.type} | ${f.scope} | ${f.holds} |`);
  return ['| key | type | per | holds |', '| --- | --- | --- | --- |', ...rows].join('\n');
}

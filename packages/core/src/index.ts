/**
 * @mirrorplane/core — the shared vocabulary of Mirrorplane. No I/O.
 *
 * Glossary
 * - entry: one accepted request in the Redis stream (method, request-target, raw headers,
 *   body bytes, receive time, request id, client address), identified by its stream id.
 * - pipeline: the stages a worker runs around a replay, composed once at start-up.
 * - pre: a stage that rewrites the request before it is sent to staging, or drops it.
 * - post: a stage that sees staging's response (log, record, compare).
 * - replay: sending an entry's request to staging and reading the answer; each try is an attempt.
 * - retry: a replay that failed in a retryable way (5xx, 429, transport error) waits in the
 *   BullMQ retry queue with exponential backoff and jitter.
 * - failed: the BullMQ failed set: entries out of attempts, undecodable, or failed by a hook;
 *   operators list and replay them.
 * - backlog: entries accepted by the ingress and not yet taken by a worker.
 */
export * from './errors.js';
export * from './entry.js';
export * from './entry-cipher.js';
export * from './headers.js';
export * from './grpc.js';
export * from './redaction.js';
export * from './content-type.js';
export * from './hashing.js';
export * from './http-token.js';
export * from './stream-ids.js';
export * from './config.js';
export * from './pipeline.js';
export * from './keys.js';
export * from './rule-schema.js';
export * from './rules.js';
export * from './linear-regex.js';
export * from './template.js';
export * from './json-path.js';
export * from './rule-query.js';
export * from './rule-sample.js';
export * from './id-mapping.js';
export * from './compare.js';
export * from './stream-retention.js';
export * from './redis-url.js';
export * from './partitions.js';
export * from './rate-limit.js';
export * from './percent-decoding.js';
export * from './content-coding.js';
export * from './amplify.js';
export * from './order-by.js';

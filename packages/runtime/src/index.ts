/** @mirrorplane/runtime — the I/O the processes share: Redis, logs, the admin port, operator queries. */
export * from './redis.js';
export * from './logger.js';
export * from './admin-server.js';
export * from './retry-queue.js';
export * from './operations.js';
export * from './hooks.js';
export * from './recording.js';
export * from './pipeline-builder.js';
export * from './metrics.js';
export * from './production-responses.js';
export * from './production-stage.js';
export * from './stream-trimmer.js';
export * from './stream-info.js';
export * from './local-processes.js';
export * from './cluster.js';
export * from './partitioned-status.js';

import type { Command } from 'commander';
import { partitionKeys, type Config } from '@mirrorplane/core';
import {
  describeRedisError,
  listWorkers,
  maskRedisUrl,
  readDeploymentStatus,
  readRateCaps,
  type RateCap,
  type Status,
  type WorkerHeartbeat,
} from '@mirrorplane/runtime';
import { formatRateCaps } from './rate-limit.js';
import { configure, UsageError } from '../process.js';
import { CONNECTION_SETTINGS, addSettingFlags, settingFlags } from '../settings-flags.js';
import { withOperatorConnection, operatorContext } from '../connection.js';
import { formatCount, formatDuration, formatTable } from '../format.js';
import { watchStatus } from '../status-watch.js';
import type { Io } from '../io.js';

/** A status with the live workers read from their heartbeats (absent: not read, nothing shown). */
export type StatusWithWorkers = Status & { workers?: WorkerHeartbeat[]; rateCaps?: RateCap[] };

/**
 * The status as a table: counts with separators, ages in human units. With `workers`: a
 * "workers" section (consumer, host, pid, in flight, last seen) or "no worker is running",
 * and each consumer marked live or dead (no heartbeat: its worker is gone).
 */
export function formatStatus(status: StatusWithWorkers, now = Date.now()): string {
  const rows: [string, string][] = [
    ['backlog', formatCount(status.backlog)],
    ['pending', formatCount(status.pending)],
    ['retrying', formatCount(status.retrying)],
    ['failed', formatCount(status.failed)],
    ['replayed', formatCount(status.replayed)],
    ['oldest backlog age', status.oldestBacklogAgeMs === null ? '-' : formatDuration(status.oldestBacklogAgeMs)],
  ];
  const width = Math.max(...rows.map(([k]) => k.length));
  let out = rows.map(([k, v]) => `${k.padEnd(width)}  ${v}`).join('\n') + '\n';
  // Only where a cap exists: the output of uncapped deployments is unchanged.
  if (status.rateCaps !== undefined && status.rateCaps.length > 0) out += `\n${formatRateCaps(status.rateCaps, status.backlog + status.retrying)}`;
  const workers = status.workers;
  if (workers !== undefined) {
    out += `\nworkers (${workers.length})\n`;
    out +=
      workers.length === 0
        ? '  no worker is running (no heartbeat): entries wait in the backlog until one starts\n'
        : formatTable(
            ['  CONSUMER', 'HOST', 'PID', 'IN FLIGHT', 'LAST SEEN'],
            workers.map((w) => [
              `  ${w.consumer}`,
              w.host,
              String(w.pid),
              `${formatCount(w.inFlight)} of ${formatCount(w.concurrency)}`,
              `${formatDuration(Math.max(0, now - w.lastSeen))} ago`,
            ]),
          );
  }
  if (status.consumers.length > 0) {
    const live = new Set((workers ?? []).map((w) => w.consumer));
    out += `\nconsumers (${status.consumers.length})\n`;
    const headers = ['  NAME', 'PENDING', 'IDLE', ...(workers !== undefined ? ['WORKER'] : [])];
    out += formatTable(
      headers,
      status.consumers.map((c) => [
        `  ${c.name}`,
        formatCount(c.pending),
        formatDuration(c.idleMs),
        ...(workers !== undefined ? [live.has(c.name) ? 'live' : 'dead (no heartbeat)'] : []),
      ]),
    );
  }
  return out;
}

/** A failed reading in a live view: the URL and the cause, never a bare "Connection is closed.". */
function describeReadError(config: Config): (error: unknown) => string {
  return (error) => {
    const message = (error as Error).message ?? String(error);
    if (/Connection is closed|Stream isn't writeable|enableOfflineQueue|Command timed out|max retries/i.test(message)) {
      return `cannot reach Redis at ${maskRedisUrl(config.redisUrl)}: ${/timed out/i.test(message) ? 'no answer in time' : 'connection lost'}`;
    }
    return `cannot read from Redis at ${maskRedisUrl(config.redisUrl)}: ${describeRedisError(error)}`;
  };
}

export function registerStatus(program: Command, io: Io): void {
  const command = program.command('status').description('backlog, pending, retrying, failed and replayed counts; writes nothing');
  addSettingFlags(command, 'cli', CONNECTION_SETTINGS)
    .option('--json', 'print one JSON object (with --watch: one a line)')
    .option('--watch', 'refresh every interval with rates and the time to drain the backlog; survives Redis restarts, marking data STALE meanwhile')
    .option('--interval <seconds>', 'seconds between refreshes with --watch', '1')
    .option('--count <n>', 'with --watch, stop after this many refreshes');
  command.action(async (options: { json?: boolean; watch?: boolean; interval: string; count?: string }) => {
    const config = configure('cli', settingFlags(command));
    const keys = partitionKeys(config.prefix, config.partitions);
    if (options.watch) {
      const interval = Number(options.interval);
      if (!(interval >= 0.1 && interval <= 3600))
        throw new UsageError(`--interval: expected seconds from 0.1 to 3600, got ${JSON.stringify(options.interval)}`);
      const count = options.count === undefined ? undefined : Number(options.count);
      if (count !== undefined && !(Number.isInteger(count) && count > 0))
        throw new UsageError(`--count: expected a positive integer, got ${JSON.stringify(options.count)}`);
      const stop = new AbortController();
      const onInterrupt = () => stop.abort();
      process.once('SIGINT', onInterrupt);
      process.once('SIGTERM', onInterrupt);
      try {
        await withOperatorConnection(
          config,
          ({ redis, queue }) =>
            watchStatus({
              read: async () => ({
                ...(await readDeploymentStatus(redis, queue, keys)),
                workers: await listWorkers(redis, config.prefix, { prune: false }),
                rateCaps: await readRateCaps(redis, config.prefix, config.rateLimits),
              }),
              write: io.out,
              intervalMs: interval * 1000,
              ...(count !== undefined ? { count } : {}),
              json: Boolean(options.json),
              clear: io.stdoutIsTTY && !options.json,
              format: formatStatus,
              signal: stop.signal,
              describeError: describeReadError(config),
              context: operatorContext(config),
            }),
          'watch',
          { signal: stop.signal },
        );
      } finally {
        process.off('SIGINT', onInterrupt);
        process.off('SIGTERM', onInterrupt);
      }
      return;
    }
    const { status, exists } = await withOperatorConnection(config, async ({ redis, queue, deployment }) => ({
      status: {
        ...(await readDeploymentStatus(redis, queue, keys)),
        // Live workers by heartbeat (in flight per worker, to compare with each consumer's pending).
        workers: await listWorkers(redis, config.prefix, { prune: false }),
        rateCaps: await readRateCaps(redis, config.prefix, config.rateLimits),
      },
      exists: deployment.exists,
    }));
    if (options.json) {
      io.out(`${JSON.stringify({ redisUrl: maskRedisUrl(config.redisUrl), prefix: config.prefix, deploymentFound: exists, ...status })}\n`);
      return;
    }
    io.out(operatorContext(config));
    io.out(`\n${formatStatus(status)}`);
  });
}

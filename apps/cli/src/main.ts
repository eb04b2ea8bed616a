import { writeFile } from 'node:fs/promises';
import { Command, CommanderError, Option } from 'commander';
import type { Queue } from 'bullmq';
import type { Redis } from 'ioredis';
import { ConfigError, isLoopback, keysFor, MirrorplaneError, partitionKeys, RedisUnavailableError, type Config, type SettingKey } from '@mirrorplane/core';
import { buildPipeline, closeRedis, createRedis, createRetryQueue, listFailed, purgeFailed, readDeploymentStatus, replayFailed, type RetryJobData, type Status } from '@mirrorplane/runtime';
import { Ingress } from '@mirrorplane/ingress';
import { ReplayWorker } from '@mirrorplane/worker';
import { SampleBackend } from '@mirrorplane/sample-backend';
import { configure, createLogger, EXIT_USAGE, runUntilSignal, UsageError, type Flags } from './process.js';
import { formatDiffSummary, readDiffSummary } from './diff.js';
import { startLocalStack } from './local-stack.js';
import { ingressProcessConfig, isIngressPrimary, leaveInterruptToPrimary, superviseIngressProcesses } from './ingress-cluster.js';
import { runDemo } from './demo.js';
import { watchStatus } from './status-watch.js';
import { Dashboard } from './dashboard.js';
import { formatSummary, parseReplayFlags, progressReporter, replayWindow } from './replay-window.js';
import { readRecordings, toHar } from './record.js';

const VERSION = '0.1.0';

/** Flag names as commander camel-cases them → setting keys. */
const FLAG_SETTINGS: Record<string, SettingKey> = {
  redisUrl: 'redisUrl',
  prefix: 'prefix',
  logLevel: 'logLevel',
  port: 'ingressPort',
  processes: 'ingressProcesses',
  host: 'ingressHost',
  adminPort: 'adminPort',
  adminHost: 'adminHost',
  staging: 'stagingUrl',
  concurrency: 'workerConcurrency',
  attempts: 'replayAttempts',
};

function toFlags(options: Record<string, unknown>): Flags {
  const flags: Flags = {};
  for (const [name, value] of Object.entries(options)) {
    if (typeof value !== 'string') continue;
    if (name === 'config') flags.config = value;
    const key = FLAG_SETTINGS[name];
    if (key) flags[key] = value;
  }
  return flags;
}

function common(command: Command): Command {
  return command
    .option('--redis-url <url>', 'Redis URL (env REDIS_URL)')
    .option('--prefix <prefix>', 'key prefix of the deployment (env MIRRORPLANE_PREFIX)')
    .option('--config <file>', 'YAML or JSON config file (env MIRRORPLANE_CONFIG)')
    .option('--log-level <level>', 'fatal, error, warn, info, debug, trace or silent (env LOG_LEVEL)');
}

async function withOperatorConnection<T>(config: Config, fn: (ctx: { redis: Redis; queue: Queue<RetryJobData> }) => Promise<T>): Promise<T> {
  const logger = createLogger({ logLevel: 'silent' }, 'cli');
  const redis = createRedis(config, 'cli', logger);
  const bull = createRedis(config, 'cli', logger);
  const keys = keysFor(config.prefix);
  const queue = createRetryQueue(keys, bull);
  queue.on('error', () => undefined);
  try {
    await redis.ping().catch((error: Error) => {
      throw new RedisUnavailableError(`cannot reach Redis at ${redactUrl(config.redisUrl)}: ${error.message}`, { cause: error });
    });
    return await fn({ redis, queue });
  } finally {
    await queue.close().catch(() => undefined);
    await closeRedis(redis);
    await closeRedis(bull);
  }
}

function redactUrl(url: string): string {
  // Not new URL(): cluster and Sentinel URLs list several hosts, which URL refuses.
  return url.replace(/\/\/([^@/]*?):[^@/]*@/, '//$1:***@');
}

export function formatStatus(status: Status): string {
  const age = status.oldestBacklogAgeMs === null ? '-' : `${(status.oldestBacklogAgeMs / 1000).toFixed(1)} s`;
  const rows: [string, string][] = [
    ['backlog', String(status.backlog)],
    ['pending', String(status.pending)],
    ['retrying', String(status.retrying)],
    ['failed', String(status.failed)],
    ['replayed', String(status.replayed)],
    ['oldest backlog age', age],
  ];
  const width = Math.max(...rows.map(([k]) => k.length));
  let out = rows.map(([k, v]) => `${k.padEnd(width)}  ${v}`).join('\n') + '\n';
  if (status.consumers.length > 0) {
    out += `\nconsumers (${status.consumers.length})\n`;
    for (const c of status.consumers) out += `  ${c.name}  pending ${c.pending}  idle ${(c.idleMs / 1000).toFixed(1)} s\n`;
  }
  return out;
}

function buildProgram(io: { out: (s: string) => void; err: (s: string) => void; setExit: (code: number) => void }): Command {
  const program = new Command('mirrorplane')
    .description('Mirror production HTTP traffic into staging through a Redis stream.')
    .showHelpAfterError()
    .exitOverride()
    .configureOutput({ writeOut: io.out, writeErr: io.err });

  common(program.command('ingress').description('run the ingress: accept mirrored requests and append them to the stream'))
    .option('--port <n>', 'traffic port (env INGRESS_PORT, default 8080)')
    .option('--host <addr>', 'traffic address (env INGRESS_HOST, default 0.0.0.0)')
    .option('--processes <n>', 'ingress processes sharing the port (env INGRESS_PROCESSES, default 1)')
    .option('--admin-port <n>', 'admin port: /healthz /readyz /metrics (env ADMIN_PORT, default 9090, 0 = off)')
    .option('--admin-host <addr>', 'admin address (env ADMIN_HOST, default 127.0.0.1)')
    .action(async (options: Record<string, unknown>) => {
      const config = configure('ingress', toFlags(options));
      const logger = createLogger(config, 'ingress');
      if (isIngressPrimary(config)) {
        superviseIngressProcesses(config, logger);
        return;
      }
      const ingress = new Ingress(ingressProcessConfig(config), logger);
      runUntilSignal(logger, () => ingress.close());
      leaveInterruptToPrimary();
      await ingress.listen();
    });

  common(program.command('worker').description('run a worker: replay stream entries to staging'))
    .option('--staging <url>', 'staging origin (env STAGING_URL, required)')
    .option('--concurrency <n>', 'replays in flight (env WORKER_CONCURRENCY, default 64)')
    .option('--attempts <n>', 'tries in all before the failed set (env REPLAY_ATTEMPTS, default 5)')
    .option('--admin-port <n>', 'admin port: /healthz /readyz /metrics (env ADMIN_PORT, default 9091, 0 = off)')
    .option('--admin-host <addr>', 'admin address (env ADMIN_HOST, default 127.0.0.1)')
    .action(async (options: Record<string, unknown>) => {
      const config = configure('worker', toFlags(options));
      const logger = createLogger(config, 'worker');
      const built = await buildPipeline(config, logger);
      const worker = new ReplayWorker(config, logger, { pipeline: built.pipeline });
      for (const metric of built.metrics) worker.metrics.registerMetric(metric);
      runUntilSignal(logger, () => worker.close());
      await worker.start();
    });

  common(program.command('start').description('all in one, for a first look: Redis (when REDIS_URL is unset), ingress, a worker and a sample staging'))
    .option('--port <n>', 'traffic port (env INGRESS_PORT, default 8080)')
    .option('--staging <url>', 'staging origin (default: a sample staging backend started here)')
    .action(async (options: Record<string, unknown>) => {
      await startLocalStack(toFlags(options), io, process.env);
    });

  program
    .command('sample-backend')
    .description('run the sample JSON API (production or staging in the demo and docker-compose)')
    .option('--name <name>', 'name shown in answers', 'sample')
    .option('--port <n>', 'port', '8000')
    .option('--host <addr>', 'address', '0.0.0.0')
    .option('--id-prefix <prefix>', 'prefix of created ids', 'ord_')
    .option('--first-id <n>', 'first id number', '1')
    .option('--path-prefix <prefix>', 'serve only paths under this prefix (404 elsewhere)')
    .action(async (options: { name: string; port: string; host: string; idPrefix: string; firstId: string; pathPrefix?: string }) => {
      const port = Number(options.port);
      if (!Number.isInteger(port) || port < 0 || port > 65535) throw new UsageError(`--port: expected an integer from 0 to 65535, got ${JSON.stringify(options.port)}`);
      const backend = new SampleBackend({ name: options.name, idPrefix: options.idPrefix, firstId: Number(options.firstId) || 1, ...(options.pathPrefix ? { pathPrefix: options.pathPrefix } : {}) });
      const bound = await backend.listen(port, options.host);
      io.out(`sample backend ${options.name} listening on ${options.host}:${bound}\n`);
      const stop = () => void backend.close().then(() => process.exit(0));
      process.on('SIGTERM', stop);
      process.on('SIGINT', stop);
    });

  program
    .command('demo')
    .description('the whole topology on this machine (nginx mirroring, Redis, ingress, 2 workers, staging), a little traffic and a live summary')
    .option('--requests <n>', 'requests to send through nginx', '16')
    .option('--keep', 'keep running after the traffic, for your own curl, until Ctrl-C')
    .option('--port <n>', 'nginx port (default 8000 when free)')
    .action(async (options: { requests: string; keep?: boolean; port?: string }) => {
      const requests = Number(options.requests);
      if (!Number.isInteger(requests) || requests < 0) throw new UsageError(`--requests: expected a whole number, got ${JSON.stringify(options.requests)}`);
      const port = options.port === undefined ? 0 : Number(options.port);
      if (!Number.isInteger(port) || port < 0 || port > 65535) throw new UsageError(`--port: expected an integer from 0 to 65535, got ${JSON.stringify(options.port)}`);
      await runDemo({ requests, keep: options.keep === true, port, out: io.out, err: io.err, env: process.env });
      io.setExit(0);
    });

  common(program.command('status').description('backlog, pending, retrying, failed and replayed counts'))
    .option('--json', 'print one JSON object (with --watch: one a line)')
    .option('--watch', 'refresh every second with rates and the time to drain the backlog')
    .option('--interval <seconds>', 'seconds between refreshes with --watch', '1')
    .option('--count <n>', 'with --watch, stop after this many refreshes')
    .action(async (options: Record<string, unknown>) => {
      const config = configure('cli', toFlags(options));
      if (options.watch) {
        const interval = Number(options.interval);
        if (!(interval >= 0.1 && interval <= 3600)) throw new UsageError(`--interval: expected seconds from 0.1 to 3600, got ${JSON.stringify(options.interval)}`);
        const count = options.count === undefined ? undefined : Number(options.count);
        if (count !== undefined && !(Number.isInteger(count) && count > 0)) throw new UsageError(`--count: expected a positive integer, got ${JSON.stringify(options.count)}`);
        const stop = new AbortController();
        process.once('SIGINT', () => stop.abort());
        await withOperatorConnection(config, ({ redis, queue }) => watchStatus({
          read: () => readDeploymentStatus(redis, queue, partitionKeys(config.prefix, config.partitions)),
          write: io.out,
          intervalMs: interval * 1000,
          ...(count !== undefined ? { count } : {}),
          json: Boolean(options.json),
          clear: process.stdout.isTTY === true && !options.json,
          format: formatStatus,
          signal: stop.signal,
        }));
        return;
      }
      const status = await withOperatorConnection(config, ({ redis, queue }) => readDeploymentStatus(redis, queue, partitionKeys(config.prefix, config.partitions)));
      io.out(options.json ? `${JSON.stringify(status)}\n` : formatStatus(status));
    });

  const diff = program.command('diff').description('how staging answers compared with production');
  common(diff.command('summary').description('mismatch rate per route and the most common differing paths'))
    .option('--json', 'print a JSON array')
    .action(async (options: Record<string, unknown>) => {
      const config = configure('cli', toFlags(options));
      const rows = await withOperatorConnection(config, ({ redis }) => readDiffSummary(redis, config.prefix));
      io.out(options.json ? `${JSON.stringify(rows)}\n` : formatDiffSummary(rows));
    });

  common(program.command('dashboard').description('serve the dashboard: backlog, consumers and rates, and the retry queue and failed set (inspect, retry, remove)'))
    .option('--port <n>', 'port to listen on', '9092')
    .option('--host <addr>', 'address to bind (loopback unless told otherwise)', '127.0.0.1')
    .action(async (options: Record<string, unknown>) => {
      const { port: rawPort, host, ...rest } = options;
      const port = Number(rawPort);
      if (!Number.isInteger(port) || port < 0 || port > 65535) throw new UsageError(`--port: expected an integer from 0 to 65535, got ${JSON.stringify(rawPort)}`);
      const config = configure('cli', toFlags(rest));
      const logger = createLogger(config, 'dashboard');
      const dashboard = new Dashboard({ config, logger, host: String(host), port });
      runUntilSignal(logger, () => dashboard.close());
      const url = await dashboard.listen();
      if (!isLoopback(String(host))) logger.warn({ host }, 'the dashboard can retry and remove jobs and has no login: keep it behind a proxy that authenticates');
      logger.info({ url }, 'dashboard listening');
    });

  common(program.command('replay').description('replay a window of accepted traffic again (kept by STREAM_RETENTION, or from recordings), with its original timing'))
    .option('--from <time>', 'start of the window: 2026-11-26T10:00:00Z, epoch ms, -1h, "15m ago"')
    .option('--to <time>', 'end of the window (default: now)')
    .option('--speed <factor>', 'divide the original gaps between requests by this: 2x, 0.5x, max', '1x')
    .option('--staging <url>', 'replay from here to this origin (a new staging build) instead of appending to the stream for the workers')
    .option('--filter <terms>', "only requests matching every term: 'method=POST,PUT path=^/api header.x-tenant=^acme'")
    .option('--file <paths...>', 'replay recording files (JSONL) instead of the stream')
    .option('--concurrency <n>', 'with --staging, requests in flight at once', '64')
    .option('--json', 'print the summary as JSON')
    .action(async (options: Record<string, unknown>) => {
      const flags = parseReplayFlags(options as Parameters<typeof parseReplayFlags>[0]);
      const config = configure('cli', toFlags(options));
      const files = options.file as string[] | undefined;
      const recordings = files?.length ? await readRecordings(files) : null;
      const progress = progressReporter(io.err, process.stderr.isTTY === true);
      const summary = await withOperatorConnection(config, async ({ redis }) => {
        const built = options.staging ? await buildPipeline(config, createLogger({ logLevel: 'silent' }, 'replay')) : null;
        try {
          return await replayWindow({ config, redis, keys: partitionKeys(config.prefix, config.partitions), ...flags, recordings, direct: built ? { pipeline: built.pipeline } : null, progress: progress.update });
        } finally {
          progress.done();
          await built?.pipeline.close();
        }
      });
      io.out(options.json ? `${JSON.stringify(summary)}\n` : formatSummary(summary));
    });

  const failed = program.command('failed').description('inspect and replay the failed set');
  common(failed.command('list').description('list failed entries, newest first'))
    .option('--json', 'print a JSON array')
    .option('--limit <n>', 'at most this many', '100')
    .action(async (options: Record<string, unknown>) => {
      const config = configure('cli', toFlags(options));
      const limit = Number(options.limit);
      if (!Number.isInteger(limit) || limit < 1) throw new UsageError(`--limit: expected a positive integer, got ${JSON.stringify(options.limit)}`);
      const entries = await withOperatorConnection(config, ({ queue }) => listFailed(queue, limit));
      if (options.json) {
        io.out(`${JSON.stringify(entries)}\n`);
        return;
      }
      if (entries.length === 0) {
        io.out('no failed entries\n');
        return;
      }
      for (const e of entries) {
        io.out(`${e.id}  ${e.method ?? '-'} ${e.url ?? '-'}  attempts ${e.attempts}  ${e.failedAt ?? ''}\n    ${e.lastError}\n`);
      }
    });
  common(failed.command('replay').description('put failed entries back for a fresh set of attempts').argument('[ids...]', 'entry ids'))
    .option('--all', 'every failed entry')
    .action(async (ids: string[], options: Record<string, unknown>) => {
      if (!options.all && ids.length === 0) throw new UsageError('failed replay: name entry ids or pass --all');
      if (options.all && ids.length > 0) throw new UsageError('failed replay: pass either --all or ids, not both');
      const config = configure('cli', toFlags(options));
      const count = await withOperatorConnection(config, ({ queue }) => replayFailed(queue, options.all ? null : ids));
      io.out(`replaying ${count} failed ${count === 1 ? 'entry' : 'entries'}\n`);
    });
  common(failed.command('purge').description('remove every entry of the failed set'))
    .action(async (options: Record<string, unknown>) => {
      const config = configure('cli', toFlags(options));
      const count = await withOperatorConnection(config, ({ queue }) => purgeFailed(queue));
      io.out(`purged ${count} failed ${count === 1 ? 'entry' : 'entries'}\n`);
    });

  const record = program.command('record').description('work with recordings of replayed traffic (recording: in the config file)');
  record
    .command('export')
    .description('convert recording files (JSONL) to another format')
    .argument('<files...>', 'recording files')
    .requiredOption('--format <format>', 'output format: har (HAR 1.2)')
    .option('--out <file>', 'write here instead of stdout')
    .action(async (files: string[], options: { format: string; out?: string }) => {
      if (options.format !== 'har') throw new UsageError(`--format: expected har, got ${JSON.stringify(options.format)}`);
      const har = `${JSON.stringify(toHar(await readRecordings(files), VERSION), null, 2)}\n`;
      if (options.out) {
        await writeFile(options.out, har);
        io.err(`wrote ${options.out}\n`);
      } else io.out(har);
    });

  return program;
}

/** Runs the command line; resolves with the exit code for commands that end (long-running roles never resolve to exit). */
export async function main(argv: string[]): Promise<number | undefined> {
  let exitCode: number | undefined;
  const io = {
    out: (s: string) => void process.stdout.write(s),
    err: (s: string) => void process.stderr.write(s),
    setExit: (code: number) => { exitCode = code; },
  };
  const program = buildProgram(io);
  try {
    await program.parseAsync(argv, { from: 'user' });
    return exitCode;
  } catch (error) {
    if (error instanceof CommanderError) return error.exitCode === 0 ? 0 : EXIT_USAGE;
    if (error instanceof ConfigError || error instanceof UsageError) {
      io.err(`mirrorplane: ${error.message}\n`);
      return EXIT_USAGE;
    }
    if (error instanceof MirrorplaneError) {
      io.err(`mirrorplane: ${error.code}: ${error.message}\n`);
      return 1;
    }
    throw error;
  }
}

void Option;

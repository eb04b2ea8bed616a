import type { Command } from 'commander';
import { buildPipeline } from '@mirrorplane/runtime';
import { ReplayWorker } from '@mirrorplane/worker';
import { logStopsBeforeStart } from '../early-signals.js';
import { configure, createLogger, runUntilSignal } from '../process.js';
import { CONNECTION_SETTINGS, addSettingFlags, settingFlags } from '../settings-flags.js';
import { preflight } from '../preflight.js';
import { listening } from '../listen-errors.js';

export function registerWorker(program: Command): void {
  const command = program.command('worker').description('run a worker: replay stream entries to staging');
  addSettingFlags(command, 'worker', [
    ...CONNECTION_SETTINGS,
    'stagingUrl',
    'workerConcurrency',
    'replayAttempts',
    'stagingRateLimit',
    'orderBy',
    'adminPort',
    'adminHost',
  ]);
  command.action(async () => {
    const config = configure('worker', settingFlags(command));
    const logger = createLogger(config, 'worker');
    logStopsBeforeStart(logger);
    await preflight(config, logger);
    const built = await buildPipeline(config, logger);
    const worker = new ReplayWorker(config, logger, { pipeline: built.pipeline });
    for (const metric of built.metrics) worker.metrics.registerMetric(metric);
    runUntilSignal(logger, () => worker.close());
    await listening(config, () => worker.start());
  });
}

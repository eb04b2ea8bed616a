import type { Command } from 'commander';
import { EntryCipher, partitionKeys } from '@mirrorplane/core';
import { buildPipeline } from '@mirrorplane/runtime';
import { configure, createLogger } from '../process.js';
import { CONNECTION_SETTINGS, addSettingFlags, settingFlags } from '../settings-flags.js';
import { withOperatorConnection, operatorContext } from '../connection.js';
import { formatSummary, parseReplayFlags, progressReporter, replayWindow } from '../replay-window.js';
import { readRecordings } from '../record.js';
import type { Io } from '../io.js';

export function registerReplay(program: Command, io: Io): void {
  const command = program
    .command('replay')
    .description('replay a window of accepted traffic again (kept by STREAM_RETENTION, or from recordings), with its original timing');
  addSettingFlags(command, 'cli', CONNECTION_SETTINGS)
    .option('--from <time>', 'start of the window: 2026-11-26T10:00:00Z, epoch ms, -1h, "15m ago"')
    .option('--to <time>', 'end of the window (default: now)')
    .option('--speed <factor>', 'divide the original gaps between requests by this: 2x, 0.5x, max', '1x')
    .option('--staging <url>', 'replay from here to this origin (a new staging build) instead of appending to the stream for the workers')
    .option('--filter <terms>', "only requests matching every term: 'method=POST,PUT path=^/api header.x-tenant=^acme'")
    .option('--file <paths...>', 'replay recording files (JSONL) instead of the stream; the window defaults to all of them')
    .option('--concurrency <n>', 'with --staging, requests in flight at once', '64')
    .option('--amplify <factor>', 'with --staging, send each request this many times (3, 2.5x: 2 or 3 by entry id, 250%), each with x-mirrorplane-copy: <n>')
    .option('--json', 'print the summary as JSON');
  command.action(async (options: Parameters<typeof parseReplayFlags>[0] & { staging?: string; json?: boolean }) => {
    const flags = parseReplayFlags(options);
    // --staging and --concurrency here are this command's own, not the worker's settings.
    const { stagingUrl: _s, workerConcurrency: _c, ...settings } = settingFlags(command);
    const config = configure('cli', { ...settings, ...(options.staging ? { stagingUrl: options.staging } : {}) });
    const recordings = options.file?.length ? await readRecordings(options.file, EntryCipher.fromSpec(config.dataKey)) : null;
    const progress = progressReporter(io.err, io.stderrIsTTY);
    // Verification off is never silent, here as in the worker.
    if (options.staging)
      for (const [name, tls] of Object.entries(config.originTls))
        if (tls.insecure) io.err(`mirrorplane: warning: staging origin ${name} has insecure: true: its TLS certificate is NOT verified\n`);
    const summary = await withOperatorConnection(config, async ({ redis }) => {
      const built = options.staging ? await buildPipeline(config, createLogger({ logLevel: 'silent' }, 'replay')) : null;
      try {
        return await replayWindow({
          config,
          redis,
          keys: partitionKeys(config.prefix, config.partitions),
          ...flags,
          recordings,
          direct: built ? { pipeline: built.pipeline } : null,
          progress: progress.update,
        });
      } finally {
        progress.done();
        await built?.pipeline.close();
      }
    });
    io.out(options.json ? `${JSON.stringify(summary)}\n` : `${operatorContext(config)}${formatSummary(summary)}`);
  });
}

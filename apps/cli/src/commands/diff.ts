import type { Command } from 'commander';
import { configure } from '../process.js';
import { CONNECTION_SETTINGS, addSettingFlags, settingFlags } from '../settings-flags.js';
import { withOperatorConnection, operatorContext } from '../connection.js';
import { formatDiffSummary, formatIdMappingOutcomes, readDiffSummary, readIdMappingOutcomes } from '../diff.js';
import type { Io } from '../io.js';

export function registerDiff(program: Command, io: Io): void {
  const diff = program.command('diff').description('how staging answers compared with production');
  const summary = diff.command('summary').description('mismatch rate per route and the most common differing paths; writes nothing');
  addSettingFlags(summary, 'cli', CONNECTION_SETTINGS).option('--json', 'print a JSON array');
  summary.action(async (options: { json?: boolean }) => {
    const config = configure('cli', settingFlags(summary));
    const [rows, ids] = await withOperatorConnection(config, ({ redis }) =>
      Promise.all([readDiffSummary(redis, config.prefix), readIdMappingOutcomes(redis, config.prefix)]),
    );
    io.out(options.json ? `${JSON.stringify(rows)}\n` : `${operatorContext(config)}\n${formatDiffSummary(rows)}${formatIdMappingOutcomes(ids)}`);
  });
}

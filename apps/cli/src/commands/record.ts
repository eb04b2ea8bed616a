import { writeFile } from 'node:fs/promises';
import type { Command } from 'commander';
import { EntryCipher, Redactor, errorMessage } from '@mirrorplane/core';
import { configure, UsageError } from '../process.js';
import { readRecordings, toHar } from '../record.js';
import { VERSION } from '../version.js';
import type { Io } from '../io.js';

const FORMATS = ['har'] as const;

export function registerRecord(program: Command, io: Io): void {
  const record = program.command('record').description('work with recordings of replayed traffic (recording: in the config file)');
  record
    .command('export')
    .description('convert recording files (JSONL) to another format')
    .argument('<files...>', 'recording files')
    .requiredOption('--format <format>', `output format: ${FORMATS.join(', ')} (HAR 1.2; any case)`)
    .option('--out <file>', 'write here instead of stdout')
    .action(async (files: string[], options: { format: string; out?: string }) => {
      const format = options.format.toLowerCase();
      if (!(FORMATS as readonly string[]).includes(format))
        throw new UsageError(`--format: expected ${FORMATS.join(' or ')}, got ${JSON.stringify(options.format)}`);
      // The config (env, MIRRORPLANE_CONFIG) for MIRRORPLANE_DATA_KEY (encrypted recordings) and the redaction lists.
      const config = configure('cli', {});
      const har = `${JSON.stringify(toHar(await readRecordings(files, EntryCipher.fromSpec(config.dataKey)), VERSION, new Redactor(config.redaction)), null, 2)}\n`;
      if (!options.out) return io.out(har);
      try {
        await writeFile(options.out, har);
      } catch (error) {
        throw new UsageError(
          `--out: cannot write ${options.out}: ${(error as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such directory' : errorMessage(error)}`,
        );
      }
      io.err(`wrote ${options.out}\n`);
    });
}

import type { Command } from 'commander';
import { Redactor, parseDuration } from '@mirrorplane/core';
import {
  groupFailedByError,
  listFailed,
  purgeFailedSnapshot,
  replayFailedSnapshot,
  snapshotFailedIds,
  type FailedActionResult,
  type FailedFilter,
} from '@mirrorplane/runtime';
import { configure, UsageError } from '../process.js';
import { CONNECTION_SETTINGS, addSettingFlags, settingFlags } from '../settings-flags.js';
import { withOperatorConnection, operatorContext } from '../connection.js';
import { formatCount, formatDuration, formatTable } from '../format.js';
import type { Io } from '../io.js';

/** The filter flags of commands that act on many failed entries. */
function addFilterFlags(command: Command): Command {
  return command
    .option('--older-than <duration>', 'only entries that failed at least this long ago: 90s, 15m, 2h, 7d')
    .option('--error <regex>', 'only entries whose last error matches this regular expression (case-insensitive)')
    .option('--dry-run', 'say what would be done (counts and the first entries) and change nothing')
    .option('--json', 'print the result as JSON (raw counts)');
}

interface FilterOptions {
  olderThan?: string;
  error?: string;
  dryRun?: boolean;
  json?: boolean;
  yes?: boolean;
}

function parseFilter(options: FilterOptions, ids: readonly string[] | null): FailedFilter {
  const filter: FailedFilter = {};
  if (ids) filter.ids = ids;
  if (options.olderThan !== undefined) {
    const ms = parseDuration(options.olderThan);
    if (ms === null) throw new UsageError(`--older-than: expected a duration like 90s, 15m, 2h or 7d, got ${JSON.stringify(options.olderThan)}`);
    filter.olderThanMs = ms;
  }
  if (options.error !== undefined) {
    try {
      filter.error = new RegExp(options.error, 'i');
    } catch (error) {
      throw new UsageError(`--error: ${(error as Error).message}`);
    }
  }
  return filter;
}

function describeFilter(filter: FailedFilter): string {
  const parts: string[] = [];
  if (filter.olderThanMs !== undefined) parts.push(`failed over ${formatDuration(filter.olderThanMs)} ago`);
  if (filter.error) parts.push(`error matching /${filter.error.source}/i`);
  return parts.length ? ` (${parts.join(', ')})` : '';
}

function formatResult(verb: string, result: FailedActionResult, filter: FailedFilter): string {
  const noun = (n: number) => `${formatCount(n)} failed ${n === 1 ? 'entry' : 'entries'}`;
  let out = result.dryRun
    ? `dry run: would ${verb} ${noun(result.matched)}${describeFilter(filter)}; nothing changed\n`
    : `${verb === 'replay' ? 'replayed' : 'purged'} ${noun(result.done)}${describeFilter(filter)}\n`;
  out += `  of ${formatCount(result.snapshot)} in the ${filter.ids ? 'ids named' : 'failed set when the command started'}`;
  if (result.filteredOut) out += `; ${formatCount(result.filteredOut)} left out by the filters`;
  if (result.gone) out += `; ${formatCount(result.gone)} left the set meanwhile`;
  out += '\n';
  if (result.dryRun && result.sample.length > 0) {
    out +=
      '\n' +
      formatTable(
        ['ID', 'REQUEST', 'LAST ERROR'],
        result.sample.map((e) => [e.id, `${e.method ?? '-'} ${e.url ?? '-'}`, e.lastError.split('\n')[0] ?? '']),
      );
    if (result.matched > result.sample.length) out += `… and ${formatCount(result.matched - result.sample.length)} more\n`;
  }
  return out;
}

function resultJson(result: FailedActionResult): string {
  const { sample, ...counts } = result;
  return `${JSON.stringify({ ...counts, ...(result.dryRun ? { sample } : {}) })}\n`;
}

export function registerFailed(program: Command, io: Io): void {
  const failed = program.command('failed').description('inspect, replay and purge the failed set');

  const list = failed.command('list').description('list failed entries, newest first; writes nothing');
  addSettingFlags(list, 'cli', CONNECTION_SETTINGS)
    .option('--json', 'print a JSON array of the entries shown (with --by-error: an object with the groups)')
    .option('--limit <n>', 'at most this many', '100')
    .option('--by-error', 'group the whole failed set by last error instead of listing entries');
  list.action(async (options: { json?: boolean; limit: string; byError?: boolean }) => {
    const config = configure('cli', settingFlags(list));
    const limit = Number(options.limit);
    if (!Number.isInteger(limit) || limit < 1) throw new UsageError(`--limit: expected a positive integer, got ${JSON.stringify(options.limit)}`);
    if (options.byError) {
      const groups = await withOperatorConnection(config, ({ queue }) => groupFailedByError(queue, new Redactor(config.redaction)));
      if (options.json) return io.out(`${JSON.stringify({ total: groups.reduce((n, g) => n + g.count, 0), groups })}\n`);
      io.out(operatorContext(config));
      if (groups.length === 0) return io.out('no failed entries\n');
      io.out(
        `\n${formatTable(
          ['COUNT', 'EXAMPLE ID', 'LAST ERROR'],
          groups.map((g) => [formatCount(g.count), g.example, g.error.split('\n')[0] ?? '']),
        )}`,
      );
      return;
    }
    const { entries, total } = await withOperatorConnection(config, async ({ queue }) => ({
      entries: await listFailed(queue, limit, new Redactor(config.redaction)),
      total: await queue.getFailedCount(),
    }));
    // A JSON array, as before: scripts index it. `status --json` has the total.
    if (options.json) return io.out(`${JSON.stringify(entries)}\n`);
    io.out(operatorContext(config));
    if (entries.length === 0) return io.out('no failed entries\n');
    io.out(
      `showing ${formatCount(entries.length)} of ${formatCount(Math.max(total, entries.length))} failed entries, newest first${total > entries.length ? ' (--limit for more, --by-error to group them)' : ''}\n\n`,
    );
    io.out(
      formatTable(
        ['ID', 'REQUEST', 'ATTEMPTS', 'FAILED AT', 'LAST ERROR'],
        entries.map((e) => [e.id, `${e.method ?? '-'} ${e.url ?? '-'}`, String(e.attempts), e.failedAt ?? '-', e.lastError.split('\n')[0] ?? '']),
      ),
    );
  });

  const replay = failed
    .command('replay')
    .description('put failed entries back for a fresh set of attempts: the set as it was when the command started, each entry once')
    .argument('[ids...]', 'entry ids');
  addFilterFlags(addSettingFlags(replay, 'cli', CONNECTION_SETTINGS)).option('--all', 'every failed entry (that matches the filters)');
  replay.action(async (ids: string[], options: FilterOptions & { all?: boolean }) => {
    if (!options.all && ids.length === 0) throw new UsageError('failed replay: name entry ids or pass --all');
    if (options.all && ids.length > 0) throw new UsageError('failed replay: pass either --all or ids, not both');
    const config = configure('cli', settingFlags(replay));
    const filter = parseFilter(options, options.all ? null : ids);
    const result = await withOperatorConnection(config, ({ queue }) =>
      replayFailedSnapshot(queue, filter, { dryRun: options.dryRun === true, redactor: new Redactor(config.redaction) }),
    );
    if (options.json) io.out(resultJson(result));
    else io.out(operatorContext(config) + formatResult('replay', result, filter));
    if (result.missing.length > 0) {
      io.err(`mirrorplane: MP_ERR_NOT_FOUND: not in the failed set: ${result.missing.join(', ')}\n`);
      io.setExit(1);
    }
  });

  const purge = failed.command('purge').description('remove failed entries for good (all, or those the filters take); asks first on a terminal');
  addFilterFlags(addSettingFlags(purge, 'cli', CONNECTION_SETTINGS)).option('-y, --yes', 'do not ask (required when stdin is not a terminal)');
  purge.action(async (options: FilterOptions) => {
    const config = configure('cli', settingFlags(purge));
    const filter = parseFilter(options, null);
    const dryRun = options.dryRun === true;
    if (!dryRun && !options.yes && !io.stdinIsTTY) {
      throw new UsageError(
        'failed purge removes entries for good: pass --yes to confirm (or --dry-run to see what it would remove); stdin is not a terminal, so it cannot ask',
      );
    }
    const redactor = new Redactor(config.redaction);
    const result = await withOperatorConnection(config, async ({ queue }) => {
      if (dryRun || options.yes) return purgeFailedSnapshot(queue, filter, { dryRun, redactor });
      // What is removed after the question is what the question counted: the same snapshot.
      const snapshot = await snapshotFailedIds(queue);
      const preview = await purgeFailedSnapshot(queue, { ...filter, snapshot }, { dryRun: true, redactor });
      // Nothing to ask about: still the real purge (of nothing), so the report says what was done, not a dry run.
      if (preview.matched === 0) return purgeFailedSnapshot(queue, { ...filter, snapshot }, { redactor });
      const ok = await io.confirm(
        `${operatorContext(config)}remove ${formatCount(preview.matched)} failed ${preview.matched === 1 ? 'entry' : 'entries'}${describeFilter(filter)} for good? [y/N] `,
      );
      if (!ok) throw new UsageError('failed purge: not confirmed; nothing removed');
      return purgeFailedSnapshot(queue, { ...filter, snapshot }, { redactor });
    });
    if (options.json) io.out(resultJson(result));
    else io.out(operatorContext(config) + formatResult('purge', result, filter));
  });
}

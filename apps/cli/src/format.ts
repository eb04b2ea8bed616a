import type { Config } from '@mirrorplane/core';
import { maskRedisUrl } from '@mirrorplane/runtime';

/**
 * Human output conventions (kubectl, docker): a context line first, counts with thousands
 * separators and durations in units a person reads; `--json` keeps raw numbers.
 */

/** `redis://…/0  prefix mirrorplane`: which deployment the output describes. */
export function contextLine(config: Pick<Config, 'redisUrl' | 'prefix'>): string {
  return `Redis ${maskRedisUrl(config.redisUrl)}  prefix ${config.prefix}\n`;
}

/** One shell word: quoted when it holds anything a shell would read specially (`***` globs). */
function shellWord(word: string): string {
  return /^[A-Za-z0-9_./:@,+=%-]+$/.test(word) ? word : `'${word.replace(/'/g, `'\\''`)}'`;
}

/**
 * A command line an operator can paste to look at the same deployment: `mirrorplane <args>
 * --redis-url <url, password masked> --prefix <prefix>`. Always `mirrorplane`, never
 * `npx mirrorplane` (npx outside the repository asks the npm registry for that name).
 */
export function commandHint(args: string, config: Pick<Config, 'redisUrl' | 'prefix'>): string {
  return `mirrorplane ${args} --redis-url ${shellWord(maskRedisUrl(config.redisUrl))} --prefix ${shellWord(config.prefix)}`;
}

const COUNT = new Intl.NumberFormat('en-US');

/** `1,234,567`. */
export function formatCount(n: number): string {
  return COUNT.format(n);
}

/** `850 ms`, `42 s`, `20 min 12 s`, `2 h 5 min`, `3 d 4 h`. */
export function formatDuration(ms: number): string {
  if (ms < 1000) return `${Math.round(ms)} ms`;
  const s = Math.round(ms / 1000);
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  if (s < 86_400) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
  return `${Math.floor(s / 86_400)} d ${Math.floor((s % 86_400) / 3600)} h`;
}

/** Rows under a header, columns padded to their widest cell. */
export function formatTable(header: readonly string[], rows: readonly (readonly string[])[]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: readonly string[]) =>
    cells
      .map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i] ?? 0)))
      .join('  ')
      .trimEnd();
  return [line(header), ...rows.map(line)].join('\n') + '\n';
}

// Medians, tables and the results file every scenario writes.
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, totalmem } from 'node:os';
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

export const RESULTS = fileURLToPath(new URL('../results/', import.meta.url));

/** The load average (1/5/15 min) when the scenario started: how much of the machine it had. */
const LOAD_BEFORE = loadavg()
  .map((l) => l.toFixed(1))
  .join(' ');

/** The commit measured (short hash, `+dirty` with uncommitted changes), or 'unknown' outside git. */
export function commit() {
  const cwd = fileURLToPath(new URL('../../', import.meta.url));
  try {
    const hash = execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd, stdio: ['ignore', 'pipe', 'ignore'] })
      .toString()
      .trim();
    const dirty = execFileSync('git', ['status', '--porcelain', '--untracked-files=no'], { cwd, stdio: ['ignore', 'pipe', 'ignore'] })
      .toString()
      .trim();
    return dirty ? `${hash}+dirty` : hash;
  } catch {
    return 'unknown';
  }
}

export function median(values) {
  const v = values.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (v.length === 0) return NaN;
  const mid = v.length >> 1;
  return v.length % 2 ? v[mid] : (v[mid - 1] + v[mid]) / 2;
}

export function percentile(sorted, p) {
  if (sorted.length === 0) return NaN;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[i];
}

/** Formats rows (arrays of cells) as an aligned text table; the first row is the header. */
export function table(rows) {
  const text = rows.map((r) => r.map((c) => (typeof c === 'number' ? fmt(c) : String(c))));
  const widths = text[0].map((_, i) => Math.max(...text.map((r) => r[i].length)));
  const line = (r) => r.map((c, i) => (i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join('  ');
  return [line(text[0]), widths.map((w) => '-'.repeat(w)).join('  '), ...text.slice(1).map(line)].join('\n');
}

export function fmt(n) {
  if (!Number.isFinite(n)) return '-';
  if (Math.abs(n) >= 1000) return Math.round(n).toLocaleString('en-US');
  if (Math.abs(n) >= 100) return n.toFixed(0);
  if (Math.abs(n) >= 10) return n.toFixed(1);
  return n.toFixed(2);
}

export function machine() {
  let redis = '';
  try {
    redis =
      execFileSync('redis-server', ['--version'])
        .toString()
        .match(/v=(\S+)/)?.[1] ?? '';
  } catch {
    redis = 'unknown';
  }
  let wrk = '';
  try {
    // wrk -v prints its version and exits non-zero.
    execFileSync('/usr/bin/wrk', ['-v'], { stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (error) {
    wrk = String(error.stdout ?? '');
  }
  wrk = /wrk (\S+)/.exec(wrk)?.[0] ?? 'wrk';
  return {
    cpu: `${cpus().length} × ${cpus()[0]?.model ?? 'unknown'}`,
    memoryGiB: Math.round(totalmem() / 2 ** 30),
    node: process.version,
    redis,
    wrk,
    kernel: execFileSync('uname', ['-sr']).toString().trim(),
    // The machine is shared: the load when the run ended says how much it had to itself.
    loadavg: loadavg()
      .map((l) => l.toFixed(1))
      .join(' '),
    loadavgBefore: LOAD_BEFORE,
  };
}

/** Command-line switches shared by every scenario: `--full`, `--json` (write results), `--out <file>`. */
export function parseArgs(argv = process.argv.slice(2)) {
  const out = { full: false, write: false, extra: {} };
  for (let i = 0; i < argv.length; i += 1) {
    const a = argv[i];
    if (a === '--full') out.full = true;
    else if (a === '--json' || a === '--write') out.write = true;
    else if (a.startsWith('--')) {
      const [k, v] = a.slice(2).split('=');
      out.extra[k] = v ?? argv[i + 1];
      if (v === undefined) i += 1;
    }
  }
  return out;
}

export function writeResults(scenario, data, args) {
  if (!args.write) return;
  mkdirSync(RESULTS, { recursive: true });
  const file = `${RESULTS}${scenario}.json`;
  const command = `node bench/${scenario}.mjs${args.full ? ' --full' : ''}${Object.entries(args.extra)
    .map(([k, v]) => ` --${k}=${v}`)
    .join('')}`;
  const header = { scenario, date: new Date().toISOString(), command, full: args.full, commit: commit(), machine: machine() };
  writeFileSync(file, `${JSON.stringify({ ...header, ...data }, null, 2)}\n`);
  console.log(`\nresults written to ${file}`);
}

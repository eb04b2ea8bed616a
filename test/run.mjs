#!/usr/bin/env node
// Runs the test suites with node's test runner: every *.test.ts under the named folders
// (default: unit, fuzz, integration, e2e, reliability, chaos). `node test/run.mjs smoke` runs the fast subset.
//
// Each file runs in its own `node --test` process, `MIRRORPLANE_TEST_CONCURRENCY` (default 2) at a
// time, longest first (by the seconds recorded in test/durations.json), so that the slots finish
// together. Every file has its own Redis on a free port, its own processes, ports and prefixes, so
// files do not share state; what limits pairing is timing:
// - SERIAL files (the fault, chaos and time-bound TLS tests) never run alongside each other: at most
//   one of them at a time, next to at most one other file; one starts whenever none runs;
// - EXCLUSIVE files (a latency bound under 1 s) run first, alone.
// A file's output is printed whole when it ends (outputs never interleave), then a summary of all
// files with the slowest ones. `MIRRORPLANE_TEST_CONCURRENCY=1` runs every file alone, one after
// another. `MIRRORPLANE_TEST_DURATIONS=write` rewrites test/durations.json with the times measured.
import { readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join, dirname, relative } from 'node:path';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const root = dirname(fileURLToPath(import.meta.url));
const suites = process.argv.slice(2).filter((a) => !a.startsWith('-'));
const extra = process.argv.slice(2).filter((a) => a.startsWith('-'));
const folders = suites.length > 0 ? suites : ['unit', 'fuzz', 'integration', 'e2e', 'reliability', 'chaos'];

function collect(dir) {
  let out = [];
  let names = [];
  try {
    names = readdirSync(dir).sort();
  } catch {
    return out;
  }
  for (const name of names) {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) out = out.concat(collect(path));
    else if (name.endsWith('.test.ts')) out.push(path);
  }
  return out;
}

// Reliability and chaos files measure behaviour under faults against deadlines; the three TLS e2e
// files assert how fast connections are cut or processes exit. Two of them side by side would
// compete for the same cores at the moments they measure.
const SERIAL_FOLDERS = new Set(['reliability', 'chaos']);
const SERIAL_FILES = new Set(['e2e/tls-handshake-timeouts.test.ts', 'e2e/tls-ingress-lifecycle.test.ts', 'e2e/tls-ingress-client-certificates.test.ts']);
// The worker's /healthz must answer within 500 ms while a rule scans a crafted path.
const EXCLUSIVE_FILES = new Set(['reliability/rule-cost-bounded.test.ts']);

const width = Math.max(1, Number(process.env.MIRRORPLANE_TEST_CONCURRENCY ?? 2) || 1);
const durationsPath = join(root, 'durations.json');
let recorded = {};
try {
  recorded = JSON.parse(readFileSync(durationsPath, 'utf8'));
} catch {
  recorded = {};
}
// A file not recorded yet is assumed slow, so it starts early rather than last.
const UNKNOWN_SECONDS = 30;

const files = folders
  .flatMap((f) => collect(join(root, f)))
  .map((path) => {
    const name = relative(root, path);
    const kind = EXCLUSIVE_FILES.has(name) ? 'exclusive' : SERIAL_FOLDERS.has(name.split('/')[0]) || SERIAL_FILES.has(name) ? 'serial' : 'parallel';
    return { path, name, kind, estimate: recorded[name] ?? UNKNOWN_SECONDS };
  })
  .sort((a, b) => b.estimate - a.estimate || a.name.localeCompare(b.name));
if (files.length === 0) {
  console.error(`no test files under ${folders.join(', ')}`);
  process.exit(1);
}

const reporter = extra.some((a) => a.startsWith('--test-reporter')) ? [] : [`--test-reporter=${process.stdout.isTTY ? 'spec' : 'tap'}`];
const running = new Set();
let stopping = false;
const results = [];
const started = Date.now();

function runFile(file) {
  const child = spawn(process.execPath, ['--import', 'tsx', '--test', '--test-timeout=600000', ...reporter, ...extra, file.path], {
    env: { ...process.env, NODE_ENV: 'test' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const entry = { file, child, at: Date.now() };
  running.add(entry);
  const chunks = [];
  child.stdout.on('data', (c) => chunks.push(c));
  child.stderr.on('data', (c) => chunks.push(c));
  return new Promise((resolve) => {
    child.on('close', (code, signal) => {
      running.delete(entry);
      const seconds = (Date.now() - entry.at) / 1000;
      const output = Buffer.concat(chunks).toString('utf8');
      const counts = {};
      for (const m of output.matchAll(/^(?:# |ℹ )(tests|pass|fail|cancelled|skipped|todo) (\d+)$/gm)) counts[m[1]] = (counts[m[1]] ?? 0) + Number(m[2]);
      const ok = code === 0;
      process.stdout.write(`\n# ── ${file.name} (${file.kind}, ${seconds.toFixed(1)} s, ${ok ? 'ok' : `FAILED: exit ${code ?? signal}`})\n${output}`);
      results.push({ file, seconds, ok, counts });
      resolve();
    });
  });
}

// The next file a free slot may start, or undefined when none may start now. A serial file goes
// first whenever none runs: together they are the longest chain, so it must never wait.
function next(queue) {
  if (stopping || running.size >= width) return undefined;
  const serialBusy = [...running].some((e) => e.file.kind === 'serial');
  let index = serialBusy ? -1 : queue.findIndex((f) => f.kind === 'serial');
  if (index === -1) index = queue.findIndex((f) => f.kind === 'parallel');
  return index === -1 ? undefined : queue.splice(index, 1)[0];
}

// A signal stops the files running (passed on to them) and starts no other.
for (const signal of ['SIGINT', 'SIGTERM']) {
  process.on(signal, () => {
    stopping = true;
    for (const e of running) e.child.kill(signal);
    process.exitCode = 130;
  });
}

// Exclusive files first, alone; then the others, `width` at a time.
for (const file of files.filter((f) => f.kind === 'exclusive')) if (!stopping) await runFile(file);
const queue = files.filter((f) => f.kind !== 'exclusive');
await new Promise((resolve) => {
  const fill = () => {
    if ((stopping || queue.length === 0) && running.size === 0) return resolve();
    for (let file = next(queue); file !== undefined; file = next(queue)) void runFile(file).then(fill);
  };
  fill();
});

const total = { tests: 0, pass: 0, fail: 0, cancelled: 0, skipped: 0, todo: 0 };
for (const r of results) for (const k of Object.keys(total)) total[k] += r.counts[k] ?? 0;
const failed = results.filter((r) => !r.ok);
const wall = (Date.now() - started) / 1000;
console.log(
  `\n# files ${results.length}, failed ${failed.length}; ${Object.entries(total)
    .map(([k, v]) => `${k} ${v}`)
    .join(', ')}; ${wall.toFixed(1)} s at width ${width}`,
);
console.log('# slowest files:');
for (const r of [...results].sort((a, b) => b.seconds - a.seconds).slice(0, 10))
  console.log(`#   ${r.seconds.toFixed(1).padStart(6)} s  ${r.file.name} (${r.file.kind})`);
for (const r of failed) console.log(`# FAILED ${r.file.name}`);
if (process.env.MIRRORPLANE_TEST_DURATIONS === 'write') {
  const durations = { ...recorded };
  for (const r of results) durations[r.file.name] = Math.round(r.seconds * 10) / 10;
  const sorted = Object.fromEntries(Object.entries(durations).sort(([a], [b]) => a.localeCompare(b)));
  writeFileSync(durationsPath, `${JSON.stringify(sorted, null, 2)}\n`);
}
if (process.exitCode === undefined) process.exitCode = failed.length > 0 ? 1 : 0;

#!/usr/bin/env node
// Runs the test suites with node's test runner: every *.test.ts under the named folders
// (default: unit, fuzz, integration, e2e, reliability, chaos). `node test/run.mjs smoke` runs the fast subset.
import { readdirSync, statSync } from 'node:fs';
import { join, dirname } from 'node:path';
import { spawnSync } from 'node:child_process';
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

// Files of these folders run two at a time (each has its own Redis on a free port, its own
// processes and random prefixes); the rest one at a time: reliability and chaos measure
// timing under faults, e2e drives nginx, and competition would only make them flaky.
// MIRRORPLANE_TEST_CONCURRENCY=1 runs every file serially (for a machine that cannot spare it).
const PARALLEL = new Set(['unit', 'fuzz', 'integration', 'smoke']);
const width = Math.max(1, Number(process.env.MIRRORPLANE_TEST_CONCURRENCY ?? 2) || 1);
const lanes = [
  { concurrency: width, files: folders.filter((f) => PARALLEL.has(f)).flatMap((f) => collect(join(root, f))) },
  { concurrency: 1, files: folders.filter((f) => !PARALLEL.has(f)).flatMap((f) => collect(join(root, f))) },
].filter((lane) => lane.files.length > 0);
if (lanes.length === 0) {
  console.error(`no test files under ${folders.join(', ')}`);
  process.exit(1);
}
let status = 0;
for (const lane of lanes) {
  const result = spawnSync(
    process.execPath,
    ['--import', 'tsx', '--test', `--test-concurrency=${lane.concurrency}`, '--test-timeout=600000', ...extra, ...lane.files],
    { stdio: 'inherit', env: { ...process.env, NODE_ENV: 'test' } },
  );
  if (result.status !== 0) status = result.status ?? 1;
}
process.exit(status);

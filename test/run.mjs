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

const files = folders.flatMap((f) => collect(join(root, f)));
if (files.length === 0) {
  console.error(`no test files under ${folders.join(', ')}`);
  process.exit(1);
}
// One file at a time: each spawns real Redis, nginx and node processes, and a 2-core
// machine runs them reliably only without competition.
const result = spawnSync(process.execPath, ['--import', 'tsx', '--test', '--test-concurrency=1', '--test-timeout=600000', ...extra, ...files], {
  stdio: 'inherit',
  env: { ...process.env, NODE_ENV: 'test' },
});
process.exit(result.status ?? 1);

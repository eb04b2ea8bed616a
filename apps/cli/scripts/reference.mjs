#!/usr/bin/env node
// Rewrites the command reference sections of README.md and docs/OPERATIONS.md from
// `--help` (build first: npx tsc -b). Without --write, exits 1 when they are out of date.
import { readFileSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { helpReference, replaceSection, synopsisReference } from '../lib/reference.js';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');
const write = process.argv.includes('--write');
let stale = false;
for (const [file, name, body] of [
  ['README.md', 'cli-synopsis', synopsisReference()],
  ['docs/OPERATIONS.md', 'cli-reference', helpReference()],
]) {
  const path = join(root, file);
  const text = readFileSync(path, 'utf8');
  const next = replaceSection(text, name, body);
  if (next === text) continue;
  stale = true;
  if (write) writeFileSync(path, next);
  process.stderr.write(`${write ? 'updated' : 'out of date'}: ${file} (${name})\n`);
}
process.exit(stale && !write ? 1 : 0);

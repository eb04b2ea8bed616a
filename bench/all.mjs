#!/usr/bin/env node
// `npm run bench`: the quick version of every scenario, one after the other (never two at
// once: they would measure each other), each writing bench/results/<scenario>.json, then the
// report (docs/BENCHMARKS.md results and the SVG plot). Extra arguments (--full) pass through.
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const dir = fileURLToPath(new URL('./', import.meta.url));
const extra = process.argv.slice(2);
const scenarios = ['redis-memory', 'ingress', 'ingress-tls', 'h2c', 'worker', 'order-cost', 'whole-chain', 'end-to-end', 'soak', 'scaling'];
let failed = 0;
for (const name of scenarios) {
  console.log(`\n=== ${name} ===\n`);
  const result = spawnSync(process.execPath, [`${dir}${name}.mjs`, '--json', ...extra], { stdio: 'inherit' });
  if (result.status !== 0) {
    failed += 1;
    console.error(`${name} failed (exit ${result.status ?? result.signal})`);
  }
}
spawnSync(process.execPath, [`${dir}report.mjs`], { stdio: 'inherit' });
process.exit(failed > 0 ? 1 : 0);

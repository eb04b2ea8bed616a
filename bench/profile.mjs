#!/usr/bin/env node
// Summarises a V8 CPU profile (`node --cpu-prof`, or `--cpu-prof=DIR` of bench/ingress.mjs and
// bench/worker.mjs): where the busy time went, by function, self and inclusive, idle excluded.
//
//   node bench/profile.mjs FILE.cpuprofile [--skip=MS] [--top=N] [--per=COUNT]
//
// --skip=MS leaves out the first MS milliseconds (start-up, warm-up); --per=COUNT also prints
// microseconds per request or entry (COUNT of them handled in the profiled window).
// Native frames (a system call such as `writev`, the garbage collector) are reported by V8 as
// the time spent in them while sampled: wall time on the thread, not CPU alone.
import { readFileSync } from 'node:fs';
import { parseArgs } from './support/report.mjs';

const args = parseArgs();
const file = process.argv.slice(2).find((a) => !a.startsWith('--'));
if (!file) {
  console.error('usage: node bench/profile.mjs FILE.cpuprofile [--skip=MS] [--top=N] [--per=COUNT]');
  process.exit(2);
}
const skipUs = Number(args.extra.skip ?? 0) * 1000;
const top = Number(args.extra.top ?? 30);
const per = Number(args.extra.per ?? 0);

const profile = JSON.parse(readFileSync(file, 'utf8'));
const nodes = new Map(profile.nodes.map((n) => [n.id, n]));
const parent = new Map();
for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
const name = (id) => {
  const f = nodes.get(id).callFrame;
  const where = f.url ? `${f.url.split('/').slice(-2).join('/')}:${f.lineNumber + 1}` : 'native';
  return `${f.functionName || '(anonymous)'} ${where}`;
};

const selfTime = new Map();
let at = profile.startTime;
let busy = 0;
for (let i = 0; i < profile.samples.length; i++) {
  at += profile.timeDeltas[i];
  if (at - profile.startTime < skipUs) continue;
  const id = profile.samples[i];
  if (nodes.get(id).callFrame.functionName === '(idle)') continue;
  const dt = profile.timeDeltas[i];
  busy += dt;
  selfTime.set(id, (selfTime.get(id) ?? 0) + dt);
}
const self = new Map();
const inclusive = new Map();
for (const [id, dt] of selfTime) {
  self.set(name(id), (self.get(name(id)) ?? 0) + dt);
  const seen = new Set();
  for (let cur = id; cur !== undefined; cur = parent.get(cur)) {
    const key = name(cur);
    if (seen.has(key)) continue;
    seen.add(key);
    inclusive.set(key, (inclusive.get(key) ?? 0) + dt);
  }
}
const show = (title, map) => {
  console.log(`\n${title}`);
  for (const [key, us] of [...map].sort((a, b) => b[1] - a[1]).slice(0, top)) {
    const share = `${((us / busy) * 100).toFixed(1)}%`.padStart(7);
    console.log(`${share}${per > 0 ? `${(us / per).toFixed(2).padStart(9)} µs` : ''}  ${key}`);
  }
};
if (busy === 0) {
  console.error(`no busy samples after --skip=${skipUs / 1000} ms: the profile covers ${((at - profile.startTime) / 1000).toFixed(0)} ms in all; skip less`);
  process.exit(2);
}
console.log(`busy ${(busy / 1000).toFixed(0)} ms${per > 0 ? ` = ${(busy / per).toFixed(2)} µs per item of ${per}` : ''}`);
show('self time', self);
show('inclusive time', inclusive);

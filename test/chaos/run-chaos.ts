// `npm run chaos -- --minutes 30 --seed N [--workers 3] [--rate 80]`: one long chaos run.
// Prints the seed and the schedule first, the faults as they happen, then the figures and
// every violation; exits 1 when there is one. The same seed plans the same schedule.
import { parseArgs } from 'node:util';
import { runChaos } from './harness.js';

const { values } = parseArgs({
  options: {
    minutes: { type: 'string', default: '30' },
    seconds: { type: 'string' },
    seed: { type: 'string' },
    workers: { type: 'string', default: '2' },
    rate: { type: 'string', default: '80' },
    tail: { type: 'string', default: '30' },
  },
});
const seed = values.seed === undefined ? Math.floor(Math.random() * 2 ** 31) : Number(values.seed);
const minutes = values.seconds === undefined ? Number(values.minutes) : Number(values.seconds) / 60;
if (!Number.isInteger(seed) || !(minutes > 0)) {
  console.error('usage: npm run chaos -- --minutes <m> (or --seconds <s>) --seed <integer> [--workers n] [--rate req/s] [--tail s]');
  process.exit(2);
}
const started = Date.now();
const replay = `npm run chaos -- --seconds ${Math.round(minutes * 60)} --seed ${seed} --workers ${values.workers} --rate ${values.rate} --tail ${values.tail}`;
console.log(`chaos run: seed ${seed}, ${minutes} min of faults (replay: ${replay})`);
const report = await runChaos({
  seed,
  durationMs: Math.round(minutes * 60_000),
  tailMs: Number(values.tail) * 1000,
  workers: Number(values.workers),
  rate: Number(values.rate),
  log: (line) => console.log(line),
});
const { schedule: _schedule, violations, ...figures } = report;
console.log(JSON.stringify(figures, null, 2));
console.log(`took ${((Date.now() - started) / 60_000).toFixed(1)} min`);
if (violations.length > 0) {
  console.log(`\n${violations.length} violation(s) (replay: ${replay}):`);
  for (const v of violations) console.log(`- ${v}`);
  process.exit(1);
}
console.log('no violations');

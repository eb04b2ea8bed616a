import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { describeSchedule, planSchedule, type FaultKind } from './schedule.js';

const KINDS: FaultKind[] = ['worker-kill', 'worker-term', 'ingress-kill', 'redis-pause', 'redis-restart', 'redis-maxmemory'];

test('a chaos schedule is a function of its seed: the same seed plans the same run, another seed another', () => {
  fc.assert(
    fc.property(fc.integer({ min: 0, max: 2 ** 31 - 1 }), fc.integer({ min: 10_000, max: 3_600_000 }), (seed, durationMs) => {
      const a = planSchedule(seed, durationMs);
      assert.deepEqual(planSchedule(seed, durationMs), a);
      assert.equal(describeSchedule(planSchedule(seed, durationMs)), describeSchedule(a));
    }),
    { numRuns: 50 },
  );
  assert.notDeepEqual(planSchedule(1, 600_000).faults, planSchedule(2, 600_000).faults);
});

test('a chaos schedule: faults one at a time inside the run, every kind once the run is long enough, staging phases covering it from a fast start', () => {
  fc.assert(
    fc.property(fc.integer({ min: 0, max: 2 ** 31 - 1 }), fc.integer({ min: 5_000, max: 3_600_000 }), (seed, durationMs) => {
      const { faults, staging } = planSchedule(seed, durationMs);
      let end = 0;
      for (const f of faults) {
        assert.ok(f.at >= end + 1000 || end === 0, `a fault starts at least 1 s after the previous one ended: ${f.at} after ${end}`);
        assert.ok(f.ms > 0 && f.at + f.ms <= durationMs, `inside the run: ${f.at}+${f.ms} of ${durationMs}`);
        end = f.at + f.ms;
      }
      // Six faults of at most 6 s with gaps of at most 5 s, after a start of at most 4 s.
      if (durationMs >= 4000 + 6 * (6000 + 5000)) assert.deepEqual(new Set(faults.slice(0, 6).map((f) => f.kind)), new Set(KINDS));
      assert.equal(staging[0]?.mode, 'fast');
      let t = 0;
      for (const p of staging) {
        assert.equal(p.at, t);
        assert.ok(p.ms > 0);
        t += p.ms;
      }
      assert.equal(t, durationMs);
    }),
    { numRuns: 200 },
  );
});

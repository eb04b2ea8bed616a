import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { MappingPendingError, StagingStatusError } from '@mirrorplane/core';
import { nextRetryDelay, retryCap, retryPolicyOf, type RetryPolicy } from '../../apps/worker/src/retry-schedule.js';
import { classifyReplay } from '../../apps/worker/src/replay-outcome.js';

// Issue 11, fault 5: the retry schedule is a documented policy (docs/RELIABILITY.md, "Retry policy").

const policy = fc.record({
  initialDelayMs: fc.integer({ min: 1, max: 100_000 }),
  maxDelayMs: fc.integer({ min: 1, max: 1_000_000 }),
  windowMs: fc.integer({ min: 0, max: 30 * 86_400_000 }),
  maxAttempts: fc.integer({ min: 0, max: 200 }),
});

test('every delay is within [cap/2, cap], cap = min(initial·2^(n-1), max), and no try starts after the window', () => {
  fc.assert(
    fc.property(
      policy,
      fc.integer({ min: 1, max: 10_000 }),
      fc.integer({ min: 0, max: 40 * 86_400_000 }),
      fc.double({ min: 0, max: 1, maxExcluded: true, noNaN: true }),
      (p, attempt, elapsed, random) => {
        const first = 1_700_000_000_000;
        const now = first + elapsed;
        const delay = nextRetryDelay(p, attempt, first, now, random);
        const cap = Math.min(p.initialDelayMs * 2 ** (attempt - 1), p.maxDelayMs);
        assert.equal(retryCap(p, attempt), cap);
        if (p.maxAttempts > 0 && attempt >= p.maxAttempts) {
          assert.equal(delay, null, 'the try cap is spent');
          return;
        }
        const candidate = Math.round(cap / 2 + (cap / 2) * random);
        if (now + candidate > first + p.windowMs) {
          assert.equal(delay, null, 'the window is spent');
          return;
        }
        assert.notEqual(delay, null);
        assert.ok(delay! >= Math.floor(cap / 2) && delay! <= cap, `${delay} in [${cap / 2}, ${cap}]`);
        assert.ok(delay! <= p.maxDelayMs);
        assert.ok(now + delay! <= first + p.windowMs);
      },
    ),
    { numRuns: 2000 },
  );
});

test('a whole schedule: tries keep coming until the window, each gap ≤ the max delay, the last inside the window', () => {
  fc.assert(
    fc.property(
      policy.filter((p) => p.windowMs <= 3_600_000),
      fc.infiniteStream(fc.double({ min: 0, max: 1, maxExcluded: true, noNaN: true })),
      (p, randoms) => {
        const first = 0;
        let now = first;
        let attempt = 1;
        const it = randoms[Symbol.iterator]();
        for (;;) {
          const delay = nextRetryDelay(p, attempt, first, now, it.next().value as number);
          if (delay === null) break;
          assert.ok(delay <= p.maxDelayMs);
          now += delay;
          attempt += 1;
          assert.ok(now <= p.windowMs, 'no try after the window');
          if (attempt > 100_000) assert.fail('unbounded');
        }
        // The schedule ended because the try cap or the window was reached, never earlier: a step
        // of the longest possible delay would leave the window.
        if (!(p.maxAttempts > 0 && attempt >= p.maxAttempts)) {
          assert.ok(now + retryCap(p, attempt) > p.windowMs, `ended early at ${now} of ${p.windowMs}`);
        }
      },
    ),
    { numRuns: 300 },
  );
});

test('the defaults: about 10 minutes of tries, delays capped at 30 s', () => {
  const p = retryPolicyOf({ replayBackoffMs: 1000, retryMaxDelayMs: 30_000, retryWindowMs: 600_000, replayAttempts: 0 });
  let now = 0;
  let attempt = 1;
  for (let d = nextRetryDelay(p, attempt, 0, now, 0.5); d !== null; d = nextRetryDelay(p, attempt, 0, now, 0.5)) {
    now += d;
    attempt += 1;
  }
  assert.ok(now > 570_000 && now <= 600_000, `last try at ${now} ms`);
  assert.ok(attempt >= 20 && attempt <= 45, `${attempt} tries`);
});

test('classifyReplay: one verdict per kind of result, for both paths', () => {
  const p: RetryPolicy = { initialDelayMs: 100, maxDelayMs: 1000, windowMs: 10_000, maxAttempts: 0 };
  assert.deepEqual(classifyReplay({ ok: true, outcome: { kind: 'replayed', status: 204, ms: 3 } }, 1, p, 0, 3, 0), { kind: 'replayed', status: 204, ms: 3 });
  assert.deepEqual(classifyReplay({ ok: true, outcome: { kind: 'dropped' } }, 1, p, 0, 3, 0), { kind: 'dropped' });
  assert.equal(classifyReplay({ ok: false, error: new MappingPendingError(250, 'order', 'ord_1') }, 1, p, 0, 3, 0).kind, 'later');
  const retryable = new StagingStatusError(503);
  const retry = classifyReplay({ ok: false, error: retryable }, 1, p, 0, 3, 0);
  assert.equal(retry.kind, 'retry');
  assert.equal(classifyReplay({ ok: false, error: retryable }, 5, p, 0, 3, 9_999).kind, 'failed', 'window spent');
  const unretryable = classifyReplay({ ok: false, error: new Error('boom') }, 1, p, 0, 3, 0);
  assert.deepEqual(unretryable, { kind: 'failed', reason: 'unretryable', message: 'boom', ms: 3 });
  assert.equal(classifyReplay({ ok: false, error: Object.assign(new Error('post'), { completed: true }) }, 1, p, 0, 3, 0).kind, 'post-error');
});

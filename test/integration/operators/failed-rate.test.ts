import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import type { Status } from '@mirrorplane/runtime';
import { RateWindow } from '../../../apps/cli/src/status-watch.js';
import { RecordingServer, RedisServer, Stack, waitFor } from '../../helpers/index.js';

// Issue 15 ("never lie"): failed/s in `status --watch` and the dashboard (both use
// RateWindow). Observed on a quiet deployment with 31 failed entries, frames 0.2 s apart:
// "failedPerSec": 154.2 — the whole failed set counted as failing in one interval.

function status(failed: number): Status {
  return { backlog: 0, pending: 0, retrying: 0, failed, replayed: 0, accepted: 0, oldestBacklogAgeMs: null, consumers: [] };
}

test('RateWindow: a failed set that does not change gives failed/s 0, whatever its size', () => {
  fc.assert(
    fc.property(fc.integer({ min: 1, max: 1_000_000 }), fc.integer({ min: 2, max: 8 }), (size, frames) => {
      const w = new RateWindow();
      let last: number | null = null;
      for (let i = 0; i < frames; i++) last = w.add(status(size), 1_000 * (i + 1)).failedPerSec;
      return last === 0;
    }),
    { numRuns: 100 },
  );
});

test('RateWindow: failures after a purge are counted (the set shrank, then grew again)', () => {
  fc.assert(
    fc.property(fc.integer({ min: 1, max: 10_000 }), fc.integer({ min: 1, max: 1_000 }), (before, newFailures) => {
      const w = new RateWindow();
      w.add(status(before), 1_000);
      w.add(status(before), 2_000); // quiet
      w.add(status(0), 3_000); // failed purge --yes
      const frame = w.add(status(newFailures), 4_000); // newFailures failed in the last second
      // Over the 3 s window, newFailures entries reached the failed set.
      return frame.failedPerSec === newFailures / 3;
    }),
    { numRuns: 100 },
  );
});

let redis: RedisServer;
let staging: RecordingServer;
let stack: Stack;

before(async () => {
  redis = await RedisServer.start();
  staging = await RecordingServer.start((_req, res) => void res.writeHead(500).end());
  stack = await Stack.start({ redis, stagingUrl: staging.url, env: { REPLAY_ATTEMPTS: '1' } });
  for (let i = 0; i < 20; i++) assert.equal((await fetch(`http://127.0.0.1:${stack.ingressPort}/r/${i}`, { method: 'POST', body: 'x' })).status, 200);
  await waitFor('20 failed', async () => (await stack.status()).failed === 20, 120_000, 200);
});

after(async () => {
  await stack?.close();
  await staging?.close();
  await redis?.close();
});

test('status --watch --json on a quiet deployment with 20 failed entries reports failed/s 0', async () => {
  const r = await stack.cli(['status', '--watch', '--json', '--interval', '0.5', '--count', '4']);
  assert.equal(r.code, 0, r.stderr);
  const frames = r.stdout
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as { failed: number; failedPerSec: number | null });
  assert.deepEqual(
    frames.map((f) => f.failed),
    [20, 20, 20, 20],
  );
  assert.deepEqual(
    frames.slice(1).map((f) => f.failedPerSec),
    [0, 0, 0],
    'nothing failed during the watch',
  );
});

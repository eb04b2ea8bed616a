import { test } from 'node:test';
import assert from 'node:assert/strict';
import { MirrorplaneProcess, RecordingServer, RedisServer, Stack, waitFor, useStack } from '../helpers/index.js';
import { RateWindow, formatDuration } from '../../apps/cli/src/status-watch.js';

let redis: RedisServer;
useStack({}, (s) => {
  redis = s.redis;
});

const base = { backlog: 0, pending: 0, retrying: 0, failed: 0, replayed: 0, accepted: 0, oldestBacklogAgeMs: null, consumers: [] };

test('rates come from the readings of the last ten seconds; the drain estimate from the backlog slope', () => {
  const w = new RateWindow();
  const first = w.add({ ...base, backlog: 100, accepted: 100 }, 0);
  assert.equal(first.replayedPerSec, null, 'no rate from one reading');
  const second = w.add({ ...base, backlog: 80, accepted: 110, replayed: 30, failed: 2 }, 2000);
  assert.equal(second.acceptedPerSec, 5);
  assert.equal(second.replayedPerSec, 15);
  assert.equal(second.failedPerSec, 1);
  assert.equal(second.drainSeconds, 8, '80 left, shrinking by 10/s');
  // The failed set shrinking (a replay of failed entries) is not a negative rate.
  const third = w.add({ ...base, backlog: 90, accepted: 130, replayed: 40, failed: 0 }, 4000);
  assert.equal(third.failedPerSec, 0.5);
  assert.equal(third.drainSeconds, 36, '90 left, shrinking by 2.5/s over the window');
  const growing = w.add({ ...base, backlog: 200, accepted: 300, replayed: 40 }, 6000);
  assert.equal(growing.drainSeconds, null, 'a growing backlog never drains');
  assert.equal(w.add({ ...base, backlog: 0, accepted: 300, replayed: 300 }, 20_000).drainSeconds, 0);
  assert.equal(formatDuration(42), '42 s');
  assert.equal(formatDuration(125), '2 min 5 s');
  assert.equal(formatDuration(7500), '2 h 5 min');
});

test('status --watch refreshes with rates and an estimate of the time to drain the backlog', async () => {
  let release = false;
  // Staging holds every answer until the test has seen a backlog, then answers in 25 ms: the
  // drain then spans several frames however fast the machine is (200 entries, 2 at a time).
  const staging = await RecordingServer.start(async (_req, res) => {
    await waitFor('release', () => release, 60_000, 10);
    await new Promise((r) => setTimeout(r, 25));
    res.writeHead(200).end();
  });
  const stack = await Stack.start({ redis, stagingUrl: staging.url, env: { WORKER_CONCURRENCY: '2' } });
  try {
    for (let i = 0; i < 200; i++) {
      assert.equal((await fetch(`http://127.0.0.1:${stack.ingressPort}/w/${i}`, { method: 'POST', body: String(i) })).status, 200);
    }
    const watch = new MirrorplaneProcess(['status', '--watch', '--json', '--interval', '0.25', '--count', '400'], stack.env);
    try {
      const frames = () =>
        watch.stdout
          .split('\n')
          .filter((l) => l.startsWith('{'))
          .map((l) => JSON.parse(l) as Record<string, number | null>);
      await waitFor('two frames with the backlog', () => frames().filter((f) => (f.backlog as number) > 150).length >= 2);
      const first = frames()[0]!;
      assert.equal(first.accepted, 200);
      assert.equal(first.acceptedPerSec, null);
      release = true;
      const draining = await waitFor(
        'a frame with a drain estimate',
        () => frames().find((f) => typeof f.drainSeconds === 'number' && (f.backlog as number) > 0),
        60_000,
      );
      assert.ok((draining.replayedPerSec as number) > 0, 'replays per second while draining');
      assert.ok((draining.drainSeconds as number) > 0);
      await waitFor('a frame with the backlog drained', () => frames().find((f) => f.backlog === 0 && f.pending === 0 && f.drainSeconds === 0), 60_000);
    } finally {
      await watch.stop('SIGINT');
    }
    assert.equal(watch.stderr, '');

    const text = await stack.cli(['status', '--watch', '--interval', '0.2', '--count', '2']);
    assert.equal(text.code, 0, text.stderr);
    assert.equal(text.stdout.match(/^mirrorplane status {2}\d{4}-/gm)?.length, 2, 'two frames');
    assert.match(text.stdout, /accepted\/s {2}0\.0 {3}replayed\/s {2}0\.0 {3}failed\/s {2}0\.0/);
    assert.match(text.stdout, /backlog {5}empty/);
    const bad = await stack.cli(['status', '--watch', '--interval', 'soon']);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /--interval: expected seconds/);
  } finally {
    release = true;
    await stack.close();
    await staging.close();
  }
});

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { RedisServer, metric, sequentialLoad as load, startIngress, storedIds, untilReady, waitFor, type LoadOutcome } from '../helpers/index.js';

/**
 * Issue #17: appends with their deadline in the ingress's ExpiryQueue, under a Redis restarted
 * mid-load, with APPEND_TIMEOUT_MS at its minimum (10 ms), and under sustained timeouts (the
 * deadline's timing is in append-deadlines.test.ts).
 * Every 200 is stored exactly once; each request gets one answer; /metrics (accepted, dropped
 * by reason) add up to what the clients got; RSS stays flat.
 */

async function countersMatch(adminPort: number, outcomes: Map<string, LoadOutcome>, acceptedBefore: number, droppedBefore: Record<string, number>) {
  const got = { accepted: 0, dropped: {} as Record<string, number> };
  for (const o of outcomes.values()) {
    if (o.status === 200) got.accepted += 1;
    else if (o.reason !== null) got.dropped[o.reason] = (got.dropped[o.reason] ?? 0) + 1;
  }
  assert.equal(
    (await metric(adminPort, 'mirrorplane_ingress_requests_accepted_total')) - acceptedBefore,
    got.accepted,
    'accepted counter = 200s the clients got',
  );
  for (const [reason, n] of Object.entries(got.dropped)) {
    const counted = (await metric(adminPort, `mirrorplane_ingress_requests_dropped_total{reason="${reason}"}`)) - (droppedBefore[reason] ?? 0);
    assert.equal(counted, n, `dropped{reason="${reason}"} = the 503s with that reason the clients got`);
  }
}

test('Redis (AOF, appendfsync always) killed and restarted mid-load: every 200 stored exactly once, one answer each, counters match', async (t) => {
  const redis = await RedisServer.start({ appendOnly: true });
  const { ingress, port, adminPort, stream } = await startIngress(redis.url, { APPEND_TIMEOUT_MS: '1500' });
  try {
    const l = load(port, 8, 'rs');
    await waitFor('some load', () => l.outcomes.size > 100);
    const acceptedBeforeRestart = [...l.outcomes.values()].filter((o) => o.status === 200).length;
    const cut = new Set(l.outcomes.keys());
    await redis.stop('SIGKILL');
    await new Promise((r) => setTimeout(r, 700));
    await redis.start();
    await waitFor('accepting again', () => [...l.outcomes.entries()].some(([id, o]) => !cut.has(id) && o.status === 200), 60_000);
    await waitFor('more load after the restart', () => l.outcomes.size > cut.size + 200, 60_000);
    await l.stop();
    const after = await storedIds(redis, stream);
    const statuses = [...l.outcomes.values()];
    t.diagnostic(
      `${statuses.length} requests, ${acceptedBeforeRestart} accepted before the restart; non-200: ${JSON.stringify(Object.fromEntries([...new Set(statuses.filter((s) => s.status !== 200).map((s) => `${s.status} ${s.reason}`))].map((k) => [k, statuses.filter((s) => `${s.status} ${s.reason}` === k).length])))}`,
    );
    for (const [id, o] of l.outcomes) {
      if (o.status === 200) assert.equal(after.get(id), 1, `${id} answered 200, stored ${after.get(id) ?? 0} times`);
      else assert.ok((after.get(id) ?? 0) <= 1, `${id} stored ${after.get(id)} times`);
      assert.notEqual(o.status, 0, `${id} got no answer: ${o.reason}`);
    }
    await countersMatch(adminPort, l.outcomes, 0, {});
  } finally {
    await ingress.stop('SIGKILL');
    await redis.close();
  }
});

test('APPEND_TIMEOUT_MS=10 (its minimum) on a healthy Redis under load: one answer each, counters match, every 200 stored once', async (t) => {
  const redis = await RedisServer.start();
  const { ingress, port, adminPort, stream } = await startIngress(redis.url, { APPEND_TIMEOUT_MS: '10' });
  try {
    const l = load(port, 16, 'tiny', 64 * 1024);
    await waitFor('load', () => l.outcomes.size > 1500, 120_000);
    await l.stop();
    const stored = await storedIds(redis, stream);
    const statuses = [...l.outcomes.values()];
    const refusedStored = [...l.outcomes].filter(([id, o]) => o.status === 503 && stored.has(id)).length;
    t.diagnostic(
      `${statuses.length} requests: ${statuses.filter((s) => s.status === 200).length} × 200, ${statuses.filter((s) => s.status === 503).length} × 503 (${refusedStored} of them stored anyway)`,
    );
    for (const [id, o] of l.outcomes) {
      assert.notEqual(o.status, 0, `${id} got no answer: ${o.reason}`);
      if (o.status === 200) assert.equal(stored.get(id), 1, `${id}: 200 but stored ${stored.get(id) ?? 0} times`);
    }
    await countersMatch(adminPort, l.outcomes, 0, {});
  } finally {
    await ingress.stop('SIGKILL');
    await redis.close();
  }
});

test('sustained append timeouts at a high request rate (Redis hung 8 s, APPEND_TIMEOUT_MS=500): RSS stays flat, answers stay immediate', async (t) => {
  const redis = await RedisServer.start();
  const { ingress, port, adminPort } = await startIngress(redis.url, { APPEND_TIMEOUT_MS: '500' });
  const rss = () => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${ingress.child.pid}/status`, 'utf8'))?.[1]) * 1024;
  try {
    const warm = load(port, 8, 'warm', 16 * 1024);
    await waitFor('warm', () => warm.outcomes.size > 300);
    await warm.stop();
    redis.signal('SIGSTOP');
    const l = load(port, 16, 'hung', 16 * 1024);
    const samples: number[] = [];
    const t0 = Date.now();
    while (Date.now() - t0 < 8000) {
      await new Promise((r) => setTimeout(r, 500));
      samples.push(rss());
    }
    await l.stop();
    redis.signal('SIGCONT');
    const statuses = [...l.outcomes.values()];
    const third = Math.floor(samples.length / 3);
    const middle = Math.max(...samples.slice(third, 2 * third));
    const last = Math.max(...samples.slice(2 * third));
    t.diagnostic(`${statuses.length} requests during the hang; RSS MiB ${samples.map((s) => (s / 1048576).toFixed(0)).join(' ')}`);
    assert.ok(statuses.length > 100);
    assert.ok(statuses.every((s) => s.status === 503));
    assert.ok(last < middle * 1.25 + 8 * 1048576, `RSS grew from ${middle} to ${last}`);
    await untilReady(adminPort);
    await countersMatch(adminPort, l.outcomes, [...warm.outcomes.values()].filter((o) => o.status === 200).length, {});
  } finally {
    redis.signal('SIGCONT');
    await ingress.stop('SIGKILL');
    await redis.close();
  }
});

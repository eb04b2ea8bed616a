import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { encodeEntryFields, headerValue, keysFor } from '@mirrorplane/core';
import { MirrorplaneProcess, RecordingServer, RedisServer, waitFor, type Received } from '../helpers/index.js';
import { InProcessWorker } from '../helpers/in-process-worker.js';

// Per-key ordering (ORDER_BY): 50 sessions × 20 requests, interleaved in the stream, replayed by
// 3 workers at concurrency 64 to a staging that answers after a random delay. Each session's
// requests must arrive in stream order, each after the previous one's answer. The same run
// without ORDER_BY must reorder some session, or this test could not fail.

const SESSIONS = 50;
const PER_SESSION = 20;

let redis: RedisServer;

before(async () => {
  redis = await RedisServer.start();
});

after(async () => {
  await redis?.close();
});

/** Appends request i of every session, for i = 0…PER_SESSION-1: a session's requests are spread over the stream. */
async function appendSessions(prefix: string): Promise<void> {
  const client = redis.client();
  const keys = keysFor(prefix);
  for (let i = 0; i < PER_SESSION; i++) {
    const pipeline = client.pipeline();
    for (let s = 0; s < SESSIONS; s++) {
      pipeline.xadd(
        keys.stream,
        '*',
        ...encodeEntryFields({
          method: 'PUT',
          target: `/s${s}/${i}`,
          rawHeaders: ['Host', 'app.test', 'X-Session', `s${s}`, 'Content-Length', '0'],
          body: Buffer.alloc(0),
          receivedAt: Date.now(),
          requestId: `s${s}-${i}`,
          clientAddress: '127.0.0.1',
        }),
      );
    }
    await pipeline.exec();
  }
  client.disconnect();
}

/** A staging that answers after 0-25 ms at random, noting when each request arrived and when its answer went. */
async function randomStaging(): Promise<{ server: RecordingServer; answeredAt: Map<Received, number>; maxInFlight: () => number }> {
  const answeredAt = new Map<Received, number>();
  let inFlight = 0;
  let most = 0;
  const server = await RecordingServer.start(async (req, res) => {
    inFlight++;
    most = Math.max(most, inFlight);
    await new Promise((r) => setTimeout(r, Math.random() ** 2 * 25));
    inFlight--;
    answeredAt.set(req, Date.now());
    res.writeHead(200).end('ok');
  });
  return { server, answeredAt, maxInFlight: () => most };
}

/** Each session's arrivals in arrival order: request numbers, and the received requests. */
function bySession(received: readonly Received[]): Map<string, Received[]> {
  const out = new Map<string, Received[]>();
  for (const r of received) {
    const s = headerValue(r.rawHeaders, 'x-session') as string;
    out.set(s, [...(out.get(s) ?? []), r]);
  }
  return out;
}

const seqOf = (r: Received) => Number(r.url.split('/')[2]);

test('with ORDER_BY=header:x-session, 50 sessions × 20 requests over 3 workers arrive in per-session order, each after the previous answer', async () => {
  const { server, answeredAt, maxInFlight } = await randomStaging();
  const prefix = `t${randomBytes(4).toString('hex')}`;
  await appendSessions(prefix);
  const env = { ORDER_BY: 'header:x-session', WORKER_CONCURRENCY: '64' };
  const workers = await Promise.all([0, 1, 2].map(() => InProcessWorker.start(redis, server.url, env, prefix)));
  try {
    await waitFor('every request replayed', () => server.received.length >= SESSIONS * PER_SESSION, 45_000);
    assert.equal(server.received.length, SESSIONS * PER_SESSION);
    for (const [session, got] of bySession(server.received)) {
      assert.deepEqual(got.map(seqOf), [...Array(PER_SESSION).keys()], `session ${session} arrived out of order`);
      for (let i = 1; i < got.length; i++) {
        const previous = answeredAt.get(got[i - 1]!) as number;
        assert.ok(got[i]!.receivedAt >= previous, `session ${session}: request ${i} arrived before request ${i - 1} was answered`);
      }
    }
    // Different sessions still ran side by side.
    assert.ok(maxInFlight() >= 10, `at most ${maxInFlight()} requests were in flight at once`);
    const overtaken = (await Promise.all(workers.map((w) => w.worker.metrics.getSingleMetricAsString('mirrorplane_worker_order_overtaken_total')))).join('\n');
    assert.match(overtaken, /overtaken_total 0\b/);
    assert.doesNotMatch(overtaken, /overtaken_total [1-9]/);
  } finally {
    await Promise.all(workers.map((w) => w.close()));
    await server.close();
  }
});

test('the same run without ORDER_BY does reorder some session (so the test above can fail)', async () => {
  const { server } = await randomStaging();
  const prefix = `t${randomBytes(4).toString('hex')}`;
  await appendSessions(prefix);
  const workers = await Promise.all([0, 1, 2].map(() => InProcessWorker.start(redis, server.url, { WORKER_CONCURRENCY: '64' }, prefix)));
  try {
    await waitFor('every request replayed', () => server.received.length >= SESSIONS * PER_SESSION, 45_000);
    const reordered = [...bySession(server.received).values()].filter((got) => got.some((r, i) => i > 0 && seqOf(r) < seqOf(got[i - 1]!)));
    assert.ok(reordered.length > 0, 'no session was reordered without ORDER_BY');
  } finally {
    await Promise.all(workers.map((w) => w.close()));
    await server.close();
  }
});

test('a worker killed with SIGKILL mid-run: its entries are taken over and every session still arrives in order', async () => {
  const { server } = await randomStaging();
  const prefix = `t${randomBytes(4).toString('hex')}`;
  await appendSessions(prefix);
  const env = { ORDER_BY: 'header:x-session', WORKER_CONCURRENCY: '64', CLAIM_IDLE_MS: '1500', ORDER_MAX_WAIT_MS: '60000' };
  // The victim, a real process, starts first so it holds entries when it dies.
  const victim = new MirrorplaneProcess(['worker'], {
    REDIS_URL: redis.url,
    MIRRORPLANE_PREFIX: prefix,
    STAGING_URL: server.url,
    ADMIN_PORT: '0',
    ...env,
  });
  let workers: InProcessWorker[] = [];
  try {
    await victim.waitForLog('worker started');
    await waitFor('the victim replaying', () => server.received.length >= 100, 30_000, 5);
    workers = await Promise.all([0, 1].map(() => InProcessWorker.start(redis, server.url, env, prefix)));
    await waitFor('the others replaying too', () => server.received.length >= 250, 30_000, 5);
    const client = redis.client();
    const pending = (await client.xpending(keysFor(prefix).stream, keysFor(prefix).group)) as [number];
    client.disconnect();
    victim.child.kill('SIGKILL');
    await victim.exited;
    await waitFor('every request replayed after the takeover', () => new Set(server.received.map((r) => r.url)).size >= SESSIONS * PER_SESSION, 45_000);
    assert.ok(Number(pending[0]) > 0, 'the victim held entries when it died');
    for (const [session, got] of bySession(server.received)) {
      // At-least-once: what the victim sent just before dying may arrive again, but never out of turn.
      const seqs = got.map(seqOf);
      for (let i = 1; i < seqs.length; i++) assert.ok(seqs[i]! >= seqs[i - 1]!, `session ${session} arrived out of order: ${seqs.join(',')}`);
      assert.deepEqual([...new Set(seqs)], [...Array(PER_SESSION).keys()], `session ${session}`);
    }
  } finally {
    await victim.stop('SIGKILL');
    await Promise.all(workers.map((w) => w.close()));
    await server.close();
  }
});

test('a worker stopped gracefully mid-run hands back its running and parked entries; the others finish them in order', async () => {
  const { server } = await randomStaging();
  const prefix = `t${randomBytes(4).toString('hex')}`;
  await appendSessions(prefix);
  const env = { ORDER_BY: 'header:x-session', WORKER_CONCURRENCY: '64', CLAIM_IDLE_MS: '1000' };
  const leaving = await InProcessWorker.start(redis, server.url, env, prefix);
  const workers = await Promise.all([0, 1].map(() => InProcessWorker.start(redis, server.url, env, prefix)));
  try {
    await waitFor('replaying', () => server.received.length >= 200, 30_000, 5);
    await leaving.close();
    await waitFor('every request replayed', () => new Set(server.received.map((r) => r.url)).size >= SESSIONS * PER_SESSION, 45_000);
    assert.equal(server.received.length, SESSIONS * PER_SESSION, 'a graceful stop sends nothing twice');
    for (const [session, got] of bySession(server.received)) assert.deepEqual(got.map(seqOf), [...Array(PER_SESSION).keys()], `session ${session}`);
  } finally {
    await leaving.close();
    await Promise.all(workers.map((w) => w.close()));
    await server.close();
  }
});

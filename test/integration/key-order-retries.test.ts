import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { encodeEntryFields, headerValue, keysFor, orderKeyDigest, orderKeys, orderMember } from '@mirrorplane/core';
import { RecordingServer, RedisServer, waitFor, type Received } from '../helpers/index.js';
import { InProcessWorker } from '../helpers/in-process-worker.js';

// Per-key ordering through retries: a request in the retry queue holds back the later ones of
// its key; past ORDER_MAX_WAIT_MS they overtake it, and each overtaking is counted.

let redis: RedisServer;

before(async () => {
  redis = await RedisServer.start();
});

after(async () => {
  await redis?.close();
});

async function appendSessions(prefix: string, sessions: number, perSession: number): Promise<void> {
  const client = redis.client();
  for (let i = 0; i < perSession; i++) {
    for (let s = 0; s < sessions; s++) {
      await client.xadd(
        keysFor(prefix).stream,
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
  }
  client.disconnect();
}

const arrivals = (received: readonly Received[], session: string) =>
  received.filter((r) => headerValue(r.rawHeaders, 'x-session') === session).map((r) => ({ seq: Number(r.url.split('/')[2]), at: r.receivedAt }));

async function overtaken(workers: InProcessWorker[]): Promise<number> {
  let n = 0;
  for (const w of workers) {
    const text = await w.worker.metrics.getSingleMetricAsString('mirrorplane_worker_order_overtaken_total');
    n += Number(/overtaken_total (\d+)/.exec(text)?.[1] ?? 0);
  }
  return n;
}

const env = {
  ORDER_BY: 'header:x-session',
  WORKER_CONCURRENCY: '16',
  REPLAY_BACKOFF_MS: '100',
  RETRY_MAX_DELAY_MS: '200',
};

test('a request retried after 503s holds back the later ones of its key until it succeeds', async () => {
  let refusals = 2;
  const staging = await RecordingServer.start((req, res) => {
    if (req.url === '/s0/0' && refusals-- > 0) res.writeHead(503).end();
    else res.writeHead(200).end('ok');
  });
  const prefix = `t${randomBytes(4).toString('hex')}`;
  await appendSessions(prefix, 3, 5);
  const workers = await Promise.all([0, 1].map(() => InProcessWorker.start(redis, staging.url, env, prefix)));
  try {
    await waitFor('every request answered', () => staging.received.length >= 3 * 5 + 2, 30_000);
    assert.deepEqual(
      arrivals(staging.received, 's0').map((a) => a.seq),
      [0, 0, 0, 1, 2, 3, 4],
    );
    for (const s of ['s1', 's2'])
      assert.deepEqual(
        arrivals(staging.received, s).map((a) => a.seq),
        [0, 1, 2, 3, 4],
      );
    assert.equal(await overtaken(workers), 0);
  } finally {
    await Promise.all(workers.map((w) => w.close()));
    await staging.close();
  }
});

test('past ORDER_MAX_WAIT_MS the later requests overtake one that keeps failing, and each overtaking is counted', async () => {
  const staging = await RecordingServer.start((req, res) => {
    if (req.url === '/s0/0') res.writeHead(503).end();
    else res.writeHead(200).end('ok');
  });
  const prefix = `t${randomBytes(4).toString('hex')}`;
  await appendSessions(prefix, 2, 5);
  const workers = await Promise.all([0, 1].map(() => InProcessWorker.start(redis, staging.url, { ...env, ORDER_MAX_WAIT_MS: '1000' }, prefix)));
  try {
    await waitFor('the later requests of s0 delivered', () => arrivals(staging.received, 's0').filter((a) => a.seq > 0).length >= 4, 30_000);
    const s0 = arrivals(staging.received, 's0');
    const first = s0.find((a) => a.seq === 0)!.at;
    const later = s0.filter((a) => a.seq > 0);
    assert.deepEqual(
      later.map((a) => a.seq),
      [1, 2, 3, 4],
      'the overtaking requests keep their own order',
    );
    assert.ok(later[0]!.at - first >= 900, `s0/1 went ${later[0]!.at - first} ms after s0/0 first failed; the wait is 1000 ms`);
    assert.ok((await overtaken(workers)) >= 4, `overtaken: ${await overtaken(workers)}`);
    assert.deepEqual(
      arrivals(staging.received, 's1').map((a) => a.seq),
      [0, 1, 2, 3, 4],
    );
  } finally {
    await Promise.all(workers.map((w) => w.close()));
    await staging.close();
  }
});

test('an entry that vanished (first of its key far longer than any retry lasts) is overtaken once, then forgotten', async () => {
  const staging = await RecordingServer.start();
  const prefix = `t${randomBytes(4).toString('hex')}`;
  const client = redis.client();
  const order = orderKeys(prefix);
  const set = order.key(orderKeyDigest('s0'));
  const ghost = orderMember('1-0');
  await client.zadd(set, 0, ghost);
  await client.hset(order.heads, ghost, '1');
  await appendSessions(prefix, 1, 5);
  const workers = await Promise.all(
    [0, 1].map(() => InProcessWorker.start(redis, staging.url, { ...env, ORDER_MAX_WAIT_MS: '1000', RETRY_WINDOW_MS: '1000', CLAIM_IDLE_MS: '1000' }, prefix)),
  );
  try {
    await waitFor('every request replayed', () => staging.received.length >= 5, 30_000);
    assert.deepEqual(
      arrivals(staging.received, 's0').map((a) => a.seq),
      [0, 1, 2, 3, 4],
    );
    assert.equal(await client.zscore(set, ghost), null, 'the vanished entry was forgotten');
    assert.equal(await client.hget(order.heads, ghost), null);
    assert.equal(await overtaken(workers), 1, 'only the first request walked past it');
  } finally {
    client.disconnect();
    await Promise.all(workers.map((w) => w.close()));
    await staging.close();
  }
});

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { encodeEntryFields, keysFor } from '@mirrorplane/core';
import { MirrorplaneProcess, RecordingServer, RedisServer, waitFor, type Received } from '../helpers/index.js';
import { InProcessWorker } from '../helpers/in-process-worker.js';

// Issue #19: a real worker process SIGTERMed while it holds parked entries (ORDER_BY), requests
// waiting for rate tokens (a cap) and replays in flight: it exits 0 within the shutdown bound,
// and another worker finishes everything, each key in order, nothing lost.

let redis: RedisServer;

before(async () => {
  redis = await RedisServer.start();
});

after(async () => {
  await redis?.close();
});

const seqOf = (r: Received) => Number(r.url.split('/')[2]);

test('SIGTERM with parked entries and token waits: exit 0, then every key finishes in order with nothing lost', async () => {
  const staging = await RecordingServer.start(async (_req, res) => {
    await new Promise((r) => setTimeout(r, 30));
    res.writeHead(200).end('ok');
  });
  const prefix = `t${randomBytes(4).toString('hex')}`;
  const keys = keysFor(prefix);
  const client = redis.client();
  const pipeline = client.pipeline();
  const per = new Map<string, number>();
  for (let i = 0; i < 120; i++) {
    const key = i % 3 === 0 ? `cold${i % 7}` : 'hot';
    const seq = per.get(key) ?? 0;
    per.set(key, seq + 1);
    pipeline.xadd(
      keys.stream,
      '*',
      ...encodeEntryFields({
        method: 'PUT',
        target: `/${key}/${seq}`,
        rawHeaders: ['Host', 'app.test', 'X-Session', key, 'Content-Length', '0'],
        body: Buffer.alloc(0),
        receivedAt: Date.now(),
        requestId: `${key}-${seq}`,
        clientAddress: '127.0.0.1',
      }),
    );
  }
  await pipeline.exec();
  const env = { ORDER_BY: 'header:x-session', STAGING_RATE_LIMIT: '40,5', WORKER_CONCURRENCY: '8', CLAIM_IDLE_MS: '1500', ORDER_MAX_WAIT_MS: '60000' };
  const victim = new MirrorplaneProcess(['worker'], {
    REDIS_URL: redis.url,
    MIRRORPLANE_PREFIX: prefix,
    STAGING_URL: staging.url,
    ADMIN_PORT: '0',
    SHUTDOWN_TIMEOUT_MS: '3000',
    ...env,
  });
  let other: InProcessWorker | null = null;
  try {
    await victim.waitForLog('worker started');
    await waitFor('the victim replaying', () => staging.received.length >= 20, 30_000, 5);
    const stoppedAt = Date.now();
    const code = await victim.stop('SIGTERM');
    const took = Date.now() - stoppedAt;
    assert.equal(code, 0, `exit ${code}; stderr ${victim.stderr.slice(-1000)}`);
    assert.ok(took < 15_000, `stopping took ${took} ms`);
    other = await InProcessWorker.start(redis, staging.url, env, prefix);
    await waitFor('every request replayed', () => new Set(staging.received.map((r) => r.url)).size >= 120, 60_000);
    await waitFor('stream drained', async () => (await client.xlen(keys.stream)) === 0, 30_000);
    const by = new Map<string, number[]>();
    for (const r of staging.received) {
      const key = r.url.split('/')[1] as string;
      by.set(key, [...(by.get(key) ?? []), seqOf(r)]);
    }
    for (const [key, seqs] of by) {
      for (let i = 1; i < seqs.length; i++) assert.ok(seqs[i]! >= seqs[i - 1]!, `key ${key} out of order: ${seqs.join(',')}`);
      assert.deepEqual([...new Set(seqs)], [...Array(per.get(key)).keys()], `key ${key}`);
    }
  } finally {
    await victim.stop('SIGKILL');
    await other?.close();
    client.disconnect();
    await staging.close();
  }
});

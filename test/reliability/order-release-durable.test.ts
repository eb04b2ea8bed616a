import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { encodeEntryFields, headerValue, keysFor } from '@mirrorplane/core';
import { RecordingServer, RedisServer, waitFor, type Received } from '../helpers/index.js';
import { InProcessWorker } from '../helpers/in-process-worker.js';

// Issue #19, per-key ordering: the window between "order finished" (mpOrderDone, at once) and
// "acknowledged" (batched XACK, retried while Redis refuses it). A Redis fault on XACK alone
// (stood in for by an ACL denying XACK; scripts run under the caller's ACL) while the worker
// is stopped leaves finished entries pending; the next worker claims them, registers them again
// as first of their key, and replays them after the later requests of their key already ran.
// CONFIG.md promises: "a request the dead worker had sent may arrive again (before the next one
// of its key)".

let redis: RedisServer;

before(async () => {
  redis = await RedisServer.start();
});

after(async () => {
  await redis?.close();
});

async function appendSession(prefix: string, session: string, count: number): Promise<void> {
  const client = redis.client();
  const pipeline = client.pipeline();
  for (let i = 0; i < count; i++) {
    pipeline.xadd(
      keysFor(prefix).stream,
      '*',
      ...encodeEntryFields({
        method: 'PUT',
        target: `/${session}/${i}`,
        rawHeaders: ['Host', 'app.test', 'X-Session', session, 'Content-Length', '0'],
        body: Buffer.alloc(0),
        receivedAt: Date.now(),
        requestId: `${session}-${i}`,
        clientAddress: '127.0.0.1',
      }),
    );
  }
  await pipeline.exec();
  client.disconnect();
}

const seqOf = (r: Received) => Number(r.url.split('/')[2]);

test('XACK refused while a worker stops: its finished entries are never replayed again after later ones of their key', async () => {
  const staging = await RecordingServer.start((_req, res) => {
    res.writeHead(200).end('ok');
  });
  const prefix = `t${randomBytes(4).toString('hex')}`;
  const keys = keysFor(prefix);
  const admin = redis.client();
  const env = { ORDER_BY: 'header:x-session', CLAIM_IDLE_MS: '1000', ORDER_MAX_WAIT_MS: '60000', SHUTDOWN_TIMEOUT_MS: '1000' };
  const sessions = ['s0', 's1', 's2'];
  for (const s of sessions) await appendSession(prefix, s, 5);
  let second: InProcessWorker | null = null;
  try {
    await admin.call('ACL', 'SETUSER', 'default', '-xack');
    const first = await InProcessWorker.start(redis, staging.url, env, prefix);
    try {
      // Each key's first request is sent; its acknowledgement is refused, so its key never moves on here.
      await waitFor('the first request of every session replayed', () => sessions.every((s) => staging.received.some((r) => r.url === `/${s}/0`)), 30_000);
    } finally {
      await first.close();
    }
    const pending = (await admin.xpending(keys.stream, keys.group)) as [number];
    await admin.call('ACL', 'SETUSER', 'default', '+xack');
    second = await InProcessWorker.start(redis, staging.url, env, prefix);
    await waitFor(
      'every entry acknowledged',
      async () => Number(((await admin.xpending(keys.stream, keys.group)) as [number])[0]) === 0 && (await admin.xlen(keys.stream)) === 0,
      30_000,
    );
    assert.ok(Number(pending[0]) > 0, 'the fault left finished entries pending (the window was hit)');
    for (const s of sessions) {
      const seqs = staging.received.filter((r) => headerValue(r.rawHeaders, 'x-session') === s).map(seqOf);
      for (let i = 1; i < seqs.length; i++) assert.ok(seqs[i]! >= seqs[i - 1]!, `session ${s} arrived out of order: ${seqs.join(',')}`);
      assert.deepEqual([...new Set(seqs)], [0, 1, 2, 3, 4], `session ${s}: every request arrived`);
    }
  } finally {
    await admin.call('ACL', 'SETUSER', 'default', '+xack').catch(() => undefined);
    await second?.close();
    admin.disconnect();
    await staging.close();
  }
});

test('a retry job whose completion Redis refuses: the job run again later never arrives after the later requests of its key', async () => {
  // The retry path's window: the worker releases the key (mpOrderDone) as the job's processor
  // ends, before BullMQ records the job finished (moveToFinished). Refused here (an ACL denying
  // LREM, which moveToFinished needs and nothing else on this path uses), the job stalls and
  // BullMQ runs it again once its lock lapses.
  const admin = redis.client();
  let tries = 0;
  const staging = await RecordingServer.start(async (req, res) => {
    if (req.url === '/s0/0') {
      tries++;
      if (tries === 1) {
        res.writeHead(503).end('busy');
        return;
      }
      if (tries === 2) await admin.call('ACL', 'SETUSER', 'default', '-lrem');
    }
    res.writeHead(200).end('ok');
  });
  const prefix = `t${randomBytes(4).toString('hex')}`;
  const keys = keysFor(prefix);
  // A job's lock lapses after max(RETRY_STALL_CHECK_MS, 2 × REPLAY_TIMEOUT_MS): 1 s here.
  const env = {
    ORDER_BY: 'header:x-session',
    CLAIM_IDLE_MS: '1000',
    ORDER_MAX_WAIT_MS: '600000',
    REPLAY_BACKOFF_MS: '50',
    RETRY_MAX_DELAY_MS: '100',
    RETRY_STALL_CHECK_MS: '1000',
    REPLAY_TIMEOUT_MS: '500',
  };
  await appendSession(prefix, 's0', 4);
  let worker: InProcessWorker | null = null;
  try {
    worker = await InProcessWorker.start(redis, staging.url, env, prefix);
    const w = worker;
    // BullMQ could not record the second try finished: the window is open now.
    await waitFor('the job completion refused', () => tries >= 2 && w.logged('retry worker error'), 30_000);
    await admin.call('ACL', 'SETUSER', 'default', '+lrem');
    await waitFor('/s0/3 replayed', () => staging.received.some((r) => r.url === '/s0/3'), 30_000);
    const seqs = staging.received.filter((r) => headerValue(r.rawHeaders, 'x-session') === 's0').map(seqOf);
    assert.ok(tries >= 3, `the stalled job ran again (tries ${tries})`);
    for (let i = 1; i < seqs.length; i++) assert.ok(seqs[i]! >= seqs[i - 1]!, `session s0 arrived out of order: ${seqs.join(',')}`);
    // Staging received the last request before its acknowledgement (batched) reached Redis: wait for it.
    await waitFor('the stream emptied (every entry acknowledged and deleted)', async () => (await admin.xlen(keys.stream)) === 0, 30_000);
  } finally {
    await admin.call('ACL', 'SETUSER', 'default', '+lrem').catch(() => undefined);
    await worker?.close();
    admin.disconnect();
    await staging.close();
  }
});

test('an entry handed to the retry queue whose acknowledgement was lost: claimed later, it is not replayed beside its job', async () => {
  // s0/0 answers 503 once: it goes to the retry queue (a job delayed 3 s), and its XACK is refused
  // while the worker stops. The next worker claims the stream entry: its job owns it.
  let first = true;
  const staging = await RecordingServer.start((req, res) => {
    if (req.url === '/s0/0' && first) {
      first = false;
      res.writeHead(503).end('busy');
      return;
    }
    res.writeHead(200).end('ok');
  });
  const prefix = `t${randomBytes(4).toString('hex')}`;
  const keys = keysFor(prefix);
  const admin = redis.client();
  const env = {
    ORDER_BY: 'header:x-session',
    CLAIM_IDLE_MS: '1000',
    ORDER_MAX_WAIT_MS: '60000',
    SHUTDOWN_TIMEOUT_MS: '1000',
    REPLAY_BACKOFF_MS: '3000',
    RETRY_MAX_DELAY_MS: '3000',
  };
  await appendSession(prefix, 's0', 3);
  let second: InProcessWorker | null = null;
  try {
    await admin.call('ACL', 'SETUSER', 'default', '-xack');
    const w1 = await InProcessWorker.start(redis, staging.url, env, prefix);
    try {
      await waitFor('s0/0 answered 503', () => staging.received.length >= 1, 10_000);
      await waitFor('the job exists', async () => (await admin.keys(`*${prefix}*delayed*`)).length > 0, 10_000);
    } finally {
      await w1.close();
    }
    await admin.call('ACL', 'SETUSER', 'default', '+xack');
    second = await InProcessWorker.start(redis, staging.url, env, prefix);
    await waitFor('every request of s0 replayed', () => staging.received.some((r) => r.url === '/s0/2'), 30_000);
    await waitFor('every entry acknowledged', async () => Number(((await admin.xpending(keys.stream, keys.group)) as [number])[0]) === 0, 10_000);
    await waitFor('the retry job ended', async () => (await admin.keys(`*${prefix}*`)).every((k) => !/:(wait|active|delayed)$/.test(k)), 20_000);
    const urls = staging.received.map((r) => r.url);
    assert.deepEqual(urls, ['/s0/0', '/s0/0', '/s0/1', '/s0/2'], 'the 503, its one retry, then the rest in order');
  } finally {
    await admin.call('ACL', 'SETUSER', 'default', '+xack').catch(() => undefined);
    await second?.close();
    admin.disconnect();
    await staging.close();
  }
});

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { stringify } from 'yaml';
import { encodeEntryFields, headerValue, keysFor, loadConfig } from '@mirrorplane/core';
import { buildPipeline, createLogger } from '@mirrorplane/runtime';
import { ReplayWorker } from '@mirrorplane/worker';
import { RecordingServer, RedisServer, waitFor, type Received } from '../helpers/index.js';

// Issue #19, the three controls together: ORDER_BY + a rate cap + amplify ×2 over 2 workers, one
// hot key and many cold ones. Every copy takes a token (the cap holds over every window), each
// key's copy-1 requests arrive in order, every entry is finished, and a worker stopped
// gracefully mid-run (with parked entries holding prepaid tokens) loses nothing.

let redis: RedisServer;
let dir: string;

before(async () => {
  redis = await RedisServer.start();
  dir = mkdtempSync(join(tmpdir(), 'mp-ora-'));
});

after(async () => {
  await redis?.close();
  rmSync(dir, { recursive: true, force: true });
});

async function startWorker(stagingUrl: string, prefix: string, file: object, env: Record<string, string>): Promise<ReplayWorker> {
  const path = join(dir, `${prefix}-${randomBytes(2).toString('hex')}.yaml`);
  const config = loadConfig({
    role: 'worker',
    env: { REDIS_URL: redis.url, MIRRORPLANE_PREFIX: prefix, STAGING_URL: stagingUrl, ADMIN_PORT: '0', LOG_LEVEL: 'warn', ...env },
    file: { path, text: stringify(file) },
  });
  const logger = createLogger(config, 'worker', new Writable({ write: (_c, _e, done) => done() }));
  const built = await buildPipeline(config, logger);
  const worker = new ReplayWorker(config, logger, { pipeline: built.pipeline });
  await worker.start();
  return worker;
}

function mostInWindow(times: readonly number[], ms: number): number {
  const sorted = [...times].sort((a, b) => a - b);
  let most = 0;
  let lo = 0;
  for (let hi = 0; hi < sorted.length; hi++) {
    while ((sorted[hi] as number) - (sorted[lo] as number) > ms) lo++;
    most = Math.max(most, hi - lo + 1);
  }
  return most;
}

const copyOf = (r: Received) => headerValue(r.rawHeaders, 'x-mirrorplane-copy');

test('ORDER_BY + 100/s cap (burst 10) + amplify ×2, 2 workers, one stopped mid-run: cap holds, order holds, nothing lost', async () => {
  const staging = await RecordingServer.start(async (_req, res) => {
    await new Promise((r) => setTimeout(r, Math.random() * 10));
    res.writeHead(200).end('ok');
  });
  const prefix = `t${randomBytes(4).toString('hex')}`;
  const keys = keysFor(prefix);
  const client = redis.client();
  // 100 on the hot key, 5 each on 20 cold keys, interleaved.
  const plan: { key: string; seq: number }[] = [];
  const seqs = new Map<string, number>();
  for (let i = 0; i < 200; i++) {
    const key = i % 2 === 0 ? 'hot' : `cold${(i >> 1) % 20}`;
    const seq = seqs.get(key) ?? 0;
    seqs.set(key, seq + 1);
    plan.push({ key, seq });
  }
  const pipeline = client.pipeline();
  for (const { key, seq } of plan)
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
  await pipeline.exec();
  const env = { ORDER_BY: 'header:x-session', STAGING_RATE_LIMIT: '100,10', WORKER_CONCURRENCY: '16', CLAIM_IDLE_MS: '1500', ORDER_MAX_WAIT_MS: '60000' };
  const file = { rules: [{ name: 'double', match: { pathPrefix: '/' }, amplify: 2 }] };
  const a = await startWorker(staging.url, prefix, file, env);
  const b = await startWorker(staging.url, prefix, file, env);
  let bClosed = false;
  try {
    await waitFor('a third replayed', () => staging.received.length >= 130, 30_000, 5);
    await b.close();
    bClosed = true;
    await waitFor('every entry finished', async () => (await client.xlen(keys.stream)) === 0, 60_000);
    await waitFor('400 requests', () => staging.received.length >= 400, 5_000).catch(() => undefined);
    const times = staging.received.map((r) => r.receivedAt);
    const D = 150;
    for (const ms of [100, 500, 1000, 2000]) {
      const most = mostInWindow(times, ms);
      const bound = Math.floor((100 * (ms + D)) / 1000 + 10);
      assert.ok(most <= bound, `${most} arrivals within ${ms} ms; the cap allows ${bound}`);
    }
    const firsts = new Map<string, number[]>();
    for (const r of staging.received) {
      if (copyOf(r) !== '1') continue;
      const [, key, seq] = r.url.split('/') as [string, string, string];
      firsts.set(key, [...(firsts.get(key) ?? []), Number(seq)]);
    }
    for (const [key, got] of firsts) {
      for (let i = 1; i < got.length; i++) assert.ok(got[i]! >= got[i - 1]!, `key ${key} out of order: ${got.join(',')}`);
      assert.deepEqual([...new Set(got)], [...Array(seqs.get(key)).keys()], `key ${key}`);
    }
    // Graceful stop: what was in flight finishes, copies included (a copy waiting for a token is not dropped).
    const seen = new Map<string, string[]>();
    for (const r of staging.received) seen.set(r.url, [...(seen.get(r.url) ?? []), String(copyOf(r))]);
    const odd = [...seen].filter(([, c]) => !c.includes('1') || !c.includes('2'));
    assert.deepEqual(odd, [], 'entries not received as copy 1 and copy 2');
    assert.equal(seen.size, 200);
  } finally {
    if (!bClosed) await b.close();
    await a.close();
    client.disconnect();
    await staging.close();
  }
});

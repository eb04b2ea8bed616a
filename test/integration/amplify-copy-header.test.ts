import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { stringify } from 'yaml';
import { encodeEntryFields, keysFor, loadConfig } from '@mirrorplane/core';
import { buildPipeline, createLogger } from '@mirrorplane/runtime';
import { ReplayWorker } from '@mirrorplane/worker';
import { RecordingServer, RedisServer, waitFor, type Received } from '../helpers/index.js';

// Issue #19, amplification: each copy carries exactly one `x-mirrorplane-copy: <n>`; a request
// sent once has none (a client-sent one is replaced/removed); copies 2…N go once, a retry of
// copy 1 sends copy 1 only.

let redis: RedisServer;
let dir: string;

before(async () => {
  redis = await RedisServer.start();
  dir = mkdtempSync(join(tmpdir(), 'mp-amp-'));
});

after(async () => {
  await redis?.close();
  rmSync(dir, { recursive: true, force: true });
});

async function startWorker(stagingUrl: string, prefix: string, file: object, env: Record<string, string> = {}): Promise<ReplayWorker> {
  const path = join(dir, `${prefix}.yaml`);
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

async function append(prefix: string, target: string, extra: string[]): Promise<void> {
  const client = redis.client();
  await client.xadd(
    keysFor(prefix).stream,
    '*',
    ...encodeEntryFields({
      method: 'GET',
      target,
      rawHeaders: ['Host', 'app.test', ...extra],
      body: Buffer.alloc(0),
      receivedAt: Date.now(),
      requestId: target,
      clientAddress: '127.0.0.1',
    }),
  );
  client.disconnect();
}

const copyHeaders = (r: Received) => r.rawHeaders.filter((_, i, a) => i % 2 === 1 && (a[i - 1] as string).toLowerCase() === 'x-mirrorplane-copy');

test('client-sent x-mirrorplane-copy headers (several, odd casing) never reach staging beside or instead of the real copy number', async () => {
  const staging = await RecordingServer.start((_req, res) => {
    res.writeHead(200).end('ok');
  });
  const prefix = `t${randomBytes(4).toString('hex')}`;
  const spoof = ['X-Mirrorplane-Copy', '9', 'x-mirrorplane-copy', '1', 'X-MIRRORPLANE-COPY', 'evil'];
  await append(prefix, '/once/a', spoof);
  await append(prefix, '/twice/a', spoof);
  const worker = await startWorker(staging.url, prefix, { rules: [{ name: 'two', match: { pathPrefix: '/twice/' }, amplify: 2 }] });
  try {
    await waitFor('3 requests received', () => staging.received.length >= 3, 30_000);
    const once = staging.received.filter((r) => r.url === '/once/a');
    const twice = staging.received.filter((r) => r.url === '/twice/a');
    assert.deepEqual(once.map(copyHeaders), [[]], 'a request sent once has no x-mirrorplane-copy');
    assert.deepEqual(twice.map(copyHeaders).sort(), [['1'], ['2']], 'each copy carries exactly its own number');
  } finally {
    await worker.close();
    await staging.close();
  }
});

test('×5 amplified, copy 1 answered 503 twice: copy 1 is retried alone, copies 2-5 arrive exactly once', async () => {
  let failures = 0;
  const staging = await RecordingServer.start((req, res) => {
    const copy = copyHeaders(req)[0];
    if ((copy === '1' || copy === undefined) && failures < 2) {
      failures++;
      res.writeHead(503).end('busy');
      return;
    }
    res.writeHead(200).end('ok');
  });
  const prefix = `t${randomBytes(4).toString('hex')}`;
  await append(prefix, '/five/a', []);
  const worker = await startWorker(
    staging.url,
    prefix,
    { rules: [{ name: 'five', match: { pathPrefix: '/five/' }, amplify: 5 }] },
    { REPLAY_BACKOFF_MS: '50', RETRY_MAX_DELAY_MS: '100' },
  );
  const client = redis.client();
  try {
    await waitFor(
      'copy 1 sent 3 times',
      () => staging.received.filter((r) => copyHeaders(r)[0] !== undefined && copyHeaders(r)[0] !== '1').length >= 4 && staging.received.length >= 7,
      30_000,
    );
    await waitFor('retry queue drained', async () => (await client.keys(`${prefix}*`)).every((k) => !/:(wait|active|delayed)$/.test(k)), 30_000);
    const counts = new Map<string, number>();
    for (const r of staging.received) {
      const c = copyHeaders(r).join('+') || '(none)';
      counts.set(c, (counts.get(c) ?? 0) + 1);
    }
    assert.deepEqual(Object.fromEntries([...counts].sort()), { '1': 3, '2': 1, '3': 1, '4': 1, '5': 1 });
  } finally {
    client.disconnect();
    await worker.close();
    await staging.close();
  }
});

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { encodeEntryFields, headerValue, keysFor, loadConfig } from '@mirrorplane/core';
import { RecordingServer, RedisServer, waitFor, type Received } from '../helpers/index.js';
import { InProcessWorker } from '../helpers/in-process-worker.js';

// Issue #19, ORDER_BY keys: odd key values (absent, empty, huge, binary, repeated field), many
// keys (the per-key sets are gone once drained: Redis memory stays bounded), and ORDER_BY
// values that cannot work refused at start with the key named.

let redis: RedisServer;

before(async () => {
  redis = await RedisServer.start();
});

after(async () => {
  await redis?.close();
});

const seqOf = (r: Received) => Number(r.url.split('/')[2]);

test('400 keys (plus absent, empty, 16 KiB, binary and repeated values) drain in order and leave no ordering state in Redis', async () => {
  const staging = await RecordingServer.start(async (_req, res) => {
    await new Promise((r) => setTimeout(r, Math.random() * 5));
    res.writeHead(200).end('ok');
  });
  const prefix = `t${randomBytes(4).toString('hex')}`;
  const keys = keysFor(prefix);
  const client = redis.client();
  const sessions: { name: string; headers: string[] }[] = [];
  for (let s = 0; s < 400; s++) sessions.push({ name: `k${s}`, headers: ['X-Session', `k${s}`] });
  sessions.push({ name: 'absent', headers: [] });
  sessions.push({ name: 'empty', headers: ['X-Session', ''] });
  sessions.push({ name: 'huge', headers: ['X-Session', 'h'.repeat(16 * 1024)] });
  sessions.push({ name: 'binary', headers: ['X-Session', Buffer.from([0xff, 0xfe, 0x80, 0x41]).toString('latin1')] });
  sessions.push({ name: 'repeated', headers: ['X-Session', 'rep', 'X-Session', 'other'] });
  const PER = 4;
  for (let i = 0; i < PER; i++) {
    const pipeline = client.pipeline();
    for (const s of sessions)
      pipeline.xadd(
        keys.stream,
        '*',
        ...encodeEntryFields({
          method: 'PUT',
          target: `/${s.name}/${i}`,
          rawHeaders: ['Host', 'app.test', ...s.headers, 'Content-Length', '0'],
          body: Buffer.alloc(0),
          receivedAt: Date.now(),
          requestId: `${s.name}-${i}`,
          clientAddress: '127.0.0.1',
        }),
      );
    await pipeline.exec();
  }
  const env = { ORDER_BY: 'header:x-session', WORKER_CONCURRENCY: '32' };
  const workers = await Promise.all([0, 1].map(() => InProcessWorker.start(redis, staging.url, env, prefix)));
  try {
    const total = sessions.length * PER;
    await waitFor('every entry replayed and acknowledged', async () => staging.received.length >= total && (await client.xlen(keys.stream)) === 0, 60_000);
    assert.equal(staging.received.length, total);
    const by = new Map<string, number[]>();
    for (const r of staging.received) {
      const name = r.url.split('/')[1] as string;
      by.set(name, [...(by.get(name) ?? []), seqOf(r)]);
    }
    for (const name of ['huge', 'binary', 'repeated', 'k0', 'k399']) assert.deepEqual(by.get(name), [0, 1, 2, 3], `key ${name}`);
    assert.equal(headerValue(staging.received.find((r) => r.url === '/binary/0')!.rawHeaders, 'x-session'), '\u00ff\u00fe\u0080A');
    // Drained: no key sets, no heads, no unkeyed entries left behind.
    await waitFor('ordering state cleaned up', async () => (await client.keys(`*${prefix}*order*`)).length === 0, 10_000).catch(() => undefined);
    const left = await client.keys(`*${prefix}*order*`);
    const detail = await Promise.all(left.slice(0, 5).map(async (k) => `${k} (${await client.type(k)})`));
    assert.deepEqual(left, [], `left in Redis: ${detail.join(', ')}`);
  } finally {
    await Promise.all(workers.map((w) => w.close()));
    client.disconnect();
    await staging.close();
  }
});

test('ORDER_BY path regexes without a capturing group are refused naming ORDER_BY (escaped or bracketed parentheses too)', () => {
  for (const bad of ['path:^/orders/[^/]+', 'path:^/orders/(?:[^/]+)', 'path:^/orders/\\([^/]+\\)', 'path:^/orders/[(][^/]+', 'path:^/(?=o)orders']) {
    assert.throws(() => loadConfig({ role: 'worker', env: { REDIS_URL: redis.url, STAGING_URL: 'http://127.0.0.1:1', ORDER_BY: bad } }), /ORDER_BY/, bad);
  }
});

test('ORDER_BY values that are not header/cookie/path, or catastrophic regexes, fail fast at start naming ORDER_BY', () => {
  for (const bad of ['header:', 'cookie:', 'header:x session', 'query:id', 'path:(', 'path:', 'header:x-s\u00e9']) {
    assert.throws(
      () => loadConfig({ role: 'worker', env: { REDIS_URL: redis.url, STAGING_URL: 'http://127.0.0.1:1', ORDER_BY: bad } }),
      /ORDER_BY/,
      JSON.stringify(bad),
    );
  }
  // A catastrophic pattern is accepted only if matching stays linear.
  const started = Date.now();
  const config = loadConfig({ role: 'worker', env: { REDIS_URL: redis.url, STAGING_URL: 'http://127.0.0.1:1', ORDER_BY: 'path:^/((a+)+)$' } });
  assert.ok(config.orderBy);
  if (config.orderBy.kind === 'path') config.orderBy.regex.exec(`/${'a'.repeat(50_000)}b`);
  assert.ok(Date.now() - started < 2000, `matching took ${Date.now() - started} ms`);
});

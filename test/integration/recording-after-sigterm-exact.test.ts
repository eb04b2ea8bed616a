import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import type { Redis } from 'ioredis';
import { encodeEntryFields, keysFor } from '@mirrorplane/core';
import { MirrorplaneProcess, RedisServer, waitFor } from '../helpers/index.js';
import { makeShapes, ShapeServer, type Shape } from '../helpers/response-shapes.js';

// Issue #17 through the real CLI worker and its built-in recording post handler: generated
// response shapes, split into many reads, SIGTERM while replays are in flight, a second worker
// finishing. Every entry is recorded exactly once, with staging's response as staging sent it.

let redis: RedisServer;
let client: Redis;
let dir: string;
before(async () => {
  redis = await RedisServer.start();
  client = redis.client();
  dir = mkdtempSync(join(tmpdir(), 'mp-attack17-'));
});
after(async () => {
  client.disconnect();
  await redis.close();
  rmSync(dir, { recursive: true, force: true });
});

interface RecordedLine {
  entryId: string;
  mirrored: { target: string };
  response: { status: number; headers: [string, string][]; body: { text: string; encoding?: string; size: number } };
}

test('CLI worker with recording, SIGTERM mid-replay, a second worker finishing: one recorded line per entry, each response byte for byte', async () => {
  const shapes = makeShapes(1717, 60, {}).map((s) => ({
    ...s,
    cuts: Array.from({ length: 24 }, (_, i) => Math.floor(((i + 1) * s.bytes.length) / 25)).filter((c) => c > 0 && c < s.bytes.length),
  }));
  const staging = await ShapeServer.start(shapes);
  const prefix = `a17c${randomBytes(3).toString('hex')}`;
  const recordings = join(dir, 'rec');
  const config = join(dir, 'config.yaml');
  writeFileSync(config, JSON.stringify({ recording: { dir: recordings, bodyLimit: 1 << 20 } }));
  const keys = keysFor(prefix);
  const targets = new Map<string, Shape>();
  const pipeline = client.pipeline();
  for (let c = 0; c < 3; c++) {
    for (const shape of shapes) {
      const target = `/shape/${shape.n}/c${c}`;
      targets.set(target, shape);
      pipeline.xadd(
        keys.stream,
        '*',
        ...encodeEntryFields({
          method: shape.method,
          target,
          rawHeaders: ['Host', 'shop.example', 'X-C', String(c)],
          body: Buffer.alloc(0),
          receivedAt: Date.now(),
          requestId: `r-${shape.n}-${c}`,
          clientAddress: null,
        }),
      );
    }
  }
  await pipeline.exec();
  const env = {
    REDIS_URL: redis.url,
    MIRRORPLANE_PREFIX: prefix,
    STAGING_URL: staging.url(),
    MIRRORPLANE_CONFIG: config,
    ADMIN_PORT: '0',
    WORKER_CONCURRENCY: '16',
    RETRY_STATUSES: '429',
    REPLAY_BACKOFF_MS: '50',
    CLAIM_IDLE_MS: '1000',
  };
  const a = new MirrorplaneProcess(['worker'], env);
  let b: MirrorplaneProcess | null = null;
  try {
    await waitFor('replays in flight', () => staging.seen.length >= 40, 60_000);
    assert.equal(await a.stop('SIGTERM'), 0, `first worker exits 0 on SIGTERM\n${a.stderr.slice(-2000)}`);
    b = new MirrorplaneProcess(['worker'], env);
    await waitFor(
      'every entry acknowledged and deleted',
      async () => {
        const [len, pending] = await Promise.all([client.xlen(keys.stream), client.xpending(keys.stream, keys.group)]);
        return len === 0 && Number((pending as [number])[0]) === 0;
      },
      120_000,
    );
    assert.equal(await b.stop('SIGTERM'), 0, 'second worker exits 0');
  } finally {
    await a.stop('SIGKILL');
    await b?.stop('SIGKILL');
    await staging.close();
  }
  const lines = readdirSync(recordings)
    .filter((f) => f.endsWith('.jsonl'))
    .flatMap((f) => readFileSync(join(recordings, f), 'utf8').split('\n').filter(Boolean))
    .map((l) => JSON.parse(l) as RecordedLine);
  const byId = new Map<string, number>();
  for (const l of lines) byId.set(l.entryId, (byId.get(l.entryId) ?? 0) + 1);
  assert.equal(byId.size, targets.size, 'every entry recorded');
  assert.deepEqual(
    [...byId].filter(([, n]) => n !== 1),
    [],
    'each once',
  );
  const wrong: string[] = [];
  for (const l of lines) {
    const shape = targets.get(l.mirrored.target) as Shape;
    const r = l.response;
    if (r.status !== shape.status) wrong.push(`${shape.label}: status ${r.status}`);
    const flat = r.headers.flat();
    const headerDiff = flat.findIndex((v, i) => v !== shape.headers[i] && v !== '[redacted]');
    if (flat.length !== shape.headers.length || headerDiff !== -1) wrong.push(`${shape.label}: headers differ at item ${headerDiff}`);
    const body = r.body.encoding === 'base64' ? Buffer.from(r.body.text, 'base64') : Buffer.from(r.body.text, 'utf8');
    if (!body.equals(shape.body)) wrong.push(`${shape.label}: recorded body (${body.length} B) differs from the ${shape.body.length} B sent`);
  }
  assert.deepEqual(wrong.slice(0, 10), [], `${wrong.length} recorded responses differ`);
});

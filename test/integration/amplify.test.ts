import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { stringify } from 'yaml';
import { copiesFor, headerValue, keysFor, loadConfig } from '@mirrorplane/core';
import { buildPipeline, createLogger } from '@mirrorplane/runtime';
import { ReplayWorker } from '@mirrorplane/worker';
import { RecordingServer, RedisServer, waitFor, type Received } from '../helpers/index.js';
import { appendEntries } from '../helpers/in-process-worker.js';

// Amplification: a rule's `amplify` sends N copies of a matching request, each with its own
// x-mirrorplane-copy; post stages (here the recording) see copy 1 only; the entry is
// acknowledged once every copy is done.

let redis: RedisServer;
let dir: string;

before(async () => {
  redis = await RedisServer.start();
  dir = mkdtempSync(join(tmpdir(), 'mp-amplify-'));
});

after(async () => {
  await redis?.close();
  rmSync(dir, { recursive: true, force: true });
});

/** A worker built as `mirrorplane worker` builds it: config file, pipeline (rules, recording). */
async function startWorker(stagingUrl: string, prefix: string, file: object): Promise<ReplayWorker> {
  const path = join(dir, `${prefix}.yaml`);
  const config = loadConfig({
    role: 'worker',
    env: { REDIS_URL: redis.url, MIRRORPLANE_PREFIX: prefix, STAGING_URL: stagingUrl, ADMIN_PORT: '0', LOG_LEVEL: 'warn' },
    file: { path, text: stringify(file) },
  });
  const logger = createLogger(config, 'worker', new Writable({ write: (_c, _e, done) => done() }));
  const built = await buildPipeline(config, logger);
  const worker = new ReplayWorker(config, logger, { pipeline: built.pipeline });
  await worker.start();
  return worker;
}

const copyOf = (r: Received) => headerValue(r.rawHeaders, 'x-mirrorplane-copy');
const idOf = (r: Received) => headerValue(r.rawHeaders, 'x-mirrorplane-id') as string;

test('×3 delivers exactly 3 copies numbered 1-3; ×2.5 sends 2 or 3 as copiesFor decides by entry id; recording sees copy 1 only', async () => {
  const staging = await RecordingServer.start(async (_req, res) => {
    await new Promise((r) => setTimeout(r, Math.random() * 10));
    res.writeHead(200).end('ok');
  });
  const client = redis.client();
  const prefix = `t${randomBytes(4).toString('hex')}`;
  const recordings = join(dir, `rec-${prefix}`);
  const worker = await startWorker(staging.url, prefix, {
    recording: { dir: recordings },
    rules: [
      { name: 'three', match: { pathPrefix: '/three/' }, amplify: 3 },
      { name: 'half', match: { pathPrefix: '/half/' }, amplify: 2.5 },
    ],
  });
  try {
    await appendEntries(client, prefix, 'three', 20);
    await appendEntries(client, prefix, 'half', 200);
    await appendEntries(client, prefix, 'once', 10);
    const keys = keysFor(prefix);
    const ids = (await client.xrange(keys.stream, '-', '+')).map(([id]) => id);
    assert.equal(ids.length, 230);
    const halfIds = ids.slice(20, 220);
    const expected = 60 + halfIds.reduce((n, id) => n + copiesFor(2.5, id), 0) + 10;
    await waitFor(
      'every copy received and every entry finished',
      async () => staging.received.length >= expected && (await client.xlen(keys.stream)) === 0,
      30_000,
    );
    assert.equal(staging.received.length, expected);

    const byEntry = new Map<string, Received[]>();
    for (const r of staging.received) byEntry.set(idOf(r), [...(byEntry.get(idOf(r)) ?? []), r]);
    for (const id of ids.slice(0, 20)) {
      const got = byEntry.get(id) ?? [];
      assert.deepEqual(got.map(copyOf).sort(), ['1', '2', '3'], `entry ${id}`);
      // The copies are the same request, byte for byte, but for their copy number.
      const strip = (r: Received) => ({
        ...r,
        receivedAt: 0,
        rawHeaders: r.rawHeaders.filter((_, i, a) => (a[i - (i % 2)] as string).toLowerCase() !== 'x-mirrorplane-copy'),
      });
      assert.deepEqual(strip(got[1]!), { ...strip(got[0]!) });
      assert.deepEqual(strip(got[2]!), { ...strip(got[0]!) });
    }
    const counts = new Set<number>();
    for (const id of halfIds) {
      const n = copiesFor(2.5, id);
      counts.add(n);
      assert.deepEqual((byEntry.get(id) ?? []).map(copyOf).sort(), n === 3 ? ['1', '2', '3'] : ['1', '2'], `entry ${id}`);
    }
    assert.deepEqual([...counts].sort(), [2, 3], '2.5× sends 2 for some entries and 3 for others');
    // Not amplified: sent once, with no copy header at all.
    for (const id of ids.slice(220)) assert.deepEqual((byEntry.get(id) ?? []).map(copyOf), [null]);
    // Extra copies are counted apart from replays.
    const metrics = await worker.metrics.getSingleMetricAsString('mirrorplane_worker_copies_total');
    assert.match(metrics, new RegExp(`outcome="2xx"} ${expected - 230}\\b`));
    // The recording (a post stage) wrote one line per entry: copy 1's.
    await waitFor('230 recorded lines', () => {
      const lines = readdirSync(recordings).flatMap((f) => readFileSync(join(recordings, f), 'utf8').split('\n').filter(Boolean));
      return lines.length >= 230 ? lines : null;
    });
    const lines = readdirSync(recordings).flatMap((f) => readFileSync(join(recordings, f), 'utf8').split('\n').filter(Boolean));
    assert.equal(lines.length, 230);
  } finally {
    await worker.close();
    client.disconnect();
    await staging.close();
  }
});

test('an amplified entry is acknowledged only when its last copy is answered', async () => {
  let release: () => void = () => undefined;
  const held = new Promise<void>((r) => (release = r));
  const staging = await RecordingServer.start(async (req, res) => {
    if (copyOf(req) === '3') await held;
    res.writeHead(200).end('ok');
  });
  const client = redis.client();
  const prefix = `t${randomBytes(4).toString('hex')}`;
  const keys = keysFor(prefix);
  const worker = await startWorker(staging.url, prefix, { rules: [{ name: 'three', match: { pathPrefix: '/three/' }, amplify: 3 }] });
  try {
    await appendEntries(client, prefix, 'three', 5);
    await waitFor('copies 1-3 of each entry sent', () => staging.received.length === 15);
    // Copies 1 and 2 are answered, copy 3 held: nothing is finished yet.
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(await client.xlen(keys.stream), 5);
    assert.equal(Number(((await client.xpending(keys.stream, keys.group)) as [number])[0]), 5);
    release();
    await waitFor('every entry finished', async () => (await client.xlen(keys.stream)) === 0);
  } finally {
    release();
    await worker.close();
    client.disconnect();
    await staging.close();
  }
});

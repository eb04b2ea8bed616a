import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { stringify } from 'yaml';
import { loadConfig } from '@mirrorplane/core';
import { buildPipeline, createLogger } from '@mirrorplane/runtime';
import { ReplayWorker } from '@mirrorplane/worker';
import { RecordingServer, RedisServer, waitFor } from '../helpers/index.js';
import { appendEntries } from '../helpers/in-process-worker.js';

// Issue #19, caps with several origins and routing rules: the cap of `default` applies to the
// requests `default` receives; a request a rule routes to another, uncapped origin is not capped
// ("A token not used (... routed to another origin ...) is given back").

let redis: RedisServer;
let dir: string;

before(async () => {
  redis = await RedisServer.start();
  dir = mkdtempSync(join(tmpdir(), 'mp-origins-'));
});

after(async () => {
  await redis?.close();
  rmSync(dir, { recursive: true, force: true });
});

test('default capped at 1/s (burst 1): 40 requests routed to an uncapped origin go concurrently, not one at a time behind the default cap', async () => {
  const defaultStaging = await RecordingServer.start((_req, res) => {
    res.writeHead(200).end('ok');
  });
  let inFlight = 0;
  let most = 0;
  const reports = await RecordingServer.start(async (_req, res) => {
    inFlight++;
    most = Math.max(most, inFlight);
    await new Promise((r) => setTimeout(r, 300));
    inFlight--;
    res.writeHead(200).end('ok');
  });
  const prefix = `t${randomBytes(4).toString('hex')}`;
  const client = redis.client();
  await appendEntries(client, prefix, 'rep', 40);
  const path = join(dir, `${prefix}.yaml`);
  const config = loadConfig({
    role: 'worker',
    env: { REDIS_URL: redis.url, MIRRORPLANE_PREFIX: prefix, ADMIN_PORT: '0', LOG_LEVEL: 'warn', WORKER_CONCURRENCY: '16' },
    file: {
      path,
      text: stringify({
        origins: { default: defaultStaging.url, reports: reports.url },
        rateLimit: { default: { perSecond: 1, burst: 1 } },
        rules: [{ name: 'to-reports', match: { pathPrefix: '/rep/' }, route: 'reports' }],
      }),
    },
  });
  const logger = createLogger(config, 'worker', new Writable({ write: (_c, _e, done) => done() }));
  const built = await buildPipeline(config, logger);
  const worker = new ReplayWorker(config, logger, { pipeline: built.pipeline });
  await worker.start();
  try {
    const started = Date.now();
    await waitFor('40 requests at reports', () => reports.received.length >= 40, 60_000);
    const took = Date.now() - started;
    assert.equal(defaultStaging.received.length, 0);
    // 40 × 300 ms one at a time is 12 s; at concurrency 16, about 1 s.
    assert.ok(most >= 4, `at most ${most} in flight at the uncapped origin; 40 requests took ${took} ms`);
  } finally {
    await worker.close();
    client.disconnect();
    await defaultStaging.close();
    await reports.close();
  }
});

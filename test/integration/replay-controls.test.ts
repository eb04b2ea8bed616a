import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { headerValue, stagingHeaders } from '@mirrorplane/core';
import { RecordingServer, RedisServer, runCli } from '../helpers/index.js';
import { appendEntries } from '../helpers/in-process-worker.js';

// `mirrorplane replay --staging --amplify` sends every copy, and takes the deployment's rate
// tokens like the workers do.

let redis: RedisServer;

before(async () => {
  redis = await RedisServer.start();
});

after(async () => {
  await redis?.close();
});

test('replay --staging --amplify 2 under STAGING_RATE_LIMIT=20,5: two numbered copies of each request, at most 20/s plus the burst', async () => {
  const staging = await RecordingServer.start();
  const client = redis.client();
  const prefix = `t${randomBytes(4).toString('hex')}`;
  const from = Date.now() - 1000;
  await appendEntries(client, prefix, 'win', 30);
  try {
    const started = Date.now();
    const result = await runCli(['replay', '--from', String(from), '--speed', 'max', '--staging', staging.url, '--amplify', '2', '--json'], {
      REDIS_URL: redis.url,
      MIRRORPLANE_PREFIX: prefix,
      STAGING_RATE_LIMIT: '20,5',
    });
    const took = Date.now() - started;
    assert.equal(result.code, 0, result.stderr);
    const summary = JSON.parse(result.stdout) as { sent: number; statuses: Record<string, number>; copies: Record<string, number> };
    assert.equal(summary.sent, 30);
    assert.deepEqual(summary.statuses, { '2xx': 30 });
    assert.deepEqual(summary.copies, { '2xx': 30 });
    assert.equal(staging.received.length, 60);
    for (let i = 0; i < 30; i++) {
      const copies = staging.received.filter((r) => r.url === `/win/${i}`).map((r) => headerValue(r.rawHeaders, 'x-mirrorplane-copy'));
      assert.deepEqual(copies.sort(), ['1', '2'], `/win/${i}`);
    }
    // 60 sends: 5 at once, then 20 a second.
    const times = staging.received.map((r) => r.receivedAt).sort((a, b) => a - b);
    const span = times[times.length - 1]! - times[0]!;
    assert.ok(span >= ((60 - 5 - 2) / 20) * 1000, `60 requests in ${span} ms at a cap of 20/s with a burst of 5`);
    assert.ok(took < 30_000);
  } finally {
    client.disconnect();
    await staging.close();
  }
});

test('a copy number sent by the client never reaches staging: only the replay writes it', () => {
  const out = stagingHeaders(['Host', 'a.test', 'X-Mirrorplane-Copy', '7', 'x-mirrorplane-copy', '9'], { host: null, entryId: '1-0', attempt: 1 });
  assert.equal(headerValue(out, 'x-mirrorplane-copy'), null);
});

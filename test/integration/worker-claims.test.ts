import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { Redactor, keysFor, redactionSettings } from '@mirrorplane/core';
import { createRetryQueue, ensureGroup, listFailed } from '@mirrorplane/runtime';
import { RecordingServer, RedisServer, waitFor, useStack } from '../helpers/index.js';
import { InProcessWorker, appendEntries } from '../helpers/in-process-worker.js';

// The claimer: entries a dead worker left are taken over and replayed; an entry delivered
// more than max(10, 2 × REPLAY_ATTEMPTS) times goes to the failed set instead of circling.

let redis: RedisServer;
useStack({}, (s) => {
  redis = s.redis;
});

test('an entry delivered too often goes to the failed set as poison; an abandoned one is replayed', async () => {
  const staging = await RecordingServer.start();
  const client = redis.client();
  const prefix = `t${randomBytes(4).toString('hex')}`;
  const keys = keysFor(prefix);
  await ensureGroup(client, keys.stream, keys.group);
  await appendEntries(client, prefix, 'claim', 2);
  const read = (await client.xreadgroup('GROUP', keys.group, 'dead', 'COUNT', 2, 'STREAMS', keys.stream, '>')) as [string, [string, string[]][]][];
  const [poisonId, abandonedId] = read[0]![1].map(([id]) => id) as [string, string];
  // Eleven more deliveries of the first one, as if it had crashed eleven workers.
  for (let i = 0; i < 11; i++) await client.xclaim(keys.stream, keys.group, 'dead', 0, poisonId);
  const w = await InProcessWorker.start(redis, staging.url, { CLAIM_IDLE_MS: '100' }, prefix);
  const queueConnection = redis.client();
  const queue = createRetryQueue(keys, queueConnection);
  try {
    await waitFor('the abandoned entry replayed', () => staging.byEntryId(abandonedId).length === 1, 30_000);
    const failed = await waitFor(
      'the poison entry in the failed set',
      async () => {
        const list = await listFailed(queue, 10, new Redactor(redactionSettings(undefined)));
        return list.length === 1 ? list : null;
      },
      30_000,
      100,
    );
    assert.equal(failed[0]!.id, poisonId);
    assert.match(failed[0]!.lastError, /^delivered \d+ times without finishing$/);
    assert.equal(staging.byEntryId(poisonId).length, 0, 'the poison entry is not replayed');
    await waitFor('nothing pending', async () => Number(((await client.xpending(keys.stream, keys.group)) as [number])[0]) === 0);
  } finally {
    await w.close();
    await queue.close();
    queueConnection.disconnect();
    client.disconnect();
    await staging.close();
  }
});

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { encodeEntryFields, keysFor, orderKeys, orderMember } from '@mirrorplane/core';
import { RecordingServer, RedisServer, waitFor } from '../helpers/index.js';
import { InProcessWorker } from '../helpers/in-process-worker.js';

// Issue #19, the `unkeyed` set: a worker that dies between its read script (entries recorded as
// unkeyed) and registering their keys holds back every later entry of its partition until the
// takeover (CONFIG.md). Emulated exactly: XREADGROUP as a consumer that never comes back, plus
// the ZADD the read script does. Then: the entry still there, or deleted from the stream since.

let redis: RedisServer;

before(async () => {
  redis = await RedisServer.start();
});

after(async () => {
  await redis?.close();
});

async function setup(prefix: string): Promise<{ deadId: string }> {
  const client = redis.client();
  const keys = keysFor(prefix);
  const add = (target: string, session: string) =>
    client.xadd(
      keys.stream,
      '*',
      ...encodeEntryFields({
        method: 'PUT',
        target,
        rawHeaders: ['Host', 'app.test', 'X-Session', session, 'Content-Length', '0'],
        body: Buffer.alloc(0),
        receivedAt: Date.now(),
        requestId: target,
        clientAddress: '127.0.0.1',
      }),
    );
  await client.xgroup('CREATE', keys.stream, keys.group, '0', 'MKSTREAM');
  const deadId = (await add('/dead/0', 'dead')) as string;
  // The dead worker's read script: delivered to it and recorded as unkeyed, then it died.
  await client.xreadgroup('GROUP', keys.group, 'dead-consumer', 'COUNT', 1, 'STREAMS', keys.stream, '>');
  await client.zadd(orderKeys(prefix).unkeyed, 0, orderMember(deadId));
  for (let i = 0; i < 10; i++) await add(`/s${i}/0`, `s${i}`);
  client.disconnect();
  return { deadId };
}

const env = { ORDER_BY: 'header:x-session', CLAIM_IDLE_MS: '1500', ORDER_MAX_WAIT_MS: '60000' };

test('a worker dead between reading and registering: its entry is taken over and the partition moves on', async () => {
  const staging = await RecordingServer.start((_req, res) => {
    res.writeHead(200).end('ok');
  });
  const prefix = `t${randomBytes(4).toString('hex')}`;
  await setup(prefix);
  const worker = await InProcessWorker.start(redis, staging.url, env, prefix);
  try {
    await waitFor('all 11 replayed', () => staging.received.length >= 11, 30_000);
    assert.ok(staging.received.some((r) => r.url === '/dead/0'));
  } finally {
    await worker.close();
    await staging.close();
  }
});

test('…and its entry deleted from the stream meanwhile (XDEL): the later entries of every key are not held back for ever', async () => {
  const staging = await RecordingServer.start((_req, res) => {
    res.writeHead(200).end('ok');
  });
  const prefix = `t${randomBytes(4).toString('hex')}`;
  const { deadId } = await setup(prefix);
  const client = redis.client();
  await client.xdel(keysFor(prefix).stream, deadId);
  const worker = await InProcessWorker.start(redis, staging.url, env, prefix);
  try {
    await waitFor('the 10 live entries replayed', () => staging.received.length >= 10, 30_000);
    await waitFor('unkeyed emptied', async () => (await client.zcard(orderKeys(prefix).unkeyed)) === 0, 10_000);
  } finally {
    await worker.close();
    client.disconnect();
    await staging.close();
  }
});

test('an older unkeyed member no acknowledgement will ever clear holds later entries back at most ORDER_MAX_WAIT_MS', async () => {
  // E.g. a worker whose registering failed and whose entry went away by a path that did not
  // acknowledge it here: nothing is pending, nothing will be claimed. Claiming is off the table
  // (CLAIM_IDLE_MS 60 s): only the wait bound can let the partition move on.
  const staging = await RecordingServer.start((_req, res) => {
    res.writeHead(200).end('ok');
  });
  const prefix = `t${randomBytes(4).toString('hex')}`;
  const { deadId } = await setup(prefix);
  const client = redis.client();
  const keys = keysFor(prefix);
  await client.xack(keys.stream, keys.group, deadId);
  await client.xdel(keys.stream, deadId);
  const worker = await InProcessWorker.start(redis, staging.url, { ...env, CLAIM_IDLE_MS: '60000', ORDER_MAX_WAIT_MS: '500' }, prefix);
  try {
    const started = Date.now();
    await waitFor('the 10 live entries replayed', () => staging.received.length >= 10, 20_000);
    assert.ok(Date.now() - started < 15_000, `took ${Date.now() - started} ms`);
    assert.equal(await client.zscore(orderKeys(prefix).unkeyed, orderMember(deadId)), '0', 'the member stayed (only the bound moved the partition on)');
  } finally {
    await worker.close();
    client.disconnect();
    await staging.close();
  }
});

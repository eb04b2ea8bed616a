import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { createServer } from 'node:net';
import { MirrorplaneError } from '@mirrorplane/core';
import { freePort, LocalRedisServer, readConsumers, readGroup, readGroups, redisAnswers } from '@mirrorplane/runtime';

test('freePort gives the preferred port when it is free and another one when it is taken', async () => {
  const any = await freePort();
  assert.equal(await freePort(any), any);
  const holder = createServer();
  await new Promise<void>((resolve) => holder.listen(any, '127.0.0.1', resolve));
  try {
    const other = await freePort(any);
    assert.notEqual(other, any);
    assert.ok(other > 0);
  } finally {
    await new Promise((resolve) => holder.close(resolve));
  }
});

test('a local redis-server answers once started, survives stop and start on its port, and close removes its directory', async () => {
  const redis = await LocalRedisServer.start({ dirPrefix: 'mp-test-local-' });
  try {
    assert.ok(await redisAnswers(redis.port));
    await redis.stop();
    assert.equal(redis.child, null);
    assert.equal(await redisAnswers(redis.port), false);
    await redis.start();
    assert.ok(await redisAnswers(redis.port));
  } finally {
    await redis.close();
  }
  assert.equal(existsSync(redis.dir), false);
  assert.equal(await redisAnswers(redis.port), false);
});

test('a redis-server that cannot start is a coded error, and leaves no directory behind', async () => {
  const error = await LocalRedisServer.start({ args: ['--no-such-option', 'x'] }).then(
    () => null,
    (e: unknown) => e,
  );
  assert.ok(error instanceof MirrorplaneError);
  assert.equal(error.code, 'MP_ERR_LOCAL_PROCESS');
  assert.match(error.message, /exited with code/);
});

test('stream info: no stream and no group read as empty, a group reports pending, lag and consumers', async () => {
  const server = await LocalRedisServer.start();
  const redis = (await import('ioredis')).Redis;
  const client = new redis(server.url);
  try {
    assert.deepEqual(await readGroups(client, 's'), []);
    assert.equal(await readGroup(client, 's', 'g'), null);
    assert.deepEqual(await readConsumers(client, 's', 'g'), []);
    const first = (await client.xadd('s', '*', 'f', '1')) as string;
    await client.xadd('s', '*', 'f', '2');
    await client.xgroup('CREATE', 's', 'g', '0');
    await client.xreadgroup('GROUP', 'g', 'c1', 'COUNT', '1', 'STREAMS', 's', '>');
    const group = await readGroup(client, 's', 'g');
    assert.ok(group);
    assert.equal(group.name, 'g');
    assert.equal(group.pending, 1);
    assert.equal(group.consumers, 1);
    assert.equal(group.lastDeliveredId, first);
    // Redis 7 reports entries-read and lag; older servers leave them null, never NaN.
    assert.ok(group.lag === null || group.lag === 1);
    assert.ok(group.entriesRead === null || group.entriesRead === 1);
    const consumers = await readConsumers(client, 's', 'g');
    assert.deepEqual(
      consumers.map((c) => [c.name, c.pending]),
      [['c1', 1]],
    );
    assert.ok(consumers[0]!.idleMs >= 0);
    assert.equal(await readGroup(client, 's', 'other'), null);
  } finally {
    client.disconnect();
    await server.close();
  }
});

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { RecordingServer, RedisServer, Stack, requestHead, sendRaw, waitFor } from '../helpers/index.js';

// The fast subset: one request through the real ingress, stream, worker and staging.
let redis: RedisServer;
let staging: RecordingServer;
let stack: Stack;

before(async () => {
  redis = await RedisServer.start();
  staging = await RecordingServer.start();
  stack = await Stack.start({ redis, stagingUrl: staging.url });
});

after(async () => {
  await stack?.close();
  await staging?.close();
  await redis?.close();
});

test('a mirrored request reaches staging', async () => {
  const res = await sendRaw(stack.ingressPort, requestHead('POST', '/smoke?x=1', ['Host', 'prod'], 5), Buffer.from('hello'));
  assert.equal(res.status, 200);
  await waitFor('the replay', () => staging.received.length === 1);
  assert.equal(staging.received[0]!.url, '/smoke?x=1');
  assert.equal(staging.received[0]!.body.toString(), 'hello');
});

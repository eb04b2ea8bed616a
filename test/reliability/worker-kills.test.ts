import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { RecordingServer, RedisServer, Stack, delayed, waitFor, useStack } from '../helpers/index.js';
import { SteadyLoad, assertAtLeastOnce, missing, untilAccepting, drainedWithoutFailures } from './steady-load.js';

let redis: RedisServer;
useStack({}, (s) => {
  redis = s.redis;
});

test('workers SIGKILLed at random points under steady load, three times: every accepted request reaches staging', async () => {
  const staging = await RecordingServer.start(delayed(10));
  const concurrency = 8;
  const stack = await Stack.start({ redis, stagingUrl: staging.url, workers: 2, env: { WORKER_CONCURRENCY: String(concurrency), CLAIM_IDLE_MS: '1000' } });
  await untilAccepting(stack.ingressPort);
  const load = SteadyLoad.start({ port: stack.ingressPort, rate: 120, tag: `kill${randomBytes(2).toString('hex')}`, maxRequests: 4000 });
  const kills = 3;
  try {
    for (let k = 0; k < kills; k++) {
      // A random point: after a random number of further replays, one of the workers dies.
      const progress = staging.received.length + 40 + Math.floor(Math.random() * 120);
      await waitFor(`staging to receive ${progress} requests`, () => staging.received.length >= progress, 60_000);
      const victim = Math.floor(Math.random() * stack.workers.length);
      const [worker] = stack.workers.splice(victim, 1);
      await worker!.stop('SIGKILL');
      await stack.addWorker();
    }
    await load.stop();
    assert.equal(load.refusedCount, 0, `the ingress refused nothing: ${JSON.stringify([...load.refused])}`);
    await waitFor('every accepted request at staging', () => missing(staging, load.accepted).length === 0, 120_000);
    const repeated = assertAtLeastOnce(staging, load.accepted);
    // Only what a killed worker held can be repeated: its in-flight replays (and finished ones
    // whose acknowledgement was not flushed yet), at most its concurrency per kill plus a tick.
    assert.ok(repeated <= kills * concurrency * 2, `repeated ${repeated} of ${load.accepted.size}`);
    await drainedWithoutFailures(stack);
  } finally {
    await load.stop();
    await stack.close();
    await staging.close();
  }
});

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { connect } from 'node:net';
import { RecordingServer, RedisServer, Stack, delayed, waitFor, useStack } from '../helpers/index.js';
import { SteadyLoad, assertAtLeastOnce, missing, untilAccepting, drainedWithoutFailures } from './steady-load.js';

let redis: RedisServer;
useStack({}, (s) => {
  redis = s.redis;
});

function portClosed(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const probe = connect(port, '127.0.0.1');
    probe.on('error', () => resolve(true));
    probe.on('connect', () => {
      probe.destroy();
      resolve(false);
    });
  });
}

test('ingress and worker SIGKILLed and restarted mid-load: no acknowledged request is lost', async () => {
  const staging = await RecordingServer.start(delayed(5));
  const stack = await Stack.start({ redis, stagingUrl: staging.url, workers: 1, env: { WORKER_CONCURRENCY: '8', CLAIM_IDLE_MS: '1000' } });
  await untilAccepting(stack.ingressPort);
  const load = SteadyLoad.start({ port: stack.ingressPort, rate: 120, tag: `restart${randomBytes(2).toString('hex')}`, maxRequests: 4000 });
  try {
    const progress = async (n: number) => {
      const target = load.accepted.size + n;
      await waitFor(`${n} more accepted requests`, () => load.accepted.size >= target, 60_000);
    };
    await progress(150);
    // The ingress dies with requests in flight; those never answered 200 are not acknowledged.
    await stack.ingress.stop('SIGKILL');
    await stack.startIngress();
    await progress(150);
    await stack.workers[0]!.stop('SIGKILL');
    stack.workers.shift();
    await stack.addWorker();
    await progress(150);
    // Both at once.
    await Promise.all([stack.ingress.stop('SIGKILL'), stack.workers[0]!.stop('SIGKILL')]);
    stack.workers.shift();
    await stack.startIngress();
    await stack.addWorker();
    await progress(150);
    await load.stop();
    await waitFor('every accepted request at staging', () => missing(staging, load.accepted).length === 0, 120_000);
    assertAtLeastOnce(staging, load.accepted);
    await drainedWithoutFailures(stack);
  } finally {
    await load.stop();
    await stack.close();
    await staging.close();
  }
});

test('SIGTERM under load: the ingress stops accepting, answers what it took, exits 0; nothing acknowledged is lost', async () => {
  const staging = await RecordingServer.start(delayed(5));
  const stack = await Stack.start({ redis, stagingUrl: staging.url, workers: 1, env: { WORKER_CONCURRENCY: '8' } });
  await untilAccepting(stack.ingressPort);
  const load = SteadyLoad.start({ port: stack.ingressPort, rate: 150, tag: `iterm${randomBytes(2).toString('hex')}`, maxRequests: 4000 });
  try {
    await waitFor('load under way', () => load.accepted.size >= 200, 60_000);
    const ingress = stack.ingress;
    ingress.child.kill('SIGTERM');
    assert.equal(await ingress.exited, 0, ingress.stdout.slice(-2000));
    assert.ok(await portClosed(stack.ingressPort), 'it stopped accepting');
    const stopped = ingress.logs().find((l) => l.msg === 'ingress stopped');
    assert.equal(stopped?.unfinished, 0, 'every request it took was answered');
    // On a loaded machine the load may not have tried again yet: wait for a try, don't assume one.
    await waitFor('a request tried after the stop, and refused', () => load.refusedCount > 0, 60_000);
    await load.stop();
    await waitFor('every accepted request at staging', () => missing(staging, load.accepted).length === 0, 60_000);
    const repeated = assertAtLeastOnce(staging, load.accepted);
    assert.equal(repeated, 0, 'a graceful stop repeats nothing');
  } finally {
    await load.stop();
    await stack.close();
    await staging.close();
  }
});

test('SIGTERM under load: the worker finishes or hands back what it holds within the deadline and exits 0', async () => {
  const staging = await RecordingServer.start(delayed(400));
  const concurrency = 16;
  // A long claim idle time: the next worker gets handed-back entries because they were handed back.
  const stack = await Stack.start({
    redis,
    stagingUrl: staging.url,
    workers: 1,
    env: { WORKER_CONCURRENCY: String(concurrency), SHUTDOWN_TIMEOUT_MS: '200', CLAIM_IDLE_MS: '60000' },
  });
  await untilAccepting(stack.ingressPort);
  const load = SteadyLoad.start({ port: stack.ingressPort, rate: 50, tag: `wterm${randomBytes(2).toString('hex')}`, maxRequests: 4000 });
  try {
    await waitFor('the worker to be busy', () => staging.received.length >= 40, 60_000);
    const worker = stack.workers[0]!;
    const signalled = Date.now();
    worker.child.kill('SIGTERM');
    assert.equal(await worker.exited, 0, worker.stdout.slice(-2000));
    // The deadline plus bounded close steps; far below the claim idle time.
    assert.ok(Date.now() - signalled < 15_000, `exited in ${Date.now() - signalled} ms`);
    const stopped = worker.logs().find((l) => l.msg === 'worker stopped');
    assert.ok(stopped !== undefined);
    const handedBack = Number(stopped.handedBack);
    assert.ok(handedBack <= concurrency);
    stack.workers.shift();
    await stack.addWorker();
    await waitFor('replays again after the restart', () => staging.received.length >= 150, 60_000);
    await load.stop();
    assert.equal(load.refusedCount, 0, 'the ingress does not depend on workers');
    await waitFor('every accepted request at staging', () => missing(staging, load.accepted).length === 0, 60_000);
    const repeated = assertAtLeastOnce(staging, load.accepted);
    assert.ok(repeated <= handedBack, `only handed-back entries are repeated (${repeated} repeated, ${handedBack} handed back)`);
  } finally {
    await load.stop();
    await stack.close();
    await staging.close();
  }
});

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { loadConfig, type Role } from '@mirrorplane/core';
import { Ingress } from '@mirrorplane/ingress';
import { buildPipeline, createLogger } from '@mirrorplane/runtime';
import { ReplayWorker } from '@mirrorplane/worker';
import { header, requestHead, sendRaw, waitFor, withStack, type TestStack } from '../helpers/index.js';

function configFor(s: TestStack, role: Role, prefix: string) {
  return loadConfig({
    role,
    env: {
      REDIS_URL: s.redis.url,
      MIRRORPLANE_PREFIX: prefix,
      STAGING_URL: s.staging.url,
      INGRESS_HOST: '127.0.0.1',
      INGRESS_PORT: '0',
      ADMIN_PORT: '0',
      LOG_LEVEL: 'silent',
    },
  });
}

test('the ingress and a worker built in-process carry a request to staging, and close without leaving a connection', async () => {
  await withStack({ staging: true }, async (s) => {
    const prefix = `t${randomBytes(4).toString('hex')}`;
    const logger = createLogger({ logLevel: 'silent' }, 'test');
    const ingress = new Ingress(configFor(s, 'ingress', prefix), logger);
    s.defer(() => ingress.close());
    const workerConfig = configFor(s, 'worker', prefix);
    const built = await buildPipeline(workerConfig, logger);
    const worker = new ReplayWorker(workerConfig, logger, { pipeline: built.pipeline });
    s.defer(() => worker.close());
    const { port } = await ingress.listen();
    await worker.start();
    const res = await sendRaw(port, requestHead('PUT', '/in-process?a=1', ['Host', 'prod', 'X-Request-ID', 'inproc-1'], 3), Buffer.from('abc'));
    assert.equal(res.status, 200);
    const received = await waitFor('the replay', () => s.staging.received.find((r) => header(r.rawHeaders, 'x-request-id') === 'inproc-1'));
    assert.equal(received.method, 'PUT');
    assert.equal(received.url, '/in-process?a=1');
    assert.equal(received.body.toString(), 'abc');
    const client = s.client();
    await waitFor('the entry to be finished', async () => (await client.xlen(s.keys(prefix).stream)) === 0);
  });
});

test('a test that leaves a Redis connection open fails, naming the connection', async () => {
  let ingress: Ingress | null = null;
  try {
    const error = await withStack({}, async (s) => {
      const logger = createLogger({ logLevel: 'silent' }, 'test');
      ingress = new Ingress(
        loadConfig({ role: 'ingress', env: { REDIS_URL: s.redis.url, INGRESS_PORT: '0', INGRESS_HOST: '127.0.0.1', ADMIN_PORT: '0' } }),
        logger,
      );
      await ingress.listen();
      // Forgot ingress.close(): its connections outlive the test.
    }).then(
      () => null,
      (e: unknown) => e,
    );
    assert.ok(error instanceof Error, 'withStack rejected');
    assert.match(error.message, /left \d+ Redis connection\(s\) open: .*mirrorplane-/);
  } finally {
    // Closed here so that this file itself leaks nothing.
    await (ingress as Ingress | null)?.close();
  }
});

test('a fixture a test did not ask for is refused with a clear message', async () => {
  await withStack({}, async (s) => {
    assert.throws(() => s.staging, /did not ask for a staging server/);
    assert.throws(() => s.roles, /did not ask for the ingress and workers/);
  });
});

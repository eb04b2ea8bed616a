import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { loadConfig, keysFor } from '@mirrorplane/core';
import { Ingress } from '@mirrorplane/ingress';
import { createLogger } from '@mirrorplane/runtime';
import { RedisServer, requestHead, sendOneByOne, sendRaw, waitFor } from '../helpers/index.js';

/**
 * Issue #17: append deadlines moved into one ExpiryQueue that "drops finished items at its head
 * as new ones come, so it holds about what is in flight". RELIABILITY.md §4: "the ingress holds
 * at most the requests in flight (each ≤ MAX_BODY_BYTES)". These tests measure the Buffer memory
 * (process.memoryUsage().arrayBuffers after a full GC) an in-process ingress keeps once every
 * request has been answered: nothing is in flight, so no request body may be held.
 */

setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;

const MiB = 1024 * 1024;

function retainedBuffers(): number {
  gc();
  gc();
  return process.memoryUsage().arrayBuffers;
}

async function inFlight(ingress: Ingress): Promise<number> {
  const metric = await ingress.metrics.getSingleMetric('mirrorplane_ingress_in_flight')?.get();
  return Number(metric?.values[0]?.value ?? -1);
}

async function startIngress(redis: RedisServer, env: Record<string, string>) {
  const prefix = `t${randomBytes(4).toString('hex')}`;
  const config = loadConfig({
    role: 'ingress',
    env: {
      REDIS_URL: redis.url,
      MIRRORPLANE_PREFIX: prefix,
      INGRESS_HOST: '127.0.0.1',
      INGRESS_PORT: '0',
      ADMIN_PORT: '0',
      LOG_LEVEL: 'silent',
      ...env,
    },
  });
  const ingress = new Ingress(config, createLogger({ logLevel: 'silent' }, 'test'));
  const { port } = await ingress.listen();
  return { ingress, port, stream: keysFor(prefix).stream };
}

/** `count` keep-alive requests one after another on one connection, each of `bodyBytes`; their statuses. */
function keepAliveClient(port: number, count: number, bodyBytes: number, tag: string): Promise<number[]> {
  return sendOneByOne(port, count, (i) =>
    Buffer.concat([Buffer.from(`POST /${tag}/${i} HTTP/1.1\r\nHost: x\r\nContent-Length: ${bodyBytes}\r\n\r\n`), Buffer.alloc(bodyBytes, i % 251)]),
  );
}

test('after a burst of concurrent requests is answered, the ingress holds none of their bodies (nothing is in flight)', async (t) => {
  const redis = await RedisServer.start();
  const client = redis.client();
  const { ingress, port, stream } = await startIngress(redis, { APPEND_TIMEOUT_MS: '60000', MAX_BODY_BYTES: String(2 * MiB) });
  try {
    // Warm up (connections, pools, code) before the baseline.
    assert.equal((await sendRaw(port, requestHead('POST', '/warm', ['Host', 'x'], 1), Buffer.from('w'))).status, 200);
    const before = retainedBuffers();
    const count = 48;
    const bodyBytes = MiB;
    // Redis paused for a moment (far below APPEND_TIMEOUT_MS) while the burst arrives, so its
    // appends are all sent before the first answer: an ordinary hiccup.
    redis.signal('SIGSTOP');
    let statuses: number[];
    try {
      const answers = Promise.all(
        Array.from({ length: count }, (_, i) =>
          sendRaw(port, requestHead('POST', `/burst/${i}`, ['Host', 'x'], bodyBytes), Buffer.alloc(bodyBytes, i)).then((r) => r.status),
        ),
      );
      await waitFor('every request of the burst to wait for Redis', async () => (await inFlight(ingress)) === count, 60_000);
      redis.signal('SIGCONT');
      statuses = await answers;
    } finally {
      redis.signal('SIGCONT');
    }
    assert.deepEqual(
      statuses,
      statuses.map(() => 200),
    );
    assert.equal(await client.xlen(stream), count + 1);
    // Every request answered and its connection closed: nothing in flight.
    const held = retainedBuffers() - before;
    t.diagnostic(`Buffer memory held after ${count} answered requests of ${bodyBytes} bytes: ${(held / MiB).toFixed(1)} MiB`);
    // One more (tiny) request: the queue drops its finished items when a new one is added.
    assert.equal((await sendRaw(port, requestHead('POST', '/one-more', ['Host', 'x'], 1), Buffer.from('w'))).status, 200);
    t.diagnostic(`after one more request: ${((retainedBuffers() - before) / MiB).toFixed(1)} MiB`);
    assert.ok(held < 8 * MiB, `the ingress still holds ${(held / MiB).toFixed(1)} MiB of Buffers with nothing in flight (${count} bodies of 1 MiB were sent)`);
  } finally {
    await ingress.close();
    client.disconnect();
    await redis.close();
  }
});

for (const { name, clients, perClient, bodyBytes } of [
  {
    name: 'under sustained load the ingress holds about the requests in flight, not the last thousand answered',
    clients: 6,
    perClient: 120,
    bodyBytes: 256 * 1024,
  },
  {
    name: 'under sustained load from many connections (small bodies) the ingress holds about the requests in flight',
    clients: 32,
    perClient: 80,
    bodyBytes: 64 * 1024,
  },
]) {
  test(name, async (t) => {
    const redis = await RedisServer.start();
    const client = redis.client();
    const { ingress, port, stream } = await startIngress(redis, { APPEND_TIMEOUT_MS: '60000', MAX_BODY_BYTES: String(MiB) });
    try {
      assert.equal((await sendRaw(port, requestHead('POST', '/warm', ['Host', 'x'], 1), Buffer.from('w'))).status, 200);
      const before = retainedBuffers();
      let peak = 0;
      let running = true;
      const sampler = (async () => {
        while (running) {
          await new Promise((r) => setTimeout(r, 150));
          peak = Math.max(peak, retainedBuffers() - before);
        }
      })();
      const results = await Promise.all(Array.from({ length: clients }, (_, i) => keepAliveClient(port, perClient, bodyBytes, `c${i}`)));
      running = false;
      await sampler;
      for (const statuses of results) assert.ok(statuses.every((s) => s === 200));
      assert.equal(await client.xlen(stream), clients * perClient + 1);
      // After the load, with nothing in flight.
      const after = retainedBuffers() - before;
      t.diagnostic(
        `peak Buffer memory during load: ${(peak / MiB).toFixed(1)} MiB; after: ${(after / MiB).toFixed(1)} MiB; in flight at most ${clients} × ${bodyBytes / 1024} KiB`,
      );
      // In flight: at most `clients` requests of `bodyBytes` (2× for the body's copies), plus slack.
      const bound = clients * 2 * bodyBytes + 16 * MiB;
      assert.ok(peak < bound, `peak ${(peak / MiB).toFixed(1)} MiB over ${(bound / MiB).toFixed(1)} MiB`);
      assert.ok(after < 8 * MiB, `after the load: ${(after / MiB).toFixed(1)} MiB held`);
    } finally {
      await ingress.close();
      client.disconnect();
      await redis.close();
    }
  });
}

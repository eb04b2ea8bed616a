import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { MirrorplaneProcess, RedisServer, freePort, freePorts, waitFor, useStack } from '../helpers/index.js';

// INGRESS_PROCESSES: several ingress processes share the traffic port (node:cluster).

let redis: RedisServer;
useStack({}, (s) => {
  redis = s.redis;
});

test('two ingress processes share the port, each with its own admin port, and stop together on SIGTERM', async () => {
  const port = await freePort();
  // The second process takes ADMIN_PORT + 1: both must be free.
  const [adminPort] = (await freePorts(2)) as [number];
  const prefix = `cluster-${randomBytes(4).toString('hex')}`;
  const ingress = new MirrorplaneProcess(['ingress'], {
    REDIS_URL: redis.url,
    MIRRORPLANE_PREFIX: prefix,
    INGRESS_HOST: '127.0.0.1',
    INGRESS_PORT: String(port),
    ADMIN_PORT: String(adminPort),
    INGRESS_PROCESSES: '2',
  });
  try {
    await waitFor('two ingress processes listening', () => ingress.logs().filter((l) => l.msg === 'ingress listening').length === 2, 60_000).catch(
      (error: Error) => {
        throw new Error(`${error.message}\n--- output:\n${ingress.stdout.slice(-2000)}\n${ingress.stderr.slice(-2000)}`);
      },
    );
    const listening = ingress.logs().filter((l) => l.msg === 'ingress listening');
    assert.notEqual(listening[0]?.pid, listening[1]?.pid);
    assert.deepEqual(listening.map((l) => l.adminPort).sort(), [adminPort, adminPort + 1].sort());

    // Fresh connections, so the primary hands them to both processes in turn.
    const count = 40;
    const statuses = await Promise.all(
      Array.from({ length: count }, (_, i) =>
        fetch(`http://127.0.0.1:${port}/orders/${i}`, { method: 'POST', body: `order ${i}`, headers: { connection: 'close' } }).then(async (res) => {
          await res.arrayBuffer();
          return res.status;
        }),
      ),
    );
    assert.deepEqual(statuses, Array(count).fill(200));
    const client = redis.client();
    try {
      assert.equal(await client.xlen(`{${prefix}}:stream`), count);
    } finally {
      client.disconnect();
    }
    const accepted = await Promise.all(
      [adminPort, adminPort + 1].map(async (p) => {
        const text = await (await fetch(`http://127.0.0.1:${p}/metrics`)).text();
        return Number(/^mirrorplane_ingress_requests_accepted_total (\d+)/m.exec(text)?.[1] ?? NaN);
      }),
    );
    // Each process counts what it accepted; together, every request.
    assert.equal(accepted[0]! + accepted[1]!, count);

    assert.equal(await ingress.stop('SIGTERM'), 0);
    assert.equal(ingress.logs().filter((l) => l.msg === 'ingress stopped').length, 2);
  } finally {
    await ingress.stop('SIGKILL');
  }
});

test('INGRESS_PROCESSES must be a positive integer', async () => {
  const ingress = new MirrorplaneProcess(['ingress'], { REDIS_URL: redis.url, INGRESS_PROCESSES: '0', ADMIN_PORT: '0' });
  assert.equal(await ingress.exited, 2);
  assert.match(ingress.stderr, /INGRESS_PROCESSES/);
});

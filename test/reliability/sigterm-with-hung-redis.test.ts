import { test } from 'node:test';
import assert from 'node:assert/strict';
import { RecordingServer, RedisServer, Stack, useStack, withDeadline } from '../helpers/index.js';
import { SteadyLoad } from './steady-load.js';

// Hostile pass on issue 11: SIGTERM while Redis is hung (SIGSTOP, connections open) and replays
// are in flight. README: "Processes shut down gracefully on SIGTERM"; a worker "finishes its
// replays within SHUTDOWN_TIMEOUT_MS, hands back what is left … and exits 0"; the ingress closes
// Redis and exits 0. A Redis that never answers must not hold either process for ever.

let redis: RedisServer;

useStack({}, (s) => {
  redis = s.redis;
  s.defer(() => s.redis.signal('SIGCONT'));
});

test('SIGTERM to ingress and worker while Redis is hung: both exit within SHUTDOWN_TIMEOUT_MS + 10 s', async (t) => {
  const staging = await RecordingServer.start((_req, res) => void setTimeout(() => res.writeHead(200).end(), 300));
  const stack = await Stack.start({
    redis,
    stagingUrl: staging.url,
    workers: 1,
    env: { SHUTDOWN_TIMEOUT_MS: '1000', APPEND_TIMEOUT_MS: '1000', CLAIM_IDLE_MS: '2000' },
  });
  const load = SteadyLoad.start({ port: stack.ingressPort, rate: 100, tag: 'hung', maxRequests: 400 });
  try {
    const { waitFor } = await import('../helpers/index.js');
    await waitFor('replays running', () => staging.received.length >= 20, 30_000);
    redis.signal('SIGSTOP');
    let result: (string | number | null)[] = [];
    const started = Date.now();
    try {
      await new Promise((r) => setTimeout(r, 300));
      result = await Promise.all([stack.ingress, stack.workers[0]!].map((p) => withDeadline(p.stop('SIGTERM'), 11_000, () => 'still running')));
    } finally {
      redis.signal('SIGCONT');
    }
    await load.stop();
    t.diagnostic(`ingress, worker after SIGTERM on a hung Redis: ${result.join(', ')} (${Date.now() - started} ms)`);
    assert.deepEqual(result, [0, 0], 'both exit 0 within SHUTDOWN_TIMEOUT_MS + 10 s');
  } finally {
    redis.signal('SIGCONT');
    await load.stop();
    await stack.close();
    await staging.close();
  }
});

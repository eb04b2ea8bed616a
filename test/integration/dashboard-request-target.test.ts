import { test } from 'node:test';
import assert from 'node:assert/strict';
import { connect } from 'node:net';
import { MirrorplaneProcess, RecordingServer, RedisServer, Stack, freePort, waitFor, useStack } from '../helpers/index.js';

/**
 * Issue 12's "deleting accepted, unfinished entries from the UI is impossible", whatever the
 * request-target's shape: the dashboard classifies the path bull-board's router (express) would
 * route. A target with a fragment (`PUT /queues/api/queues/retry/empty#/retry`, which express
 * routes as `.../empty`) is refused with 400 before anything reads it; the generated
 * counterpart is in test/unit/dashboard-actions.test.ts.
 */

const TOKEN = 'dashboard-token-0123456789abcdef';

let redis: RedisServer;
useStack({}, (s) => {
  redis = s.redis;
});

/** One raw request; the target is written byte for byte (a `#` included). */
function rawPut(port: number, target: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1');
    let answer = '';
    socket.on('data', (c: Buffer) => {
      answer += c.toString('latin1');
    });
    socket.on('end', () => resolve(answer));
    socket.on('error', reject);
    socket.write(`PUT ${target} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nAuthorization: Bearer ${TOKEN}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n`);
  });
}

test('no request-target shape lets the dashboard drain or obliterate entries waiting for a retry', async () => {
  const staging = await RecordingServer.start((_req, res) => void res.writeHead(503).end());
  const stack = await Stack.start({ redis, stagingUrl: staging.url, env: { REPLAY_ATTEMPTS: '5', REPLAY_BACKOFF_MS: '3600000' } });
  const port = await freePort();
  const dashboard = new MirrorplaneProcess(['dashboard', '--port', String(port)], { ...stack.env, ADMIN_TOKEN: TOKEN });
  try {
    for (const p of ['/wait/a', '/wait/b', '/wait/c'])
      assert.equal((await fetch(`http://127.0.0.1:${stack.ingressPort}${p}`, { method: 'POST', body: 'x' })).status, 200);
    await waitFor(
      '3 retrying',
      async () => {
        const s = await stack.status();
        return s.retrying === 3 && s.backlog === 0 && s.pending === 0;
      },
      60_000,
    );
    await dashboard.waitForLog('dashboard listening');
    // The plain route is refused (the fix holds for it).
    assert.match(await rawPut(port, '/queues/api/queues/retry/empty'), /^HTTP\/1\.1 403/);
    const answers: string[] = [];
    // Pause (obliterate needs a paused queue), then obliterate: both pass as `retry-job`.
    for (const target of ['/queues/api/queues/retry/pause#/retry', '/queues/api/queues/retry/obliterate#/retry', '/queues/api/queues/retry/empty#/retry']) {
      answers.push(`${target} -> ${(await rawPut(port, target)).split('\r\n')[0]}`);
    }
    const s = await stack.status();
    assert.equal(s.retrying, 3, `entries waiting for a retry were deleted from the dashboard (${answers.join('; ')})`);
  } finally {
    await dashboard.stop();
    await stack.close();
    await staging.close();
  }
});

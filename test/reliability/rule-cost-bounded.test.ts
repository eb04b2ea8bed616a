import { test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { MirrorplaneProcess, RecordingServer, RedisServer, Stack, freePort, waitFor, useStack } from '../helpers/index.js';

/**
 * A rule's cost does not depend on the attacker: re2js is linear in the input, but its cost
 * per input byte grows with the compiled program. A pattern whose program is too large
 * (`(.*a){999}`, ~5000 instructions) is refused at config load, naming the rule and the
 * pattern; one just within the limit (`(.*a){150}`) runs only on inputs short enough to stay
 * cheap, so a 5 KB crafted path leaves the worker's event loop free.
 */

let redis: RedisServer;
let dir: string;
useStack({ dir: 'mp-rule-cost-' }, (s) => {
  redis = s.redis;
  dir = s.dir;
});

test('a rule pattern with too large a program is refused at load, naming the rule and the pattern', async () => {
  const config = join(dir, 'too-big.yaml');
  writeFileSync(config, `rules:\n  - name: big\n    match: { path: '(.*a){999}' }\n    setHeaders: { x-big: matched }\n`);
  const worker = new MirrorplaneProcess(['worker'], {
    REDIS_URL: redis.url,
    MIRRORPLANE_PREFIX: 'rule-cost-load',
    STAGING_URL: 'http://127.0.0.1:9',
    MIRRORPLANE_CONFIG: config,
  });
  const code = await worker.exited;
  assert.notEqual(code, 0);
  const said = worker.stdout + worker.stderr;
  assert.match(said, /rules\.0\.match\.path|big/, said.slice(0, 500));
  assert.match(said, /\(\.\*a\)\{999\}/, said.slice(0, 500));
  assert.match(said, /instructions, more than 1000/, said.slice(0, 500));
});

test('a pattern just within the program limit does not freeze the worker on a 5 KB path', async () => {
  const staging = await RecordingServer.start((_req, res) => void res.writeHead(200).end());
  const config = join(dir, 'rules.yaml');
  writeFileSync(config, `rules:\n  - name: big\n    match: { path: '(.*a){150}' }\n    setHeaders: { x-big: matched }\n`);
  const adminPort = await freePort();
  const stack = await Stack.start({ redis, stagingUrl: staging.url, workers: 0, env: { MIRRORPLANE_CONFIG: config } });
  try {
    await stack.addWorker({ ADMIN_PORT: String(adminPort) });
    assert.equal((await fetch(`http://127.0.0.1:${adminPort}/healthz`)).status, 200);
    const crafted = 3;
    for (let i = 0; i < crafted; i++) {
      assert.equal(
        (await fetch(`http://127.0.0.1:${stack.ingressPort}/${'a'.repeat(5000)}b${i}`, { headers: { 'x-request-id': `crafted-${i}` } })).status,
        200,
      );
    }
    // Probe the worker's event loop while it replays them: the slowest /healthz answer.
    let slowest = 0;
    const deadline = Date.now() + 120_000;
    while (staging.received.length < crafted && Date.now() < deadline) {
      const t0 = Date.now();
      await fetch(`http://127.0.0.1:${adminPort}/healthz`, { signal: AbortSignal.timeout(60_000) });
      slowest = Math.max(slowest, Date.now() - t0);
      await new Promise((r) => setTimeout(r, 20));
    }
    await waitFor('the crafted replays arrive', () => staging.received.length >= crafted, 120_000);
    assert.ok(slowest < 500, `the worker's /healthz took ${slowest} ms while a rule matched a 5 KB path`);
  } finally {
    await stack.close();
    await staging.close();
  }
});

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { RecordingServer, RedisServer, Stack, freePort, waitFor } from '../helpers/index.js';

/**
 * Attack on issue 12's "rules whose cost does not depend on the attacker": re2js is linear in
 * the input, but its cost per input byte grows with the compiled program, and RE2's repeat
 * limit (1000) still lets one short pattern compile to thousands of states. `(.*a){999}`
 * is accepted at config load; a 5 KB path then costs seconds on the worker's event loop.
 */

let redis: RedisServer;
let dir: string;
before(async () => { redis = await RedisServer.start(); dir = mkdtempSync(join(tmpdir(), 'mp-a12-rule-')); });
after(async () => { await redis?.close(); rmSync(dir, { recursive: true, force: true }); });

test('attack-12: a pattern re2js accepts with a large program does not freeze the worker on a 5 KB path', async () => {
  const staging = await RecordingServer.start((_req, res) => void res.writeHead(200).end());
  const config = join(dir, 'rules.yaml');
  writeFileSync(config, `rules:\n  - name: big\n    match: { path: '(.*a){999}' }\n    setHeaders: { x-big: matched }\n`);
  const adminPort = await freePort();
  const stack = await Stack.start({ redis, stagingUrl: staging.url, workers: 0, env: { MIRRORPLANE_CONFIG: config } });
  try {
    await stack.addWorker({ ADMIN_PORT: String(adminPort) });
    assert.equal((await fetch(`http://127.0.0.1:${adminPort}/healthz`)).status, 200);
    const crafted = 3;
    for (let i = 0; i < crafted; i++) {
      assert.equal((await fetch(`http://127.0.0.1:${stack.ingressPort}/${'a'.repeat(5000)}b${i}`, { headers: { 'x-request-id': `crafted-${i}` } })).status, 200);
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

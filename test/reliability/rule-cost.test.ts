import { test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { RecordingServer, RedisServer, Stack, freePort, header, waitFor, useStack } from '../helpers/index.js';

/**
 * Issue 12, attack 4: a rule's regular expression on an attacker's path froze every worker
 * (`^/files/([a-z0-9]+-?)*\.txt$` and a crafted 40-byte path: 7 s, doubling per character).
 * Rules now run on a linear-time engine: the worker keeps answering /healthz and replaying.
 */

let redis: RedisServer;
let dir: string;
useStack({ dir: 'mp-rule-cost-' }, (s) => {
  redis = s.redis;
  dir = s.dir;
});

test('a crafted path against a catastrophic pattern does not freeze the worker: healthz answers, replays go on', async () => {
  const staging = await RecordingServer.start((_req, res) => void res.writeHead(200).end());
  const config = join(dir, 'rules.yaml');
  writeFileSync(config, `rules:\n  - name: files\n    match: { path: '^/files/([a-z0-9]+-?)*\\.txt$' }\n    setHeaders: { x-files: matched }\n`);
  const adminPort = await freePort();
  const stack = await Stack.start({ redis, stagingUrl: staging.url, workers: 0, env: { MIRRORPLANE_CONFIG: config } });
  try {
    await stack.addWorker({ ADMIN_PORT: String(adminPort) });
    // 40 characters freeze a backtracking engine for seconds; 4000 would never end.
    const crafted = [`/files/${'a'.repeat(40)}!`, `/files/${'a1'.repeat(2000)}!`, `/files/${'ab-'.repeat(1000)}.txt!`];
    for (const path of crafted)
      assert.equal((await fetch(`http://127.0.0.1:${stack.ingressPort}${path}`, { headers: { 'x-request-id': path.slice(0, 60) } })).status, 200);
    // The worker answers its probe promptly while (and after) it replays them.
    const started = Date.now();
    const health = await fetch(`http://127.0.0.1:${adminPort}/healthz`, { signal: AbortSignal.timeout(5_000) });
    assert.equal(health.status, 200);
    assert.ok(Date.now() - started < 5_000);
    for (let i = 0; i < 20; i++) {
      assert.equal((await fetch(`http://127.0.0.1:${stack.ingressPort}/files/ok-${i}.txt`, { headers: { 'x-request-id': `ok-${i}` } })).status, 200);
    }
    await waitFor('every replay to arrive', () => staging.received.length === crafted.length + 20, 60_000);
    for (const r of staging.received) {
      assert.equal(header(r.rawHeaders, 'x-files'), r.url.endsWith('.txt') && !r.url.includes('!') ? 'matched' : undefined, r.url.slice(0, 80));
    }
    assert.equal((await fetch(`http://127.0.0.1:${adminPort}/healthz`, { signal: AbortSignal.timeout(5_000) })).status, 200);
  } finally {
    await stack.close();
    await staging.close();
  }
});

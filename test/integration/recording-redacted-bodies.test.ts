import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { RecordingServer, RedisServer, Stack, runCli, waitFor, useStack } from '../helpers/index.js';
import { requestHead, sendRaw } from '../helpers/raw-http.js';

/**
 * Recordings and HAR (recording.encrypt off, the default) hide a login form's `password=`
 * field, a JSON login body's "password" (`application/json`, and `text/json`: the one JSON
 * rule of content-type.ts) and basic-auth userinfo in an absolute-form target;
 * staging receives the bodies as sent.
 */

const M = { form: 'MKFORMPW61', json: 'MKJSONPW62', userinfo: 'MKRECUSER63', textJson: 'MKTEXTJSON64' };

let redis: RedisServer;
let dir: string;
useStack({ dir: 'mp-rec-bodies-' }, (s) => {
  redis = s.redis;
  dir = s.dir;
});

const forms = (m: string) => [m, Buffer.from(m).toString('base64').slice(0, 12)];

test('a password in a form or JSON (application/json, text/json) body and basic-auth userinfo are not in recordings or HAR in clear', async () => {
  const staging = await RecordingServer.start((_req, res) => void res.writeHead(200, { 'content-type': 'application/json' }).end('{"ok":true}'));
  const recordingDir = join(dir, 'rec');
  const config = join(dir, 'rec.yaml');
  writeFileSync(config, `recording:\n  dir: ${JSON.stringify(recordingDir)}\n`);
  const stack = await Stack.start({ redis, stagingUrl: staging.url, env: { MIRRORPLANE_CONFIG: config } });
  try {
    const base = `http://127.0.0.1:${stack.ingressPort}`;
    assert.equal(
      (
        await fetch(`${base}/login`, {
          method: 'POST',
          headers: { 'content-type': 'application/x-www-form-urlencoded' },
          body: `username=bob&password=${M.form}`,
        })
      ).status,
      200,
    );
    assert.equal(
      (
        await fetch(`${base}/api/session`, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: `{"username":"bob","password":"${M.json}"}`,
        })
      ).status,
      200,
    );
    assert.equal(
      (
        await fetch(`${base}/api/token`, {
          method: 'POST',
          headers: { 'content-type': 'text/json; charset=utf-8' },
          body: `{"grant":"client","client_secret":"${M.textJson}"}`,
        })
      ).status,
      200,
    );
    assert.equal((await sendRaw(stack.ingressPort, requestHead('GET', `http://op:${M.userinfo}@prod.example/account`, ['Host', 'prod.example']))).status, 200);
    await waitFor('4 replays', () => staging.received.length === 4, 60_000);
    const sent = staging.received.map((r) => r.body.toString('latin1')).sort();
    assert.deepEqual(
      sent,
      ['', `username=bob&password=${M.form}`, `{"username":"bob","password":"${M.json}"}`, `{"grant":"client","client_secret":"${M.textJson}"}`].sort(),
      'staging gets the bodies as sent',
    );
    const read = () =>
      readdirSync(recordingDir)
        .filter((f) => f.endsWith('.jsonl'))
        .map((f) => readFileSync(join(recordingDir, f), 'latin1'))
        .join('');
    await waitFor(
      '4 recorded lines',
      () => {
        try {
          return read().split('\n').filter(Boolean).length >= 4;
        } catch {
          return false;
        }
      },
      60_000,
    );
    const files = readdirSync(recordingDir)
      .filter((f) => f.endsWith('.jsonl'))
      .map((f) => join(recordingDir, f));
    const har = await runCli(['record', 'export', '--format', 'har', ...files], {});
    const leaks: string[] = [];
    for (const [where, text] of [
      ['recording files', read()],
      ['HAR export', har.stdout],
    ] as const) {
      for (const [what, m] of Object.entries(M)) if (forms(m).some((f) => text.includes(f))) leaks.push(`${what} in ${where}`);
    }
    assert.deepEqual(leaks, []);
  } finally {
    await stack.close();
    await staging.close();
  }
});

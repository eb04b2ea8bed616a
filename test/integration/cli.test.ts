import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { runCli } from '../helpers/index.js';

const root = fileURLToPath(new URL('../..', import.meta.url));

test('invalid values exit non-zero naming the variable or flag', async () => {
  const port = await runCli(['ingress'], { INGRESS_PORT: 'abc' });
  assert.equal(port.code, 2);
  assert.match(port.stderr, /INGRESS_PORT: expected an integer from 0 to 65535, got "abc"/);

  const url = await runCli(['status'], { REDIS_URL: 'http//nope' });
  assert.equal(url.code, 2);
  assert.match(url.stderr, /REDIS_URL: expected a URL/);

  const flag = await runCli(['worker', '--staging', 'http://s', '--concurrency', 'many'], {});
  assert.equal(flag.code, 2);
  assert.match(flag.stderr, /--concurrency: expected an integer/);

  const several = await runCli(['worker'], { WORKER_CONCURRENCY: '0', REPLAY_TIMEOUT_MS: 'x' });
  assert.equal(several.code, 2);
  for (const name of ['STAGING_URL', 'WORKER_CONCURRENCY', 'REPLAY_TIMEOUT_MS']) assert.match(several.stderr, new RegExp(name));

  const unknown = await runCli(['ingress', '--prot', '1'], {});
  assert.equal(unknown.code, 2);
  assert.match(unknown.stderr, /unknown option '--prot'/);
});

test('operator commands say clearly when Redis is not there', async () => {
  const result = await runCli(['status'], { REDIS_URL: 'redis://127.0.0.1:1' });
  assert.equal(result.code, 1);
  assert.match(result.stderr, /MP_ERR_REDIS_UNAVAILABLE: cannot reach Redis at redis:\/\/127\.0\.0\.1:1/);
});

test('npx mirrorplane works from the repository root', () => {
  const result = spawnSync('npx', ['--no-install', 'mirrorplane', '--help'], { cwd: root, encoding: 'utf8' });
  assert.equal(result.status, 0, result.stderr);
  for (const command of ['ingress', 'worker', 'status', 'failed', 'start']) assert.match(result.stdout, new RegExp(`\\b${command}\\b`));
});

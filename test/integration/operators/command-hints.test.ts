import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { CLI, RecordingServer, RedisServer, freePort, waitFor } from '../../helpers/index.js';

// Issue 15, item 8: "never send users to `npx mirrorplane` outside the repository"
// (the name is unclaimed on the npm registry: whoever claims it runs code on operators'
// machines). The docs were fixed; what the program itself prints was not.

const root = fileURLToPath(new URL('../../..', import.meta.url));
let redis: RedisServer;
let staging: RecordingServer;
let dir: string;
/** What `start` printed, for the hint tests. */
let startOutput = '';

before(async () => {
  redis = await RedisServer.start();
  staging = await RecordingServer.start();
  dir = mkdtempSync(join(tmpdir(), 'mp-test-npx-'));
});

after(async () => {
  await staging?.close();
  await redis?.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

test('`start`, run outside the repository, does not tell the operator to run `npx mirrorplane`', async () => {
  const port = await freePort();
  const child = spawn(process.execPath, [CLI, 'start', '--port', String(port), '--redis-url', redis.url, '--staging', staging.url, '--prefix', 'npxhint'], {
    cwd: dir,
    env: { PATH: process.env.PATH ?? '', HOME: dir, ADMIN_PORT: '0' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout.on('data', (d: Buffer) => {
    out += d.toString();
  });
  child.stderr.on('data', (d: Buffer) => {
    out += d.toString();
  });
  const exited = new Promise((r) => child.once('exit', r));
  try {
    await waitFor(`start to say it is running\n${out}`, () => /Mirrorplane is running/.test(out) && /stop:/.test(out), 60_000);
  } finally {
    child.kill('SIGINT');
    await exited;
  }
  startOutput = out;
  const hints = out.split('\n').filter((l) => /npx mirrorplane/.test(l));
  assert.deepEqual(hints, [], 'the printed hint sends the operator to the npm registry for an unclaimed name');
});

test('no message the CLI prints (any source string) says `npx mirrorplane`', () => {
  const srcDir = join(root, 'apps/cli/src');
  const files = readdirSync(srcDir, { recursive: true, encoding: 'utf8' }).filter((f) => f.endsWith('.ts'));
  const found: string[] = [];
  for (const f of files) {
    readFileSync(join(srcDir, f), 'utf8')
      .split('\n')
      .forEach((line, i) => {
        // Comments may mention it; strings the program prints may not.
        if (/[`'"][^`'"]*npx mirrorplane/.test(line) && !/^\s*(\/\/|\*)/.test(line)) found.push(`apps/cli/src/${f}:${i + 1}: ${line.trim()}`);
      });
  }
  assert.deepEqual(found, []);
});

test('the status hint `start` prints names the Redis and prefix it was given by flag (else it points at another deployment)', () => {
  assert.match(startOutput, /Mirrorplane is running/);
  const hint = startOutput.split('\n').find((l) => /^\s+status:/.test(l)) ?? '';
  assert.match(hint, new RegExp(`--redis-url ${redis.url.replace(/[.]/g, '\\.')}`), `hint: ${JSON.stringify(hint)}`);
  assert.match(hint, /--prefix npxhint/, `hint: ${JSON.stringify(hint)}`);
});

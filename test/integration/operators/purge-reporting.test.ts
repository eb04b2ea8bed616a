import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { RecordingServer, RedisServer, Stack, waitFor } from '../../helpers/index.js';
import { main } from '../../../apps/cli/src/main.js';
import type { Io } from '../../../apps/cli/src/io.js';

// Issue 15 ("never lie", "exact counts", "human durations"): `failed purge` on a
// terminal whose filters match nothing.

let redis: RedisServer;
let staging: RecordingServer;
let stack: Stack;
const N = 3;

before(async () => {
  redis = await RedisServer.start();
  staging = await RecordingServer.start((_req, res) => void res.writeHead(500).end());
  stack = await Stack.start({ redis, stagingUrl: staging.url, env: { REPLAY_ATTEMPTS: '1' } });
  for (let i = 0; i < N; i++) assert.equal((await fetch(`http://127.0.0.1:${stack.ingressPort}/p/${i}`, { method: 'POST', body: String(i) })).status, 200);
  await waitFor(`${N} failed`, async () => (await stack.status()).failed === N, 120_000, 200);
});

after(async () => {
  await stack?.close();
  await staging?.close();
  await redis?.close();
});

async function onTerminal(args: string[]): Promise<{ code: number | undefined; out: string; err: string; asked: string[] }> {
  let out = '';
  let err = '';
  let code: number | undefined;
  const asked: string[] = [];
  const io: Io = {
    out: (s) => {
      out += s;
    },
    err: (s) => {
      err += s;
    },
    setExit: (c) => {
      code = c;
    },
    stdoutIsTTY: true,
    stderrIsTTY: true,
    stdinIsTTY: true,
    confirm: async (q) => {
      asked.push(q);
      return false;
    },
  };
  const result = await main([...args, '--redis-url', redis.url, '--prefix', stack.env.MIRRORPLANE_PREFIX!], io);
  return { code: result ?? code, out, err, asked };
}

test('failed purge on a terminal, filters matching nothing, is not reported as a dry run', async () => {
  const human = await onTerminal(['failed', 'purge', '--older-than', '1d']);
  assert.equal(human.code ?? 0, 0, human.err);
  assert.doesNotMatch(human.out, /dry run/i, `no --dry-run was given:\n${human.out}`);
  assert.match(human.out, /purged 0 failed entries/);
  const json = await onTerminal(['failed', 'purge', '--older-than', '1d', '--json']);
  const result = JSON.parse(json.out) as { dryRun: boolean; done: number; filteredOut: number };
  assert.equal(result.dryRun, false, `--json says dryRun for a purge that was not one: ${json.out}`);
  assert.equal(result.filteredOut, N);
  // The same request with --yes (off a terminal) answers dryRun: false; the terminal must not differ.
  const yes = await stack.cli(['failed', 'purge', '--older-than', '1d', '--json', '--yes']);
  assert.deepEqual(JSON.parse(json.out), JSON.parse(yes.stdout));
  assert.equal((await stack.status()).failed, N);
});

test('filter descriptions use human durations (1 d, not 86,400 s)', async () => {
  const r = await stack.cli(['failed', 'replay', '--all', '--older-than', '1d', '--dry-run']);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /failed over 1 d\b|failed over 1 day|failed over 24 h/, r.stdout);
});

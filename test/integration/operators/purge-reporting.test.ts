import { test } from 'node:test';
import assert from 'node:assert/strict';
import { useStack, type Stack } from '../../helpers/index.js';
import { fillFailedSet, runCliInProcess } from '../../helpers/cli-in-process.js';

// Issue 15 ("never lie", "exact counts", "human durations"): `failed purge` on a
// terminal whose filters match nothing.

const N = 3;
let stack: Stack;
useStack({ staging: (_req, res) => void res.writeHead(500).end(), roles: { env: { REPLAY_ATTEMPTS: '1' } } }, async (s) => {
  stack = s.roles;
  await fillFailedSet(stack, N, '/p/');
});

/** The CLI in-process on a terminal whose operator declines every confirmation. */
const onTerminal = (args: string[]) => runCliInProcess(stack, args, { stdinIsTTY: true, stdoutIsTTY: true, stderrIsTTY: true });

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

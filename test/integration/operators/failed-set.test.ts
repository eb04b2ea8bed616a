import { test } from 'node:test';
import assert from 'node:assert/strict';
import { useStack, waitFor, type RecordingServer, type Stack } from '../../helpers/index.js';
import { fillFailedSet, runCliInProcess, type TestTerminal } from '../../helpers/cli-in-process.js';

// Operator actions on the failed set work on a snapshot and report exact counts.

const N = 150;
// Staging always fails, so an entry replayed by `failed replay` fails again during the command.
let stack: Stack;
let staging: RecordingServer;
useStack({ staging: (_req, res) => void res.writeHead(500).end(), roles: { env: { REPLAY_ATTEMPTS: '1', WORKER_CONCURRENCY: '32' } } }, async (s) => {
  stack = s.roles;
  staging = s.staging;
  await fillFailedSet(stack, N, '/f/');
});

/** Runs the CLI in-process with a terminal the test controls. */
const runIn = (args: string[], terminal: TestTerminal) => runCliInProcess(stack, args, terminal);

test('failed list: column headers, "showing 100 of 150", grouping by error', async () => {
  const list = await stack.cli(['failed', 'list']);
  assert.equal(list.code, 0, list.stderr);
  assert.match(list.stdout, /^Redis redis:\/\/127\.0\.0\.1:\d+ {2}prefix t[0-9a-f]+\n/);
  assert.match(list.stdout, /showing 100 of 150 failed entries, newest first \(--limit for more, --by-error to group them\)/);
  assert.match(list.stdout, /^ID +REQUEST +ATTEMPTS +FAILED AT +LAST ERROR$/m);
  assert.equal(list.stdout.match(/POST \/f\/\d+ +1 +\d{4}-/g)?.length, 100);
  const json = JSON.parse((await stack.cli(['failed', 'list', '--json', '--limit', '7'])).stdout) as unknown[];
  assert.equal(json.length, 7);
  const grouped = await stack.cli(['failed', 'list', '--by-error']);
  assert.match(grouped.stdout, /^COUNT +EXAMPLE ID +LAST ERROR$/m);
  assert.match(grouped.stdout, /^150 +\S+ +MP_ERR_STAGING_STATUS: staging answered 500/m);
  const groupedJson = JSON.parse((await stack.cli(['failed', 'list', '--by-error', '--json'])).stdout) as { total: number; groups: { count: number }[] };
  assert.equal(groupedJson.total, 150);
  assert.deepEqual(
    groupedJson.groups.map((g) => g.count),
    [150],
  );
});

test('failed replay --all replays the set as it was when it started, each entry once, with exact counts', async () => {
  const before = staging.received.length;
  const dry = JSON.parse((await stack.cli(['failed', 'replay', '--all', '--dry-run', '--json'])).stdout) as Record<string, unknown>;
  assert.deepEqual({ snapshot: dry.snapshot, matched: dry.matched, done: dry.done, dryRun: dry.dryRun }, { snapshot: N, matched: N, done: 0, dryRun: true });
  assert.equal(staging.received.length, before, 'a dry run sends nothing');

  const replay = await stack.cli(['failed', 'replay', '--all', '--json']);
  assert.equal(replay.code, 0, replay.stderr);
  const result = JSON.parse(replay.stdout) as { snapshot: number; done: number; gone: number; matched: number; filteredOut: number; missing: string[] };
  assert.equal(result.snapshot, N);
  assert.equal(result.done + result.gone, N, 'every snapshot id counted once');
  assert.equal(result.done, N, 'nobody else touched the set');
  assert.equal(result.filteredOut, 0);
  // Each entry fails again (staging still answers 500) and lands in the set once more: exactly N more tries.
  await waitFor(
    'the replayed entries to fail again',
    async () => {
      const s = await stack.status();
      return s.failed === N && s.retrying === 0 && staging.received.length >= before + N;
    },
    120_000,
    200,
  );
  assert.equal(staging.received.length, before + N, 'each entry replayed exactly once');

  const human = await stack.cli(['failed', 'replay', '--all', '--error', 'no such error']);
  assert.equal(human.code, 0, human.stderr);
  assert.match(
    human.stdout,
    /replayed 0 failed entries \(error matching \/no such error\/i\)\n {2}of 150 in the failed set when the command started; 150 left out by the filters/,
  );
});

test('failed purge: refuses without --yes off a terminal, asks on one, filters by age and error, --dry-run changes nothing', async () => {
  const refused = await stack.cli(['failed', 'purge']);
  assert.equal(refused.code, 2);
  assert.match(refused.stderr, /failed purge removes entries for good: pass --yes to confirm \(or --dry-run/);
  assert.equal((await stack.status()).failed, N);

  const old = JSON.parse((await stack.cli(['failed', 'purge', '--older-than', '1h', '--dry-run', '--json'])).stdout) as Record<string, number>;
  assert.equal(old.matched, 0);
  assert.equal(old.filteredOut, N);
  const bad = await stack.cli(['failed', 'purge', '--older-than', 'soon', '--yes']);
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /--older-than: expected a duration like 90s/);

  const declined = await runIn(['failed', 'purge'], { stdinIsTTY: true, answer: 'n' });
  assert.equal(declined.code, 2);
  assert.match(declined.asked[0] ?? '', /remove 150 failed entries for good\? \[y\/N\]/);
  assert.match(declined.err, /not confirmed; nothing removed/);
  assert.equal((await stack.status()).failed, N);

  const some = await runIn(['failed', 'purge', '--error', 'answered 500', '--older-than', '1ms'], { stdinIsTTY: true, answer: 'y' });
  assert.equal(some.code, undefined, some.err);
  assert.match(some.out, /purged 150 failed entries \(failed over 1 ms ago, error matching \/answered 500\/i\)/);
  assert.equal((await stack.status()).failed, 0);

  const none = JSON.parse((await stack.cli(['failed', 'purge', '--yes', '--json'])).stdout) as Record<string, number>;
  assert.deepEqual([none.snapshot, none.done], [0, 0]);
});

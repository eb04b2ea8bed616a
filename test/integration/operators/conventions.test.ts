import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import fc from 'fast-check';
import { SETTINGS, loadConfig } from '@mirrorplane/core';
import { checkDeployment } from '@mirrorplane/runtime';
import { RecordingServer, RedisServer, runCli } from '../../helpers/index.js';
import { formatCount, formatDuration } from '../../../apps/cli/src/format.js';

// What operators expect from a command line (kubectl, docker): a version, a context line,
// readable numbers in tables and raw ones in JSON, suggestions, no progress in a pipe.

const root = fileURLToPath(new URL('../../..', import.meta.url));
let redis: RedisServer;
let dir: string;

before(async () => {
  redis = await RedisServer.start();
  dir = mkdtempSync(join(tmpdir(), 'mp-test-conventions-'));
});

after(async () => {
  await redis?.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

const env = () => ({ REDIS_URL: `redis://:s3cret-pass@127.0.0.1:${redis.port}`, MIRRORPLANE_PREFIX: 'conv' });

test('--version prints the package version', async () => {
  const version = (JSON.parse(readFileSync(join(root, 'apps/cli/package.json'), 'utf8')) as { version: string }).version;
  for (const flag of ['--version', '-V']) {
    const r = await runCli([flag], {});
    assert.equal(r.code, 0);
    assert.equal(r.stdout, `${version}\n`);
  }
});

test('human output opens with the context line (password masked) and uses separators and human durations; --json keeps raw numbers', async () => {
  const client = redis.client();
  try {
    await client.config('SET', 'requirepass', 's3cret-pass');
    await client.auth('s3cret-pass');
    const pipeline = client.pipeline();
    // 1,234 entries, the oldest 2 h 5 min old: a backlog (no consumer group yet).
    const start = Date.now() - 7_500_000;
    for (let i = 0; i < 1234; i++) pipeline.xadd('{conv}:stream', `${start + i}-0`, 'v', '1');
    await pipeline.exec();
    const human = await runCli(['status'], env());
    assert.equal(human.code, 0, human.stderr);
    assert.match(human.stdout, new RegExp(`^Redis redis://:\\*\\*\\*@127\\.0\\.0\\.1:${redis.port} {2}prefix conv\\n`));
    assert.doesNotMatch(human.stdout + human.stderr, /s3cret/);
    assert.match(human.stdout, /^backlog +1,234$/m);
    assert.match(human.stdout, /^oldest backlog age +2 h [45] min$/m);
    const json = JSON.parse((await runCli(['status', '--json'], env())).stdout) as {
      backlog: number;
      oldestBacklogAgeMs: number;
      redisUrl: string;
      prefix: string;
    };
    assert.equal(json.backlog, 1234);
    assert.ok(json.oldestBacklogAgeMs > 7_400_000);
    assert.equal(json.redisUrl, `redis://:***@127.0.0.1:${redis.port}`);
    assert.equal(json.prefix, 'conv');
  } finally {
    await client.config('SET', 'requirepass', '');
    client.disconnect();
  }
});

test('every read of a prefix where no deployment ever started says so under the context line (an empty answer is not "all clear")', async () => {
  const note = /^Redis \S+ {2}prefix nosuch-prefix\n\(no deployment recorded at this prefix: [^\n]*check --prefix[^\n]*\)\n/;
  const wrong = { REDIS_URL: `redis://127.0.0.1:${redis.port}`, MIRRORPLANE_PREFIX: 'nosuch-prefix' };
  for (const args of [
    ['status'],
    ['failed', 'list'],
    ['failed', 'list', '--by-error'],
    ['failed', 'replay', '--all', '--dry-run'],
    ['failed', 'purge', '--dry-run'],
  ]) {
    const r = await runCli(args, wrong);
    assert.equal(r.code, 0, `${args.join(' ')}: ${r.stderr}`);
    assert.match(r.stdout, note, args.join(' '));
  }
  // Where a deployment was recorded (as an ingress or worker does at start), no note.
  const client = redis.client();
  try {
    const config = loadConfig({ role: 'cli', env: { ...wrong, MIRRORPLANE_PREFIX: 'conv-found' } });
    await checkDeployment(client, config, 'claim', '0.0.0');
  } finally {
    client.disconnect();
  }
  const right = await runCli(['failed', 'list'], { ...wrong, MIRRORPLANE_PREFIX: 'conv-found' });
  assert.equal(right.code, 0, right.stderr);
  assert.match(right.stdout, /^Redis \S+ {2}prefix conv-found\nno failed entries\n$/);
});

test('formatCount and formatDuration read like a person writes them', () => {
  assert.equal(formatCount(1234567), '1,234,567');
  assert.equal(formatCount(999), '999');
  assert.equal(formatDuration(850), '850 ms');
  assert.equal(formatDuration(1_212_100), '20 min 12 s', 'not "1212.1 s"');
  assert.equal(formatDuration(90_000_000), '1 d 1 h');
  fc.assert(
    fc.property(fc.integer({ min: 0, max: 10 ** 12 }), (ms) => {
      const text = formatDuration(ms);
      return /^(\d+ ms|\d+ s|\d+ min \d+ s|\d+ h \d+ min|\d+ d \d+ h)$/.test(text) && !/\d{4}/.test(text.replace(/^\d+ d/, ''));
    }),
  );
  fc.assert(
    fc.property(
      fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER }),
      (n) => formatCount(n).replaceAll(',', '') === String(n) && /^\d{1,3}(,\d{3})*$/.test(formatCount(n)),
    ),
  );
});

test('unknown commands and flags get a "did you mean"', async () => {
  const cases: [string[], RegExp][] = [
    [['stauts'], /unknown command 'stauts'\n\(Did you mean status\?\)/],
    [['failed', 'lsit'], /unknown command 'lsit'\n\(Did you mean list\?\)/],
    [['ingress', '--prot', '1'], /unknown option '--prot'\n\(Did you mean --port\?\)/],
    [['status', '--jsno'], /unknown option '--jsno'\n\(Did you mean --json\?\)/],
    [['worker', '--concurency', '2'], /\(Did you mean --concurrency\?\)/],
  ];
  for (const [args, expected] of cases) {
    const r = await runCli(args, {});
    assert.equal(r.code, 2, args.join(' '));
    assert.match(r.stderr, expected);
  }
});

const recordingLine = (i: number) =>
  JSON.stringify({
    v: 1,
    entryId: `1-${i}`,
    requestId: `rec-${i}`,
    attempt: 1,
    receivedAt: '2026-11-26T10:00:00.000Z',
    sentAt: `2026-11-26T10:00:0${i}.000Z`,
    ms: 3,
    origin: { name: 'default', url: 'http://staging' },
    rules: [],
    tags: {},
    mirrored: { method: 'GET', target: `/rec/${i}`, clientAddress: null, headers: [['Host', 'prod']], body: { size: 0, text: '' } },
    sent: { method: 'GET', path: `/rec/${i}`, headers: [], body: { size: 0, text: '' } },
    response: { status: 200, headers: [], body: { size: 0, text: '' } },
  });

test('record export: --format in any case, a missing directory named without a stack trace', async () => {
  const file = join(dir, 'r.jsonl');
  writeFileSync(file, `${recordingLine(0)}\n${recordingLine(1)}\n`);
  for (const format of ['HAR', 'har', 'Har']) {
    const r = await runCli(['record', 'export', file, '--format', format], {});
    assert.equal(r.code, 0, r.stderr);
    assert.equal((JSON.parse(r.stdout) as { log: { entries: unknown[] } }).log.entries.length, 2);
  }
  const missing = join(dir, 'no', 'such', 'dir', 'x.har');
  const r = await runCli(['record', 'export', file, '--format', 'har', '--out', missing], {});
  assert.equal(r.code, 2);
  assert.equal(r.stderr, `mirrorplane: --out: cannot write ${missing}: no such directory\n`);
  const bad = await runCli(['record', 'export', file, '--format', 'pcap'], {});
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /--format: expected har, got "pcap"/);
});

test('replay --file without --from: the window starts at the first recording, not 1970; no progress drawn into a pipe', async () => {
  const staging = await RecordingServer.start();
  try {
    const file = join(dir, 'w.jsonl');
    writeFileSync(file, `${recordingLine(1)}\n${recordingLine(2)}\n`);
    const plain = { REDIS_URL: redis.url, MIRRORPLANE_PREFIX: 'conv' };
    const human = await runCli(['replay', '--file', file, '--staging', staging.url, '--speed', 'max'], plain);
    assert.equal(human.code, 0, human.stderr);
    assert.doesNotMatch(human.stdout, /1970/);
    assert.match(human.stdout, /replayed 2026-11-26T10:00:01\.000Z → /);
    assert.equal(human.stderr, '', 'no progress bar on a stderr that is not a terminal');
    const json = await runCli(['replay', '--file', file, '--staging', staging.url, '--speed', 'max', '--json'], plain);
    assert.equal(json.code, 0, json.stderr);
    assert.equal(json.stderr, '');
    assert.equal((JSON.parse(json.stdout) as { from: string }).from, '2026-11-26T10:00:01.000Z');
  } finally {
    await staging.close();
  }
});

const OWN_OPTIONS: Record<string, string[]> = { replay: ['--staging', '--concurrency'], dashboard: ['--port', '--host'] };

test('every setting with a flag is offered by a command, with help, environment variable and default from the settings table', async () => {
  const offered = new Set<string>();
  const commands = [
    ['ingress'],
    ['worker'],
    ['start'],
    ['status'],
    ['failed', 'list'],
    ['failed', 'replay'],
    ['failed', 'purge'],
    ['diff', 'summary'],
    ['replay'],
    ['dashboard'],
  ];
  for (const command of commands) {
    const help = (await runCli([...command, '--help'], {})).stdout.replace(/\n\s+/g, ' ');
    for (const [key, setting] of Object.entries(SETTINGS)) {
      const flag = (setting as { flag?: string }).flag;
      if (!flag) continue;
      const at = help.indexOf(`${flag} <`);
      if (at === -1) continue;
      const line = help.slice(at, help.indexOf(' --', at + flag.length + 1) === -1 ? undefined : help.indexOf(' --', at + flag.length + 1));
      // Options of a command's own that share a flag name with a setting, documented on their own.
      if (OWN_OPTIONS[command.join(' ')]?.includes(flag)) continue;
      offered.add(key);
      assert.ok(line.includes(`env ${setting.env}`), `${command.join(' ')} ${flag}: names ${setting.env}: ${line}`);
      assert.ok(line.includes(setting.doc.slice(0, 30).replace(/\s+/g, ' ')), `${command.join(' ')} ${flag}: the doc from the table: ${line}`);
      const def = (setting as { default?: unknown }).default;
      if (def !== undefined && key !== 'adminPort')
        assert.ok(line.includes(`default ${String(def)}`), `${command.join(' ')} ${flag}: default ${String(def)}: ${line}`);
    }
  }
  const withFlag = Object.entries(SETTINGS)
    .filter(([, s]) => (s as { flag?: string }).flag)
    .map(([k]) => k);
  assert.deepEqual([...offered].sort(), withFlag.sort(), 'every setting with a flag is on some command');
  const ingressHelp = (await runCli(['ingress', '--help'], {})).stdout.replace(/\n\s+/g, ' ');
  assert.match(ingressHelp, /--admin-port <n> .*\(env ADMIN_PORT, default 9090\)/);
  assert.match((await runCli(['worker', '--help'], {})).stdout.replace(/\n\s+/g, ' '), /--admin-port <n> .*\(env ADMIN_PORT, default 9091\)/);
});

test('config mistakes get the accepted values, a "did you mean" and the offending line', async () => {
  const bool = await runCli(['status'], { PRESERVE_HOST: 'maybe' });
  assert.equal(bool.code, 2);
  assert.match(bool.stderr, /PRESERVE_HOST: expected true or false \(also 1\/0, yes\/no, on\/off\)/);
  const typo = join(dir, 'typo.yaml');
  writeFileSync(typo, 'prefx: a\nredisURL: redis://x\nzzzzzz: 1\n');
  const unknown = await runCli(['status', '--config', typo], {});
  assert.equal(unknown.code, 2);
  assert.match(unknown.stderr, /prefx: unknown key \(did you mean "prefix"\?\)/);
  assert.match(unknown.stderr, /redisURL: unknown key \(did you mean "redisUrl"\?\)/);
  assert.match(unknown.stderr, /zzzzzz: unknown key\n/);
  const broken = join(dir, 'broken.yaml');
  writeFileSync(broken, 'redisUrl: redis://x\nfoo:\n  - a\n b: c\n');
  const yaml = await runCli(['status', '--config', broken], {});
  assert.equal(yaml.code, 2);
  assert.match(yaml.stderr, /cannot parse: .* at line 4, column 1 \(the line reads " b: c"\)\n$/);
});

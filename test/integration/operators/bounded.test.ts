import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { RecordingServer, RedisServer, Stack, freePort, mapConcurrent, waitFor } from '../../helpers/index.js';
import { Redis } from 'ioredis';
import { assertSameKeys, keySnapshot, runTimed } from './helpers.js';

// Every operator command finishes or fails within REDIS_CONNECT_TIMEOUT_MS against any Redis
// URL, naming the URL (password masked) and the cause; misconfiguration stops every role.

let redis: RedisServer;
let sentinel: ChildProcess;
let sentinelPort: number;
let sentinelDir: string;
let silent: Server;
let silentPort: number;

before(async () => {
  redis = await RedisServer.start();
  sentinelPort = await freePort();
  sentinelDir = mkdtempSync(join(tmpdir(), 'mp-test-sentinel-'));
  const conf = join(sentinelDir, 'sentinel.conf');
  writeFileSync(conf, `port ${sentinelPort}\nbind 127.0.0.1\ndir ${sentinelDir}\nsentinel monitor mymaster 127.0.0.1 ${redis.port} 1\n`);
  sentinel = spawn('redis-server', [conf, '--sentinel'], { stdio: 'ignore' });
  await waitFor(
    'sentinel to know the master',
    async () => {
      const c = new Redis(sentinelPort, '127.0.0.1', { lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null });
      c.on('error', () => undefined);
      try {
        await c.connect();
        const reply = (await c.call('SENTINEL', 'get-master-addr-by-name', 'mymaster')) as string[] | null;
        return reply?.[1] === String(redis.port);
      } finally {
        c.disconnect();
      }
    },
    30_000,
    100,
  );
  // A TCP server that accepts and never answers: a Redis that hangs.
  silent = createServer(() => undefined);
  await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
  silentPort = (silent.address() as { port: number }).port;
});

after(async () => {
  sentinel?.kill('SIGKILL');
  silent?.close();
  await redis?.close();
  if (sentinelDir) rmSync(sentinelDir, { recursive: true, force: true });
});

const TIMEOUT_MS = 2000;
/** What "bounded" allows over the stated timeout: process start-up on a loaded machine. */
const SLACK_MS = 15_000;

/** Commands that talk to Redis and end. */
const COMMANDS: string[][] = [
  ['status'],
  ['status', '--json'],
  ['failed', 'list'],
  ['failed', 'list', '--by-error'],
  ['failed', 'replay', '--all'],
  ['failed', 'purge', '--yes'],
  ['diff', 'summary'],
  ['replay', '--from', '-1h'],
];

test('every command fails within the stated time against every kind of unreachable Redis URL, naming it (password masked) and the cause', async () => {
  const unreachable = await freePort();
  const cases: { url: string; shown: RegExp; cause: RegExp }[] = [
    { url: `redis://127.0.0.1:${unreachable}`, shown: new RegExp(`redis://127\\.0\\.0\\.1:${unreachable}`), cause: /connection refused/ },
    {
      url: `redis://ops:hunter2-secret@127.0.0.1:${unreachable}/0`,
      shown: new RegExp(`redis://ops:\\*\\*\\*@127\\.0\\.0\\.1:${unreachable}/0`),
      cause: /connection refused/,
    },
    {
      url: `redis+sentinel://127.0.0.1:${sentinelPort}/nosuchmaster`,
      shown: /redis\+sentinel:\/\/127\.0\.0\.1:\d+\/nosuchmaster/,
      cause: /knows (no|a) master by that name/,
    },
    {
      url: `redis+sentinel://:hunter2-secret@127.0.0.1:${unreachable}/mymaster`,
      shown: /redis\+sentinel:\/\/:\*\*\*@127\.0\.0\.1/,
      cause: /no sentinel answered|connection refused/,
    },
    { url: `redis+cluster://127.0.0.1:${unreachable}`, shown: /redis\+cluster:\/\/127\.0\.0\.1/, cause: /no cluster node answered/ },
    { url: `rediss://127.0.0.1:${redis.port}`, shown: /rediss:\/\/127\.0\.0\.1/, cause: /TLS|no answer|connection reset|closed/ },
    { url: `redis://127.0.0.1:${silentPort}`, shown: new RegExp(`redis://127\\.0\\.0\\.1:${silentPort}`), cause: /no answer within 2 s|timed out/ },
  ];
  // Two runs at a time: their waits overlap, and SLACK_MS covers a start-up slowed by the other.
  const runs = cases.flatMap((c) => (c === cases[0] ? COMMANDS : [COMMANDS[0]!, COMMANDS[4]!]).map((args) => ({ c, args })));
  await mapConcurrent(runs, 2, async ({ c, args }) => {
    const r = await runTimed(args, { REDIS_URL: c.url, REDIS_CONNECT_TIMEOUT_MS: String(TIMEOUT_MS) });
    const what = `${args.join(' ')} against ${c.url}: ${r.stderr}`;
    assert.equal(r.killed, false, `hung: ${what}`);
    assert.equal(r.code, 1, what);
    assert.ok(r.ms < TIMEOUT_MS + SLACK_MS, `took ${r.ms} ms: ${what}`);
    assert.match(r.stderr, /^mirrorplane: MP_ERR_REDIS_UNAVAILABLE: cannot reach Redis at /m, what);
    assert.match(r.stderr, c.shown, what);
    assert.match(r.stderr, c.cause, what);
    assert.doesNotMatch(r.stderr, /hunter2|maxRetriesPerRequest|\n\s+at /, what);
  });
});

test('a Sentinel URL naming a master that exists works', async () => {
  const r = await runTimed(['status', '--json'], { REDIS_URL: `redis+sentinel://127.0.0.1:${sentinelPort}/mymaster`, MIRRORPLANE_PREFIX: 'sentinel-ok' });
  assert.equal(r.code, 0, r.stderr);
  assert.equal(JSON.parse(r.stdout).backlog, 0);
});

test('a database index that does not exist stops every role and command with a clear message, and nothing is written to database 0', async () => {
  const client = redis.client();
  try {
    const before = await keySnapshot(client);
    const url = `${redis.url}/99`;
    for (const args of [['status'], ['failed', 'list'], ['ingress'], ['worker'], ['dashboard', '--port', '0']]) {
      const r = await runTimed(args, { REDIS_URL: url, STAGING_URL: 'http://127.0.0.1:9', ADMIN_PORT: '0', INGRESS_PORT: '0', LOG_LEVEL: 'silent' });
      assert.equal(r.killed, false, `${args[0]} kept running`);
      assert.equal(r.code, 2, `${args.join(' ')}: ${r.stdout}${r.stderr}`);
      assert.match(
        r.stderr,
        /MP_ERR_REDIS_DB: REDIS_URL: database 99 does not exist on redis:\/\/127\.0\.0\.1:\d+\/99 \(this Redis has databases 0 to 15\); refusing to fall back to database 0/,
      );
    }
    assertSameKeys(before, await keySnapshot(client), 'database 0');
  } finally {
    client.disconnect();
  }
});

test('deployment-wide settings are stored once; a process that disagrees stops, naming the setting', async () => {
  const staging = await RecordingServer.start();
  const stack = await Stack.start({ redis, stagingUrl: staging.url, env: { PARTITIONS: '2' } });
  const client = redis.client();
  try {
    assert.deepEqual(
      Object.fromEntries(
        Object.entries(await client.hgetall(`{${stack.env.MIRRORPLANE_PREFIX}}:deployment`)).filter(([k]) => k === 'partitions' || k === 'partitionKey'),
      ),
      { partitions: '2', partitionKey: 'request-id' },
    );
    const wrongWorker = await runTimed(['worker'], { ...stack.env, PARTITIONS: '3', LOG_LEVEL: 'silent' });
    assert.equal(wrongWorker.code, 2);
    assert.match(
      wrongWorker.stderr,
      /MP_ERR_DEPLOYMENT_MISMATCH: prefix "t[0-9a-f]+" at redis:\/\/127\.0\.0\.1:\d+: PARTITIONS is 3 here but 2 for the deployment/,
    );
    const wrongKey = await runTimed(['ingress'], { ...stack.env, PARTITION_KEY: 'header:x-session', INGRESS_PORT: '0', LOG_LEVEL: 'silent' });
    assert.equal(wrongKey.code, 2);
    assert.match(wrongKey.stderr, /PARTITION_KEY is header:x-session here but request-id for the deployment/);
    const status = await runTimed(['status'], { ...stack.env, PARTITIONS: '1' });
    assert.equal(status.code, 2, 'a status over the wrong partitions would print wrong counts');
    assert.match(status.stderr, /PARTITIONS is 1 here but 2/);
  } finally {
    client.disconnect();
    await stack.close();
    await staging.close();
  }
});

test('read-only commands create no keys, on an empty Redis and on a running deployment', async () => {
  const client = redis.client();
  const staging = await RecordingServer.start((_req, res) => void res.writeHead(500).end());
  try {
    const prefix = `ro${randomBytes(4).toString('hex')}`;
    const readOnly = [
      ['status'],
      ['status', '--json'],
      ['status', '--watch', '--count', '2', '--interval', '0.1'],
      ['failed', 'list'],
      ['failed', 'list', '--by-error'],
      ['diff', 'summary'],
      ['failed', 'replay', '--all', '--dry-run'],
      ['failed', 'purge', '--dry-run'],
    ];
    const empty = await keySnapshot(client);
    for (const args of readOnly) {
      const r = await runTimed(args, { REDIS_URL: redis.url, MIRRORPLANE_PREFIX: prefix });
      assert.equal(r.code, 0, `${args.join(' ')}: ${r.stderr}`);
      assertSameKeys(empty, await keySnapshot(client), args.join(' '));
    }
    const stack = await Stack.start({ redis, stagingUrl: staging.url, env: { REPLAY_ATTEMPTS: '1' } });
    try {
      await fetch(`http://127.0.0.1:${stack.ingressPort}/x`, { method: 'POST', body: 'x' });
      await waitFor('one failed', async () => (await stack.status()).failed === 1);
      await stack.close();
      const running = await keySnapshot(client);
      for (const args of readOnly) {
        const r = await runTimed(args, stack.env);
        assert.equal(r.code, 0, `${args.join(' ')}: ${r.stderr}`);
        assertSameKeys(running, await keySnapshot(client), args.join(' '));
      }
    } finally {
      await stack.close();
    }
  } finally {
    client.disconnect();
    await staging.close();
  }
});

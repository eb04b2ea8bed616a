import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { maskRedisUrl } from '@mirrorplane/runtime';
import { RedisServer, freePort, mapConcurrent } from '../../helpers/index.js';
import { runTimed } from './helpers.js';

// Issue 15 ("bounded and truthful", "never show secrets in clear"): Redis URLs
// whose password holds an `@`, users without ACL rights, TLS spoken to a plain Redis.

let redis: RedisServer;
/** A password with an `@`: Node's URL parser and ioredis take the last `@` as the separator. */
const SECRET_HEAD = 'hunter';
const SECRET_TAIL = 'Zq9secretTAIL';
const PASSWORD = `${SECRET_HEAD}@${SECRET_TAIL}`;

before(async () => {
  redis = await RedisServer.start();
  const c = redis.client();
  try {
    // A user with every right whose password holds an `@`, and one who may connect but touch nothing.
    await c.call('ACL', 'SETUSER', 'ops', 'on', `>${PASSWORD}`, '~*', '&*', '+@all');
    await c.call('ACL', 'SETUSER', 'weak', 'on', '>weakpw', '~nothing:*', '+ping', '+hello', '+client', '+select', '+info', '+auth');
  } finally {
    c.disconnect();
  }
});

after(async () => {
  await redis?.close();
});

/** Commands that read Redis and end; each must keep a password to itself. */
const COMMANDS: string[][] = [['status'], ['status', '--json'], ['failed', 'list'], ['failed', 'replay', '--all', '--dry-run'], ['diff', 'summary']];

test('a password holding "@" is never printed, in output or errors, for any URL shape', async () => {
  const closed = await freePort();
  const urls = [
    `redis://ops:${PASSWORD}@127.0.0.1:${redis.port}`, // reachable: ioredis connects with it
    `redis://ops:${PASSWORD}@127.0.0.1:${closed}`, // unreachable
    `redis+sentinel://ops:${PASSWORD}@127.0.0.1:${closed}/mymaster`,
    `redis+cluster://ops:${PASSWORD}@127.0.0.1:${closed}`,
    `redis://ops:hunter@Zq9secretTAIL:w@127.0.0.1:${redis.port}`, // a ':' after the '@' too
  ];
  // Every command against the reachable URL; the context line and errors elsewhere. The runs
  // are independent and nothing here is timed, so three go at once.
  const runs = urls.flatMap((url, i) => (i === 0 ? COMMANDS : [['status'], ['status', '--json']]).map((args) => ({ url, args })));
  const leaks = (
    await mapConcurrent(runs, 3, async ({ url, args }) => {
      const r = await runTimed([...args, '--redis-url', url, '--redis-timeout', '2000'], {}, 60_000);
      const shown = r.stdout + r.stderr;
      return shown.includes(SECRET_TAIL) || shown.includes('Zq9secret')
        ? `${args.join(' ')} ${url.replace(PASSWORD, '<pw>')}: ${shown.split('\n').find((l) => l.includes('Zq9secret'))}`
        : null;
    })
  ).filter((leak) => leak !== null);
  assert.deepEqual(leaks, [], 'the password after its "@" is shown in clear');
});

test('maskRedisUrl hides every character of any password, "@" and ":" included', () => {
  const chunk = fc.stringMatching(/^[A-Za-z0-9]{6,12}$/);
  fc.assert(
    fc.property(
      chunk,
      chunk,
      fc.constantFrom('@', ':@', '@@', '@:'),
      fc.constantFrom('redis', 'rediss', 'redis+sentinel', 'redis+cluster'),
      (a, b, sep, scheme) => {
        const password = `${a}${sep}${b}`;
        const masked = maskRedisUrl(`${scheme}://user:${password}@127.0.0.1:6379${scheme.endsWith('sentinel') ? '/mymaster' : ''}`);
        return !masked.includes(a) && !masked.includes(b);
      },
    ),
    { numRuns: 200 },
  );
});

test('a user without ACL rights gets the URL and "permission denied" from every command and role, no stack trace', async () => {
  const url = `redis://weak:weakpw@127.0.0.1:${redis.port}`;
  const staging = `http://127.0.0.1:${await freePort()}`;
  const cases: string[][] = [
    ...COMMANDS,
    ['failed', 'replay', '--all'],
    ['failed', 'purge', '--yes'],
    ['replay', '--from', '-1h', '--staging', staging],
    ['dashboard', '--port', String(await freePort())],
    ['worker', '--staging', staging, '--admin-port', String(await freePort())],
    ['ingress', '--port', String(await freePort()), '--admin-port', String(await freePort())],
  ];
  const bad: string[] = [];
  // Independent runs, nothing timed: three at once.
  await mapConcurrent(cases, 3, async (args) => {
    const r = await runTimed([...args, '--redis-url', url, '--redis-timeout', '2000'], {}, 60_000);
    const problems: string[] = [];
    if (r.killed) problems.push('still running after 60 s');
    if (r.code === 0) problems.push('exit 0');
    if (/^\s+at /m.test(r.stderr)) problems.push('stack trace');
    if (!r.stderr.includes(`127.0.0.1:${redis.port}`)) problems.push('no URL named');
    if (!/permission|NOPERM|not allowed/i.test(r.stderr)) problems.push('cause not named');
    if (problems.length) bad.push(`${args[0]} ${args[1] ?? ''}: ${problems.join(', ')} — ${r.stderr.split('\n')[0]}`);
  });
  assert.deepEqual(bad.sort(), []);
});

test('rediss:// to a plain Redis names the TLS failure, not only silence', async () => {
  const r = await runTimed(['status', '--redis-url', `rediss://127.0.0.1:${redis.port}`, '--redis-timeout', '3000'], {}, 60_000);
  assert.equal(r.code, 1, r.stderr);
  assert.match(r.stderr, /cannot reach Redis at rediss:\/\/127\.0\.0\.1:\d+: /);
  assert.match(r.stderr, /TLS|SSL|handshake/i, `the cause should say TLS; got: ${r.stderr.trim()}`);
});

test('the URL parser reads user and password exactly as ioredis does, and the mask hides every password character', async () => {
  const { parseURL } = (await import('ioredis/built/utils/index.js')) as unknown as {
    parseURL: (url: string) => { username?: string; password?: string; host?: string };
  };
  const { parseRedisUrl } = await import('@mirrorplane/core');
  // Passwords from an alphabet heavy in separators: "@", ":" and percent signs included.
  const password = fc.stringMatching(/^[A-Za-z0-9@:!$&'()*+,;=._~-]{1,24}$/).filter((p) => /[A-Za-z0-9]{3}/.test(p));
  const user = fc.stringMatching(/^[a-z]{0,6}$/);
  fc.assert(
    fc.property(user, password, fc.constantFrom('', '/0', '/3'), (u, p, db) => {
      const url = `redis://${u}:${p}@127.0.0.1:6379${db}`;
      const ours = parseRedisUrl(url);
      const theirs = parseURL(url);
      assert.equal(ours.password, decodeURIComponent(theirs.password ?? ''), url);
      assert.equal(ours.username ?? '', theirs.username ?? '', url);
      assert.equal(ours.nodes[0]?.host, theirs.host, url);
      const masked = maskRedisUrl(url);
      // No run of 3 password characters (letters/digits) survives, and the host is still shown.
      for (const run of p.match(/[A-Za-z0-9]{3,}/g) ?? [])
        assert.ok(!masked.slice(masked.indexOf('//') + 2 + u.length).includes(run) || '127.0.0.1:6379'.includes(run), `${url} -> ${masked}`);
      assert.match(masked, /@127\.0\.0\.1:6379/);
    }),
    { numRuns: 300 },
  );
});

test('a config file whose bad line holds a Redis URL shows it masked in the error', async () => {
  const { mkdtempSync, writeFileSync, rmSync } = await import('node:fs');
  const { tmpdir } = await import('node:os');
  const { join } = await import('node:path');
  const dir = mkdtempSync(join(tmpdir(), 'mp-test-urlcfg-'));
  try {
    const file = join(dir, 'bad.yaml');
    // A YAML error on the URL's own line: the message quotes that line.
    writeFileSync(file, `redisUrl: redis://ops:${PASSWORD}@127.0.0.1:6379: x\n`);
    const r = await runTimed(['status', '--config', file], {}, 60_000);
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /the line reads "redisUrl: redis:\/\/ops:\*\*\*@127\.0\.0\.1:6379: x"/);
    assert.doesNotMatch(r.stdout + r.stderr, /Zq9secret|hunter/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('describeFailure: every Redis error reply reads as words naming the masked URL, exit 1, no stack', async () => {
  const { describeFailure } = await import('../../../apps/cli/src/failure.js');
  const replies: [string, RegExp][] = [
    ["NOPERM this user has no permissions to run the 'xadd' command", /permission denied/],
    ['WRONGPASS invalid username-password pair or user is disabled.', /authentication failed/],
    ['LOADING Redis is loading the dataset in memory', /still loading/],
    ["READONLY You can't write against a read only replica.", /read-only replica/],
    ["OOM command not allowed when used memory > 'maxmemory'.", /out of memory/],
    ["MISCONF Redis is configured to save RDB snapshots, but it's currently unable to persist to disk.", /cannot save to disk/],
    ["EXECABORT Transaction discarded because of: NOPERM this user has no permissions to run the 'exec' command", /permission denied/],
  ];
  fc.assert(
    fc.property(
      fc.constantFrom(...replies),
      fc.stringMatching(/^[A-Za-z0-9@:]{4,16}$/).map((p) => `Pw9${p}`),
      ([reply, words], pw) => {
        const error = Object.assign(new Error(reply), { name: 'ReplyError' });
        const failure = describeFailure(error, `redis://ops:${pw}@127.0.0.1:6379`);
        assert.equal(failure.exitCode, 1);
        assert.equal(failure.known, true);
        assert.match(failure.message, /^MP_ERR_REDIS: Redis at redis:\/\/ops:\*\*\*@127\.0\.0\.1:6379: /);
        assert.match(failure.message, words);
        assert.ok(!failure.message.includes(pw) && !/\n\s+at /.test(failure.message), failure.message);
      },
    ),
    { numRuns: 100 },
  );
});

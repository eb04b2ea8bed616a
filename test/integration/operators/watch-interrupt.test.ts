import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { CLI, RedisServer, waitFor, withDeadline } from '../../helpers/index.js';

// Issue 15: Ctrl-C on a live view while Redis hangs (SIGSTOP: the socket is open,
// nothing answers). The operator pressed Ctrl-C; the view should end now, not after the
// Redis timeout, and print nothing more.

let redis: RedisServer;
let redisPid: number;

before(async () => {
  redis = await RedisServer.start();
  const c = redis.client();
  redisPid = Number(/process_id:(\d+)/.exec(await c.info('server'))?.[1]);
  c.disconnect();
  assert.ok(redisPid > 0);
});

after(async () => {
  try {
    process.kill(redisPid, 'SIGCONT');
  } catch {
    /* gone */
  }
  await redis?.close();
});

test('status --watch ends promptly on SIGINT while Redis hangs, and prints no frame after it', async () => {
  const child = spawn(process.execPath, [CLI, 'status', '--watch', '--json', '--interval', '0.5', '--redis-url', redis.url, '--redis-timeout', '20000'], {
    env: { PATH: process.env.PATH ?? '' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout.on('data', (d: Buffer) => {
    out += d.toString();
  });
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  try {
    await waitFor('two live frames', () => out.split('\n').filter((l) => l.startsWith('{"at"')).length >= 2, 60_000);
    process.kill(redisPid, 'SIGSTOP');
    // Let a reading start and hang.
    await new Promise((r) => setTimeout(r, 1500));
    const signalled = Date.now();
    const outAtSignal = out.length;
    child.kill('SIGINT');
    const code = await withDeadline(exited, 30_000, () => 'hung' as const);
    const took = Date.now() - signalled;
    assert.notEqual(code, 'hung');
    assert.equal(code, 0);
    assert.ok(took < 3000, `status --watch took ${took} ms to end after SIGINT (Redis timeout 20 s)`);
    assert.equal(out.slice(outAtSignal), '', `printed after SIGINT: ${out.slice(outAtSignal)}`);
  } finally {
    process.kill(redisPid, 'SIGCONT');
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    await exited;
  }
});

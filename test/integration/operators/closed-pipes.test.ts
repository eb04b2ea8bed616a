import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CLI, RedisServer } from '../../helpers/index.js';

// Issue 15: operators pipe commands into `head`, `grep -m1`, `less` and quit early.
// A reader that goes away must end the command quietly, not with an unhandled EPIPE.

let redis: RedisServer;
let dir: string;

before(async () => {
  redis = await RedisServer.start();
  dir = mkdtempSync(join(tmpdir(), 'mp-test-pipes-'));
});

after(async () => {
  await redis?.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

/** Runs `mirrorplane <args> | <reader>` in a real shell; returns the CLI's exit code, stderr and time taken. */
function piped(args: string[], reader: string, killAfterMs = 60_000): Promise<{ code: number; stderr: string; ms: number }> {
  const errFile = join(dir, `err-${Math.random().toString(16).slice(2)}`);
  const quoted = [process.execPath, CLI, ...args].map((a) => `'${a.replace(/'/g, `'\\''`)}'`).join(' ');
  return new Promise((resolve, reject) => {
    const started = Date.now();
    const child = spawn('bash', ['-c', `${quoted} 2>'${errFile}' | ${reader}; echo "\${PIPESTATUS[0]}"`], {
      stdio: ['ignore', 'pipe', 'inherit'],
      env: { PATH: process.env.PATH ?? '' },
    });
    let out = '';
    const timer = setTimeout(() => child.kill('SIGKILL'), killAfterMs);
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString();
    });
    child.once('error', reject);
    child.once('exit', () => {
      clearTimeout(timer);
      const code = Number(out.trim().split('\n').pop());
      resolve({ code, stderr: readFileSync(errFile, 'utf8'), ms: Date.now() - started });
    });
  });
}

test('a command piped into a reader that quits early ends quietly (no EPIPE stack trace, exit 0)', async () => {
  const url = redis.url;
  const cases: { args: string[]; reader: string }[] = [
    { args: ['status', '--redis-url', url], reader: 'true' },
    { args: ['status', '--redis-url', url], reader: 'head -c 1 >/dev/null' },
    { args: ['failed', 'list', '--redis-url', url], reader: 'true' },
    { args: ['diff', 'summary', '--redis-url', url], reader: 'true' },
    { args: ['status', '--watch', '--interval', '0.2', '--count', '100', '--redis-url', url], reader: 'head -n 1 >/dev/null' },
    { args: ['status', '--watch', '--json', '--interval', '0.2', '--count', '100', '--redis-url', url], reader: 'head -n 1 >/dev/null' },
    { args: ['--help'], reader: 'true' },
  ];
  const bad: string[] = [];
  for (const { args, reader } of cases) {
    const r = await piped(args, reader);
    const problems: string[] = [];
    if (/Unhandled 'error' event|EPIPE|^\s+at /m.test(r.stderr)) problems.push(`stderr: ${r.stderr.split('\n').filter(Boolean).slice(0, 2).join(' | ')}`);
    if (r.code !== 0 && r.code !== 141) problems.push(`exit ${r.code}`);
    // 100 frames at 0.2 s is 20 s: a watch whose reader is gone should stop at the next frame.
    if (args.includes('--watch') && r.ms > 15_000) problems.push(`kept running ${r.ms} ms after its reader left`);
    if (problems.length) bad.push(`${args.filter((a) => a !== url).join(' ')} | ${reader}: ${problems.join('; ')}`);
  }
  assert.deepEqual(bad, []);
});

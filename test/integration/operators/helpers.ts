import { spawn } from 'node:child_process';
import { CLI } from '../../helpers/index.js';
import type { Redis } from 'ioredis';

/** Runs the CLI, killing it after `killAfterMs` (a hang is a failure, not a stuck test); reports the time it took. */
export function runTimed(
  args: string[],
  env: Record<string, string>,
  killAfterMs = 60_000,
): Promise<{ code: number | null; stdout: string; stderr: string; ms: number; killed: boolean }> {
  return new Promise((resolve) => {
    const started = Date.now();
    const child = spawn(process.execPath, [CLI, ...args], { env: { PATH: process.env.PATH ?? '', ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    let killed = false;
    const timer = setTimeout(() => {
      killed = true;
      child.kill('SIGKILL');
    }, killAfterMs);
    child.stdout.on('data', (d: Buffer) => {
      stdout += d.toString();
    });
    child.stderr.on('data', (d: Buffer) => {
      stderr += d.toString();
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr, ms: Date.now() - started, killed });
    });
  });
}

/** Every key of a Redis database with its type and whether it expires, by SCAN. */
export async function keySnapshot(client: Redis): Promise<Map<string, string>> {
  const keys: string[] = [];
  let cursor = '0';
  do {
    const [next, batch] = await client.scan(cursor, 'COUNT', 1000);
    cursor = next;
    keys.push(...batch);
  } while (cursor !== '0');
  const out = new Map<string, string>();
  for (const k of keys) out.set(k, `${await client.type(k)}${(await client.pttl(k)) > 0 ? ' volatile' : ''}`);
  return out;
}

/** Fails when `after` has a key `before` had not, or lost a key that does not expire. */
export function assertSameKeys(before: Map<string, string>, after: Map<string, string>, what: string): void {
  const created = [...after.keys()].filter((k) => !before.has(k));
  const removed = [...before].filter(([k, t]) => !after.has(k) && !t.endsWith('volatile')).map(([k]) => k);
  if (created.length > 0 || removed.length > 0) throw new Error(`${what}: created ${JSON.stringify(created)}, removed ${JSON.stringify(removed)}`);
}

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

// Issue 15, "installable CLI": every command the README lists must work from the
// CLI installed the documented way (packed tarball, npm install -g --prefix), outside the
// repository. `demo` reads examples/compose/mirrorplane.yaml relative to its own source,
// which the tarball does not carry.

const root = fileURLToPath(new URL('../../..', import.meta.url));
let dir: string;

before(() => {
  dir = mkdtempSync(join(tmpdir(), 'mp-test-installed-demo-'));
});

after(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
});

test('`mirrorplane demo` runs from the CLI installed from the packed tarball', { timeout: 600_000 }, async () => {
  const tarball = execFileSync(process.execPath, [join(root, 'apps/cli/scripts/pack.mjs'), '--out', join(dir, 'dist')], { encoding: 'utf8' }).trim();
  const prefix = join(dir, 'prefix');
  const install = spawnSync('npm', ['install', '-g', '--prefix', prefix, '--offline', '--no-audit', '--no-fund', tarball], { cwd: dir, encoding: 'utf8' });
  assert.equal(install.status, 0, install.stderr);
  const env = { PATH: `${join(prefix, 'bin')}:${process.env.PATH ?? ''}`, HOME: dir };
  const child = spawn('mirrorplane', ['demo', '--requests', '3'], { cwd: dir, env, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout.on('data', (d: Buffer) => {
    out += d.toString();
  });
  child.stderr.on('data', (d: Buffer) => {
    out += d.toString();
  });
  const timer = setTimeout(() => child.kill('SIGINT'), 240_000);
  const code = await new Promise<number | null>((r) => child.once('exit', (c) => r(c)));
  clearTimeout(timer);
  assert.doesNotMatch(out, /ENOENT[^\n]*examples\/compose/, 'the installed demo looks for a file the tarball lacks');
  assert.equal(code, 0, out.slice(-3000));
});

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { RecordingServer, RedisServer, freePort, header, requestHead, sendRaw, waitFor } from '../../helpers/index.js';

// The CLI installed the documented way (a packed tarball, npm install -g into a prefix),
// run outside the repository with a hooks module that imports @mirrorplane/core.

const root = fileURLToPath(new URL('../../..', import.meta.url));
let dir: string;
let redis: RedisServer;

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'mp-test-install-'));
  redis = await RedisServer.start();
});

after(async () => {
  await redis?.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

test(
  'pack, npm install -g into a prefix, run mirrorplane from the PATH with hooks in /etc-like directories importing @mirrorplane/core',
  { timeout: 600_000 },
  async () => {
    const tarball = execFileSync(process.execPath, [join(root, 'apps/cli/scripts/pack.mjs'), '--out', join(dir, 'dist')], { encoding: 'utf8' }).trim();
    assert.match(tarball, /mirrorplane-cli-0\.1\.0\.tgz$/);
    const prefix = join(dir, 'prefix');
    // --offline: everything is in the tarball; no registry is asked for any name.
    const install = spawnSync('npm', ['install', '-g', '--prefix', prefix, '--offline', '--no-audit', '--no-fund', tarball], { cwd: dir, encoding: 'utf8' });
    assert.equal(install.status, 0, install.stderr);
    const env = { PATH: `${join(prefix, 'bin')}:${process.env.PATH ?? ''}`, HOME: dir };
    const version = spawnSync('mirrorplane', ['--version'], { cwd: dir, env, encoding: 'utf8' });
    assert.equal(version.status, 0, version.stderr);
    assert.equal(version.stdout.trim(), (JSON.parse(readFileSync(join(root, 'apps/cli/package.json'), 'utf8')) as { version: string }).version);

    // The README's hooks example, verbatim, as TypeScript, and a JavaScript one, outside any package.
    const readme = readFileSync(join(root, 'README.md'), 'utf8');
    const example = /loaded without a build step:\n\n```ts\n([\s\S]*?)```/.exec(readme)?.[1];
    assert.ok(example?.includes("from '@mirrorplane/core'"), 'the README has the hooks example');
    const etc = join(dir, 'etc', 'mirrorplane');
    mkdirSync(etc, { recursive: true });
    writeFileSync(join(etc, 'hooks.ts'), example!);
    writeFileSync(
      join(etc, 'hooks.mjs'),
      "import { definePipeline, headerValue } from '@mirrorplane/core';\nexport default definePipeline({ pre(request, ctx) { request.headers.push('x-js-hook', headerValue(ctx.mirrored.rawHeaders, 'x-in') ?? 'none'); return request; } });\n",
    );

    const staging = await RecordingServer.start();
    const children: ReturnType<typeof spawn>[] = [];
    try {
      for (const hooks of ['hooks.ts', 'hooks.mjs']) {
        writeFileSync(join(etc, 'mirrorplane.yaml'), `hooks: ./${hooks}\n`);
        const ingressPort = await freePort();
        const roleEnv = {
          ...env,
          REDIS_URL: redis.url,
          MIRRORPLANE_PREFIX: hooks.replace('.', '-'),
          STAGING_URL: staging.url,
          ADMIN_PORT: '0',
          INGRESS_PORT: String(ingressPort),
          INGRESS_HOST: '127.0.0.1',
          MIRRORPLANE_CONFIG: join(etc, 'mirrorplane.yaml'),
        };
        let output = '';
        for (const role of ['ingress', 'worker']) {
          const child = spawn('mirrorplane', [role], { cwd: dir, env: roleEnv, stdio: ['ignore', 'pipe', 'pipe'] });
          child.stdout?.on('data', (d: Buffer) => {
            output += d.toString();
          });
          child.stderr?.on('data', (d: Buffer) => {
            output += d.toString();
          });
          children.push(child);
        }
        const up = waitFor(`both roles up (${hooks})`, () => /ingress listening/.test(output) && /worker started/.test(output), 60_000);
        await up.catch((error: Error) => {
          throw new Error(`${error.message}\n${output}`);
        });
        const res = await sendRaw(ingressPort, requestHead('POST', '/hello', ['Host', 'acme.example.com', 'x-in', 'abc'], 1), Buffer.from('x'));
        assert.equal(res.status, 200);
        const got = await waitFor(
          `staging to receive through ${hooks}`,
          () =>
            staging.received.find((r) => r.url === '/hello' && (hooks === 'hooks.ts' ? header(r.rawHeaders, 'x-tenant') : header(r.rawHeaders, 'x-js-hook'))),
          60_000,
        );
        if (hooks === 'hooks.ts') assert.equal(header(got.rawHeaders, 'x-tenant'), 'acme');
        else assert.equal(header(got.rawHeaders, 'x-js-hook'), 'abc');
        staging.received.length = 0;
        for (const child of children.splice(0)) {
          const exited = new Promise((resolve) => child.once('exit', resolve));
          child.kill('SIGTERM');
          await exited;
        }
      }
    } finally {
      for (const child of children) child.kill('SIGKILL');
      await staging.close();
    }
  },
);

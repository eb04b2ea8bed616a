#!/usr/bin/env node
// Packs the CLI into one self-contained tarball: @mirrorplane/cli with the other workspaces
// and every production dependency bundled, so `npm install -g ./mirrorplane-cli-<v>.tgz`
// puts `mirrorplane` on the PATH without asking any registry for a package (no name that
// someone else could claim is ever resolved). Build first: `npx tsc -b`.
//
//   node apps/cli/scripts/pack.mjs [--out <dir>]     prints the tarball's path
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const cliDir = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const root = resolve(cliDir, '../..');
const outIndex = process.argv.indexOf('--out');
const outDir = resolve(outIndex === -1 ? process.cwd() : process.argv[outIndex + 1]);

const readJson = (path) => JSON.parse(readFileSync(path, 'utf8'));
const rootPkg = readJson(join(root, 'package.json'));
/** Workspace packages by name → directory. */
const workspaces = new Map(rootPkg.workspaces.map((w) => [readJson(join(root, w, 'package.json')).name, join(root, w)]));

const stage = mkdtempSync(join(tmpdir(), 'mirrorplane-pack-'));
try {
  const pkgDir = join(stage, 'package');
  const modules = join(pkgDir, 'node_modules');
  mkdirSync(modules, { recursive: true });
  const copyPackage = (from, to) => {
    const pkg = readJson(join(from, 'package.json'));
    mkdirSync(to, { recursive: true });
    for (const entry of ['package.json', ...(pkg.files ?? ['.'])]) {
      if (existsSync(join(from, entry)))
        cpSync(join(from, entry), join(to, entry), { recursive: true, dereference: true, filter: (src) => !/\.tsbuildinfo$/.test(src) });
    }
  };
  copyPackage(cliDir, pkgDir);
  // Files the commands read at run time from the repository (the demo's config), shipped
  // at the same path relative to the package as to the repository root.
  const shipped = ['examples/compose/mirrorplane.yaml'];
  for (const file of shipped) {
    mkdirSync(dirname(join(pkgDir, file)), { recursive: true });
    cpSync(join(root, file), join(pkgDir, file));
  }

  // Every production dependency, transitively, found the way Node finds it (nested first, then hoisted).
  const bundled = new Set();
  const visit = (name, fromDir, optional = false) => {
    if (bundled.has(name)) return;
    if (workspaces.has(name)) {
      bundled.add(name);
      const dir = workspaces.get(name);
      copyPackage(dir, join(modules, name));
      for (const dep of Object.keys(readJson(join(dir, 'package.json')).dependencies ?? {})) visit(dep, dir);
      return;
    }
    let dir = null;
    for (let d = fromDir; ; d = dirname(d)) {
      if (existsSync(join(d, 'node_modules', name, 'package.json'))) {
        dir = join(d, 'node_modules', name);
        break;
      }
      if (d === dirname(d)) break;
    }
    if (!dir) {
      // An optional dependency for another platform (esbuild's binaries, say) is not installed here.
      if (optional) return;
      throw new Error(`dependency ${name} not installed (run npm ci)`);
    }
    bundled.add(name);
    // The whole directory: its own nested node_modules carry versions that differ from the hoisted ones.
    cpSync(dir, join(modules, name), { recursive: true, dereference: true });
    const pkg = readJson(join(dir, 'package.json'));
    for (const dep of Object.keys({ ...pkg.dependencies, ...pkg.optionalDependencies })) {
      if (existsSync(join(dir, 'node_modules', dep))) continue; // already inside the copied directory
      visit(dep, dir, dep in (pkg.optionalDependencies ?? {}));
    }
  };
  const cliPkg = readJson(join(cliDir, 'package.json'));
  for (const dep of Object.keys(cliPkg.dependencies)) visit(dep, cliDir);

  // The packed manifest: every dependency bundled, so installing asks no registry.
  const dependencies = {};
  for (const name of [...bundled].sort()) {
    const pkg = readJson(join(modules, name, 'package.json'));
    dependencies[name] = pkg.version;
  }
  const { private: _private, devDependencies: _dev, ...manifest } = cliPkg;
  writeFileSync(
    join(pkgDir, 'package.json'),
    `${JSON.stringify({ ...manifest, files: [...(manifest.files ?? []), 'examples'], engines: rootPkg.engines, license: rootPkg.license, dependencies, bundleDependencies: Object.keys(dependencies) }, null, 2)}\n`,
  );
  mkdirSync(outDir, { recursive: true });
  const name = execFileSync('npm', ['pack', '--silent', '--pack-destination', outDir], {
    cwd: pkgDir,
    encoding: 'utf8',
    env: { ...process.env, npm_config_ignore_scripts: 'true' },
  })
    .trim()
    .split('\n')
    .pop();
  process.stdout.write(`${join(outDir, name)}\n`);
} finally {
  rmSync(stage, { recursive: true, force: true });
}

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('../..', import.meta.url));
const workspaces = (JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { workspaces: string[] }).workspaces;

/** The package table of docs/ARCHITECTURE.md: package → the packages it depends on. */
function documentedGraph(): Map<string, string[]> {
  const doc = readFileSync(join(root, 'docs/ARCHITECTURE.md'), 'utf8');
  const section = doc.slice(doc.indexOf('## Packages'), doc.indexOf('\n## ', doc.indexOf('## Packages') + 1));
  const graph = new Map<string, string[]>();
  for (const m of section.matchAll(/^\| `(@mirrorplane\/[\w-]+)` \| ([^|]+) \|$/gm)) {
    graph.set(m[1]!, m[2]!.trim() === '—' ? [] : m[2]!.split(',').map((d) => `@mirrorplane/${d.trim()}`));
  }
  return graph;
}

function sources(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    return statSync(path).isDirectory() ? sources(path) : name.endsWith('.ts') ? [path] : [];
  });
}

test('docs/ARCHITECTURE.md lists every package with exactly the dependencies package.json declares', () => {
  const graph = documentedGraph();
  const declared = new Map<string, string[]>();
  for (const ws of workspaces) {
    const pkg = JSON.parse(readFileSync(join(root, ws, 'package.json'), 'utf8')) as { name: string; dependencies?: Record<string, string> };
    declared.set(
      pkg.name,
      Object.keys(pkg.dependencies ?? {})
        .filter((d) => d.startsWith('@mirrorplane/'))
        .sort(),
    );
  }
  assert.deepEqual(new Map([...graph].map(([k, v]) => [k, [...v].sort()])), declared);
});

test('sources import only the packages they declare, never an app from another app, never a deep path', () => {
  for (const ws of workspaces) {
    const pkg = JSON.parse(readFileSync(join(root, ws, 'package.json'), 'utf8')) as { name: string; dependencies?: Record<string, string> };
    const allowed = new Set(Object.keys(pkg.dependencies ?? {}));
    for (const file of sources(join(root, ws, 'src'))) {
      for (const m of readFileSync(file, 'utf8').matchAll(/from '(@mirrorplane\/[^']+)'/g)) {
        const spec = m[1]!;
        assert.match(spec, /^@mirrorplane\/[\w-]+$/, `${file}: deep import ${spec}`);
        assert.ok(allowed.has(spec), `${file} imports ${spec}, which ${pkg.name} does not declare`);
      }
    }
  }
});

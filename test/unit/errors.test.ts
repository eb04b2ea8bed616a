import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as core from '@mirrorplane/core';
import { ERROR_CODES, MirrorplaneError } from '@mirrorplane/core';

const root = fileURLToPath(new URL('../..', import.meta.url));

function sources(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) return name === 'node_modules' || name === 'dist' ? [] : sources(path);
    return name.endsWith('.ts') && !name.endsWith('.d.ts') ? [path] : [];
  });
}

const files = ['packages', 'apps'].flatMap((top) =>
  readdirSync(join(root, top)).flatMap((pkg) => {
    try {
      return sources(join(root, top, pkg, 'src'));
    } catch {
      return [];
    }
  }),
);

test('every error class lives in core/src/errors.ts, extends MirrorplaneError and says when it is thrown', () => {
  const errors = readFileSync(join(root, 'packages/core/src/errors.ts'), 'utf8');
  const classes = [...errors.matchAll(/(\/\*\*[\s\S]*?\*\/)\s*export class (\w+) extends (\w+)/g)];
  assert.ok(classes.length >= 20);
  for (const [, doc, name] of classes) {
    if (name === 'MirrorplaneError') continue;
    assert.match(doc!, /Thrown (when|by)/, `${name} has no "Thrown when…" doc`);
    const ctor = (core as Record<string, unknown>)[name!];
    assert.equal(typeof ctor, 'function', `${name} is exported from @mirrorplane/core`);
    assert.ok((ctor as { prototype: unknown }).prototype instanceof MirrorplaneError, `${name} extends MirrorplaneError`);
  }
  for (const file of files) {
    if (file.endsWith('errors.ts') && file.includes('packages/core')) continue;
    const text = readFileSync(file, 'utf8');
    assert.doesNotMatch(text, /class \w+ extends (\w*Error)\b/, `${file} declares an error class outside errors.ts`);
  }
});

test('nothing in packages/ or apps/ throws an uncoded error or builds a MirrorplaneError by hand', () => {
  const offenders: string[] = [];
  for (const file of files) {
    // The dashboard's page script runs in the browser, not in Mirrorplane.
    if (file.endsWith('dashboard-page.ts')) continue;
    readFileSync(file, 'utf8')
      .split('\n')
      .forEach((line, i) => {
        if (/\bnew (Error|RangeError|TypeError|SyntaxError)\(/.test(line)) offenders.push(`${file}:${i + 1}: ${line.trim()}`);
        if (/\bnew MirrorplaneError\(/.test(line) && !file.endsWith('core/src/errors.ts')) offenders.push(`${file}:${i + 1}: ${line.trim()}`);
      });
  }
  assert.deepEqual(offenders, []);
});

test('every code in the table is carried by some error, and every code is MP_ERR_*', () => {
  const errors = readFileSync(join(root, 'packages/core/src/errors.ts'), 'utf8');
  const body = errors.slice(errors.indexOf('export class MirrorplaneError'));
  for (const code of Object.keys(ERROR_CODES)) {
    assert.match(code, /^MP_ERR_[A-Z_]+$/);
    assert.ok(body.includes(`'${code}'`), `${code} is in ERROR_CODES but no error class carries it`);
  }
});

test('errorMessage prefixes the code once, and a cause survives', () => {
  const cause = new Error('socket closed');
  const error = new core.RedisUnavailableError('cannot reach Redis', { cause });
  assert.equal(error.code, 'MP_ERR_REDIS_UNAVAILABLE');
  assert.equal(error.cause, cause);
  assert.equal(core.errorMessage(error), 'MP_ERR_REDIS_UNAVAILABLE: cannot reach Redis');
  assert.equal(core.errorMessage(new core.ConfigError([{ key: 'X', message: 'bad' }])), 'MP_ERR_CONFIG: invalid configuration:\n  X: bad');
});

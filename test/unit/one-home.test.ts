import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import fc from 'fast-check';
import {
  decodeQueryComponent,
  decodeQueryComponentBytes,
  headerEntries,
  headerValue,
  headerValues,
  isFormMediaType,
  isJsonMediaType,
  mediaType,
  pairValue,
  pairValues,
  REDACTED,
  Redactor,
  redactionSettings,
} from '@mirrorplane/core';
import { recordRedactedBody } from '@mirrorplane/runtime';

/**
 * Copies of shared concepts that had drifted from their one home (issue #16): each property
 * below generates the members of a family and holds the caller to the shared rule.
 */

const redactor = new Redactor(redactionSettings(undefined));
const SECRET = fc.stringMatching(/^[A-Za-z0-9]{8,24}$/).map((s) => `S3CR${s}`);

/** Escapes `decodeURIComponent` throws on: a lone `%`, non-hex digits, a cut or stray UTF-8 byte. */
const badEscape = fc.constantFrom('%', '%z', '%zz', '%G1', '%E0', '%E0%A4', '%C3', '%80', '%FF');
/** One character of `s` percent-encoded (as a browser or a proxy may leave it), or `s` as is. */
const someEncoded = (s: string) =>
  fc
    .integer({ min: -1, max: s.length - 1 })
    .map((i) => (i < 0 ? s : `${s.slice(0, i)}%${s.charCodeAt(i).toString(16).toUpperCase().padStart(2, '0')}${s.slice(i + 1)}`));

test('a secret query parameter name with a bad escape elsewhere in it is still redacted (tolerant decoding)', () => {
  const secretName = fc
    .tuple(
      fc.stringMatching(/^[a-z]{0,6}$/),
      badEscape,
      fc.stringMatching(/^[a-z]{0,6}$/),
      fc.constantFrom('_token', '_secret', '_key', '_password', '_signature', '_credentials', '.key', '-pwd'),
      fc.constantFrom('', '%5B%5D', '[]', '%5B0%5D'),
    )
    .chain(([a, bad, b, suffix, brackets]) => someEncoded(suffix).map((s) => `${a}${bad}${b}${s}${brackets}`));
  fc.assert(
    fc.property(secretName, SECRET, (name, secret) => {
      assert.ok(redactor.isSecretParam(name), name);
      const shown = redactor.target(`/p?a=1&${name}=${secret}#x`);
      assert.ok(!shown.includes(secret), shown);
      assert.ok(shown.includes(`${name}=${REDACTED}`), shown);
    }),
  );
  // The example the reviewer gave: one bad escape no longer hides an encoded `_`.
  assert.ok(redactor.isSecretParam('x%zz_api%5Fkey'));
});

test('a recorded body is redacted as JSON exactly when content-type.ts says it is JSON (text/json included)', () => {
  const mediaType = fc.oneof(
    fc.constantFrom('text/json', 'Text/JSON; charset=utf-8', 'application/json', 'application/problem+json', 'application/vnd.x+json; v=2'),
    fc.constantFrom('text/plain', 'application/jsonp', 'application/x-ndjson', 'text/html', '+json', 'json', 'application/+json'),
    fc
      .tuple(fc.constantFrom('text', 'application', 'x'), fc.stringMatching(/^[a-z+.-]{0,10}(json)?$/), fc.constantFrom('', '; charset=utf-8'))
      .map(([t, s, p]) => `${t}/${s}${p}`),
  );
  fc.assert(
    fc.property(mediaType, SECRET, fc.constantFrom('password', 'access_token', 'client_secret'), (type, secret, field) => {
      const body = Buffer.from(JSON.stringify({ user: 'ann', [field]: secret }));
      const recorded = recordRedactedBody(['Content-Type', type], body, 1 << 20, redactor);
      assert.equal(!recorded.text.includes(secret), isJsonMediaType(type), `${type}: ${recorded.text}`);
      assert.equal(recorded.size, body.length);
    }),
  );
  // A body with a content coding is kept as sent; `identity` (any case, listed or not) is no coding.
  const body = Buffer.from('{"password":"S3CRhidden"}');
  assert.equal(recordRedactedBody(['content-type', 'text/json', 'content-encoding', 'gzip'], body, 1 << 20, redactor).text, body.toString());
  assert.ok(!recordRedactedBody(['content-type', 'text/json', 'Content-Encoding', ' Identity '], body, 1 << 20, redactor).text.includes('S3CR'));
});

test('the media type is read once: any case, spaces and parameters, for forms as for JSON', () => {
  const randomCase = (t: string) =>
    fc.array(fc.boolean(), { minLength: t.length, maxLength: t.length }).map((up) => [...t].map((c, i) => (up[i] ? c.toUpperCase() : c)).join(''));
  fc.assert(
    fc.property(
      fc.constantFrom('application/x-www-form-urlencoded', 'application/json', 'text/json', 'text/plain', 'multipart/form-data'),
      fc.constantFrom('', ' '),
      fc.constantFrom('', '; charset=utf-8', ';charset="iso-8859-1"'),
      (type, pad, params) =>
        fc.assert(
          fc.property(randomCase(type), (written) => {
            const header = `${pad}${written}${pad}${params}`;
            assert.equal(mediaType(header), type);
            assert.equal(isFormMediaType(header), type === 'application/x-www-form-urlencoded');
            assert.equal(isJsonMediaType(header), type.endsWith('/json'));
          }),
          { numRuns: 10 },
        ),
    ),
    { numRuns: 30 },
  );
});

test('tuple-form header lookups agree with the flat ones', () => {
  const name = fc.constantFrom('content-type', 'Content-Type', 'CONTENT-ENCODING', 'cookie', 'set-cookie', 'x-a');
  const flat = fc.array(fc.tuple(name, fc.string({ maxLength: 8 })), { maxLength: 8 }).map((pairs) => pairs.flat());
  fc.assert(
    fc.property(flat, name, (headers, wanted) => {
      const pairs = headerEntries(headers);
      assert.equal(pairValue(pairs, wanted), headerValue(headers, wanted));
      assert.deepEqual(pairValues(pairs, wanted), headerValues(headers, wanted));
    }),
  );
});

test('the byte form of query decoding agrees with the text form, and undoes any per-byte escaping', () => {
  // Where every escape forms UTF-8, the bytes read as UTF-8 are the text form's answer.
  const valid = fc.array(fc.oneof(fc.stringMatching(/^[A-Za-z0-9+ _.~-]{1,4}$/), fc.constantFrom('%41', '%2B', '%2b', '%C3%A9', '%E2%82%AC', '%20', '%25')), {
    maxLength: 8,
  });
  fc.assert(
    fc.property(valid, (parts) => {
      const text = parts.join('');
      assert.equal(decodeQueryComponentBytes(Buffer.from(text, 'latin1')).toString('utf8'), decodeQueryComponent(text), text);
    }),
  );
  // A malformed escape stays as written, byte for byte, as in the text form.
  fc.assert(
    fc.property(fc.stringMatching(/^[a-z]{0,4}$/), fc.constantFrom('%', '%z', '%zz', '%G1'), fc.stringMatching(/^[g-z]{0,4}$/), (a, bad, b) => {
      const text = `${a}${bad}${b}`;
      assert.equal(decodeQueryComponentBytes(Buffer.from(text, 'latin1')).toString('latin1'), text);
      assert.equal(decodeQueryComponent(text), text);
    }),
  );
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 32 }), (raw) => {
      const escaped = [...raw].map((b) => `%${b.toString(16).padStart(2, '0')}`).join('');
      assert.deepEqual([...decodeQueryComponentBytes(Buffer.from(escaped, 'latin1'))], [...raw]);
    }),
  );
});

const root = fileURLToPath(new URL('../..', import.meta.url));

function sources(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) return name === 'node_modules' || name === 'lib' || name === 'dist' ? [] : sources(path);
    return name.endsWith('.ts') && !name.endsWith('.d.ts') ? [path] : [];
  });
}

/** Every source file of packages/ and apps/. */
function sourceFiles(): string[] {
  return ['packages', 'apps'].flatMap((top) =>
    readdirSync(join(root, top)).flatMap((pkg) => {
      try {
        return sources(join(root, top, pkg, 'src'));
      } catch {
        return [];
      }
    }),
  );
}

test('only config reads settings from process.env; the other uses are the ones config.ts lists', () => {
  const allowed = new Set([
    'packages/core/src/config.ts',
    'apps/cli/src/process.ts',
    'apps/cli/src/commands/start.ts',
    'apps/cli/src/commands/demo.ts',
    'apps/cli/src/hook-imports.ts',
    'apps/sample-backend/src/nginx-mirror.ts',
  ]);
  const readers = sourceFiles()
    .filter((file) => /process\.env\b/.test(readFileSync(file, 'utf8')))
    .map((file) => relative(root, file).split('\\').join('/'));
  assert.deepEqual(
    readers.filter((f) => !allowed.has(f)),
    [],
    'read the setting through loadConfig, or list the exception in config.ts and here',
  );
  const doc = readFileSync(join(root, 'packages/core/src/config.ts'), 'utf8');
  for (const f of allowed)
    if (f !== 'packages/core/src/config.ts') assert.ok(doc.includes(f.replace(/^apps\/cli\/src\/(commands\/)/, '$1')), `config.ts names ${f}`);
});

test('no doc comment is orphaned: a doc block is never followed by another one, so each documents what follows it', () => {
  const orphans = sourceFiles().flatMap((file) => {
    const lines = readFileSync(file, 'utf8').split('\n');
    return lines.flatMap((line, i) => (line.trim().endsWith('*/') && lines[i + 1]?.trim().startsWith('/**') ? [`${relative(root, file)}:${i + 2}`] : []));
  });
  assert.deepEqual(orphans, []);
});

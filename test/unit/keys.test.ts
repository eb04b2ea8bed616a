import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import fc from 'fast-check';
import {
  deploymentKey,
  EntryCipher,
  exporterLockKey,
  hookStorePrefix,
  KEY_FAMILIES,
  keyFamilyTable,
  keysFor,
  partitionKeys,
  productionKeys,
  orderKeys,
  rateBucketKey,
  rateLimitsKey,
  workerKey,
  workersSetKey,
} from '@mirrorplane/core';

const cipher = EntryCipher.fromSpec(`k1:${Buffer.alloc(32, 7).toString('base64')}`)!;

/** A family's pattern as a regex over real keys: `{p}` is a partition tag, `<…>` any text. */
function familyRegex(pattern: string, prefix: string): RegExp {
  const escaped = pattern.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  const tag = `\\{${prefix.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}(?:~[1-9]\\d*)?\\}`;
  return new RegExp(`^${escaped.replace('\\{p\\}', tag).replace(/<[^>]*>/g, '.+')}$`, 's');
}

/** Every key the key module can name for a prefix, partitions and variable parts. */
function everyKey(prefix: string, partitions: number, part: string): string[] {
  const production = productionKeys(prefix);
  const keys = partitionKeys(prefix, partitions).flatMap((k) => [k.stream, k.replayed, `${k.bullPrefix}:${k.retryQueue}:${part}`]);
  return [
    ...keys,
    `${hookStorePrefix(prefix)}${part}`,
    exporterLockKey(prefix),
    production.response(part),
    production.learned(part),
    production.idmap(part, part),
    production.wait(part),
    production.stagingAnswer(part),
    production.diffs,
    production.diffRoutes,
    production.diffPaths,
    production.inflight(part),
    production.idOutcomes,
    productionKeys(prefix, cipher).idmap(part, part),
    workersSetKey(prefix),
    workerKey(prefix, part),
    deploymentKey(prefix),
    rateBucketKey(prefix, part),
    rateLimitsKey(prefix),
    ...Array.from({ length: partitions }, (_, i) => orderKeys(prefix, i)).flatMap((o) => [o.unkeyed, o.heads, o.key(part)]),
  ];
}

test('every key the key module names belongs to exactly one listed family, and every family is named', () => {
  fc.assert(
    fc.property(fc.stringMatching(/^[a-z][a-z0-9-]{0,11}$/), fc.integer({ min: 1, max: 5 }), fc.stringMatching(/^[a-z0-9_]{1,8}$/), (prefix, n, part) => {
      const used = new Set<string>();
      for (const key of everyKey(prefix, n, part)) {
        const families = KEY_FAMILIES.filter((f) => familyRegex(f.pattern, prefix).test(key));
        assert.equal(families.length, 1, `${key} matches ${families.map((f) => f.pattern).join(', ') || 'no family'}`);
        used.add(families[0]!.pattern);
      }
      assert.deepEqual([...used].sort(), KEY_FAMILIES.map((f) => f.pattern).sort());
    }),
  );
});

test("a deployment's keys share partition 0's hash tag; partition i's stream and counter have their own", () => {
  const [p0, p1] = partitionKeys('shop', 2);
  assert.deepEqual(p0, keysFor('shop'));
  assert.equal(p0!.stream, '{shop}:stream');
  assert.equal(p1!.stream, '{shop~1}:stream');
  assert.equal(p1!.replayed, '{shop~1}:replayed');
  assert.equal(p1!.bullPrefix, '{shop}');
  for (const key of everyKey('shop', 1, 'x')) assert.ok(key.startsWith('{shop}:'), key);
});

test('docs/ARCHITECTURE.md lists the key families exactly as the key module does', () => {
  const doc = readFileSync(new URL('../../docs/ARCHITECTURE.md', import.meta.url), 'utf8');
  assert.ok(doc.includes(keyFamilyTable()), 'docs/ARCHITECTURE.md: paste keyFamilyTable() from packages/core/src/keys.ts under "Redis keys"');
});

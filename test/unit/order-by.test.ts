import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { compareStreamIds, ConfigError, loadConfig, orderKeyDigest, orderKeyOf, orderMember, parseOrderBy } from '@mirrorplane/core';

test('sortable members order as the stream ids do', () => {
  const id = fc
    .tuple(fc.bigInt({ min: 0n, max: 9_999_999_999_999_999n }), fc.bigInt({ min: 0n, max: 18_446_744_073_709_551_615n }))
    .map(([ms, seq]) => `${ms}-${seq}`);
  fc.assert(
    fc.property(id, id, (a, b) => {
      const bySort = orderMember(a) < orderMember(b) ? -1 : orderMember(a) > orderMember(b) ? 1 : 0;
      assert.equal(bySort, Math.sign(compareStreamIds(a, b)));
    }),
  );
});

test('the key of a request: a header, a cookie, a path group; none when absent', () => {
  const r = (target: string, rawHeaders: string[]) => ({ target, rawHeaders });
  assert.equal(orderKeyOf(parseOrderBy('header:X-Session')!, r('/', ['x-session', 'a', 'X-Session', 'b'])), 'a');
  assert.equal(orderKeyOf(parseOrderBy('header:x-session')!, r('/', ['host', 'h'])), null);
  assert.equal(orderKeyOf(parseOrderBy('cookie:sid')!, r('/', ['Cookie', 'a=1; sid=42'])), '42');
  assert.equal(orderKeyOf(parseOrderBy('path:^/orders/([^/]+)')!, r('/orders/7/items?x=1', [])), '7');
  assert.equal(orderKeyOf(parseOrderBy('path:^/o/(?<key>\\d+)')!, r('/o/12', [])), '12');
  assert.equal(orderKeyOf(parseOrderBy('path:^/orders/([^/]+)')!, r('/users/7', [])), null);
  assert.equal(parseOrderBy('off'), null);
  // The key never appears in Redis as itself.
  assert.ok(!orderKeyDigest('secret-session').includes('secret'));
  assert.notEqual(orderKeyDigest('a'), orderKeyDigest('b'));
});

test('a bad ORDER_BY is refused naming the key; with partitions it must be the partition header', () => {
  for (const bad of ['session', 'header:', 'path:^/orders/[^/]+', 'path:(', 'query:x']) {
    assert.throws(() => parseOrderBy(bad), { code: 'MP_ERR_INVALID_VALUE' }, bad);
  }
  const keysOf = (env: Record<string, string>) => {
    try {
      loadConfig({ role: 'worker', env: { STAGING_URL: 'http://s.test', ...env } });
      return [];
    } catch (error) {
      assert.ok(error instanceof ConfigError);
      return error.issues.map((i) => i.key);
    }
  };
  assert.deepEqual(keysOf({ ORDER_BY: 'nope' }), ['ORDER_BY']);
  assert.deepEqual(keysOf({ ORDER_BY: 'header:x-s', PARTITIONS: '4' }), ['ORDER_BY']);
  assert.deepEqual(keysOf({ ORDER_BY: 'cookie:sid', PARTITIONS: '4', PARTITION_KEY: 'header:x-s' }), ['ORDER_BY']);
  assert.deepEqual(keysOf({ ORDER_BY: 'header:X-S', PARTITIONS: '4', PARTITION_KEY: 'header:x-s' }), []);
});

test('a path pattern is accepted exactly when the regex engine counts a capturing group in it (escaped, bracketed and non-capturing parentheses are none)', () => {
  const plain = ['a', '\\(', '\\)', '[(]', '[)]', '[^/(]+', '(?:b)', '(?:\\()', '/', '\\d+', '[\\(]', '\\\\'];
  const capturing = ['([^/]+)', '(?<key>[^/]+)', '((?:c))', '(\\()'];
  fc.assert(
    fc.property(
      // A group name may appear once.
      fc.array(fc.constantFrom(...plain, ...capturing), { minLength: 1, maxLength: 6 }).filter((ps) => ps.filter((p) => p.startsWith('(?<')).length <= 1),
      (parts) => {
        const pattern = `^/${parts.join('')}`;
        const hasGroup = parts.some((p) => capturing.includes(p));
        if (hasGroup) assert.equal(parseOrderBy(`path:${pattern}`)?.kind, 'path', pattern);
        else assert.throws(() => parseOrderBy(`path:${pattern}`), /capturing group/, pattern);
      },
    ),
    { numRuns: 500 },
  );
});

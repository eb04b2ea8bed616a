import { test } from 'node:test';
import assert from 'node:assert/strict';
import { stringify } from 'yaml';
import { loadConfig } from '@mirrorplane/core';
import { runCli } from '../helpers/index.js';

// Issue #19, bad values for the three controls: each refused at start with the key named.

const base = { REDIS_URL: 'redis://127.0.0.1:1', STAGING_URL: 'http://127.0.0.1:1' };
const load = (env: Record<string, string>, file?: object) =>
  loadConfig({ role: 'worker', env: { ...base, ...env }, ...(file ? { file: { path: '/tmp/mp-load.yaml', text: stringify(file) } } : {}) });

test('rule amplify outside 1…100 or not a number: refused naming rules[i].amplify', () => {
  for (const bad of [0, 0.5, -2, 101, 1e9, Number.NaN, '3', 'x', null, true]) {
    assert.throws(() => load({}, { rules: [{ name: 'r', match: { pathPrefix: '/' }, amplify: bad }] }), /amplify/, String(bad));
  }
  // The edges are accepted.
  for (const ok of [1, 1.0001, 99.999, 100]) load({}, { rules: [{ name: 'r', match: { pathPrefix: '/' }, amplify: ok }] });
});

test('rateLimit file entries: zero, negative, fractional burst, unknown origin, unknown field refused naming rateLimit', () => {
  for (const bad of [
    { default: { perSecond: 0 } },
    { default: { perSecond: -1 } },
    { default: { perSecond: 5, burst: 0.5 } },
    { default: { perSecond: 5, burst: 0 } },
    { default: { perSecond: 1_000_001 } },
    { default: { perSecond: '5' } },
    { nowhere: { perSecond: 5 } },
    { default: { perSecond: 5, brust: 3 } },
    { default: 5 },
  ]) {
    assert.throws(() => load({}, { rateLimit: bad }), /rateLimit/, JSON.stringify(bad));
  }
});

test('ORDER_BY with PARTITIONS > 1 must be a header equal to PARTITION_KEY; ORDER_MAX_WAIT_MS out of range refused', () => {
  for (const env of <Record<string, string>[]>[
    { PARTITIONS: '4', ORDER_BY: 'cookie:sid', PARTITION_KEY: 'header:x-session' },
    { PARTITIONS: '4', ORDER_BY: 'header:x-session', PARTITION_KEY: 'header:x-user' },
    { PARTITIONS: '4', ORDER_BY: 'path:^/o/([^/]+)' },
  ]) {
    assert.throws(() => load(env), /ORDER_BY|PARTITION_KEY/, JSON.stringify(env));
  }
  for (const v of ['-1', '1.5', '86400001', 'soon']) {
    assert.throws(() => load({ ORDER_BY: 'header:x-s', ORDER_MAX_WAIT_MS: v }), /ORDER_MAX_WAIT_MS/, v);
  }
});

test('mirrorplane replay --amplify out of range or malformed: exit 2 naming --amplify', async () => {
  for (const bad of ['0', '0.5', '101', '-3', 'NaN', '1e2', '2,5', '99%']) {
    const r = await runCli(['replay', '--staging', 'http://127.0.0.1:1', '--amplify', bad, '--from', '-1m'], base);
    assert.equal(r.code, 2, `${bad}: exit ${r.code} ${r.stderr}`);
    assert.match(r.stderr, /--amplify/, bad);
  }
});

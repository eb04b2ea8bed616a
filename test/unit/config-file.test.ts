import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ConfigError, DEFAULT_REDACTED_HEADERS, SETTINGS, loadConfig, type Config } from '@mirrorplane/core';

const EXAMPLES = fileURLToPath(new URL('../../examples/', import.meta.url));

function load(text: string, env: Record<string, string> = {}, path = '/etc/mirrorplane/c.yaml', flags: Record<string, string> = {}): Config {
  return loadConfig({ role: 'worker', env, flags, file: { path, text } });
}

function issues(text: string, env: Record<string, string> = {}, path = 'c.yaml'): string[] {
  try {
    load(text, env, path);
  } catch (error) {
    assert.ok(error instanceof ConfigError, String(error));
    return error.issues.map((i) => `${i.key}: ${i.message}`);
  }
  assert.fail('expected a ConfigError');
}

test('every example config loads', () => {
  const files = readdirSync(EXAMPLES).filter((f) => f.endsWith('.yaml'));
  assert.ok(files.length >= 4, files.join(', '));
  for (const file of files) {
    const path = join(EXAMPLES, file);
    const config = load(readFileSync(path, 'utf8'), {}, path);
    assert.ok(config.origins.default, `${file} has a default origin`);
    if (config.hooks) assert.ok(config.hooks.startsWith(join(EXAMPLES, 'hooks')), `${file}: hooks resolved next to the file`);
  }
});

test('the file-only keys: origins, rules, hooks, recording and redactHeaders', () => {
  const c = load(`
origins: { default: 'http://staging:8080', reports: 'https://reports.staging:8443/base/' }
rules:
  - name: r
    match: { methods: [get], headers: { X-Tenant: acme, x-beta: true }, query: { debug: false } }
    setHeaders: { x-n: 5, x-b: true }
    route: reports
hooks: ./hooks/mine.ts
recording: { dir: rec }
redactHeaders: [Authorization, X-Api-Key]
`);
  assert.deepEqual(c.origins, { default: 'http://staging:8080', reports: 'https://reports.staging:8443/base/' });
  assert.equal(c.stagingUrl, 'http://staging:8080', 'origins.default is STAGING_URL');
  assert.equal(c.rules.length, 1);
  assert.deepEqual(c.rules[0]!.setHeaders, { 'x-n': '5', 'x-b': 'true' }, 'YAML scalars are sent as text');
  assert.equal(c.hooks, '/etc/mirrorplane/hooks/mine.ts');
  assert.deepEqual(c.recording, {
    dir: '/etc/mirrorplane/rec',
    bodyLimit: 65536,
    maxFileBytes: 104857600,
    maxFileAgeMs: 3600000,
    maxQueuedBytes: 67108864,
    encrypt: false,
  });
  assert.deepEqual(c.redactHeaders, ['authorization', 'x-api-key']);
  assert.ok(Object.isFrozen(c.origins) && Object.isFrozen(c.rules));

  const plain = loadConfig({ role: 'worker', env: { STAGING_URL: 'http://s:1' } });
  assert.deepEqual(plain.origins, { default: 'http://s:1' });
  assert.deepEqual(plain.rules, []);
  assert.equal(plain.hooks, null);
  assert.equal(plain.recording, null);
  assert.deepEqual(plain.redactHeaders, DEFAULT_REDACTED_HEADERS);
});

test('STAGING_URL from the env or a flag overrides origins.default; scalars keep their overrides', () => {
  const text = 'origins: { default: "http://file:1", b: "http://b:2" }\nworkerConcurrency: 7\nreplayAttempts: 2\n';
  const env = load(text, { STAGING_URL: 'http://env:1', REPLAY_ATTEMPTS: '9' });
  assert.equal(env.stagingUrl, 'http://env:1');
  assert.deepEqual(env.origins, { default: 'http://env:1', b: 'http://b:2' });
  assert.equal(env.workerConcurrency, 7);
  assert.equal(env.replayAttempts, 9);
  const flag = load(text, { STAGING_URL: 'http://env:1' }, 'c.yaml', { stagingUrl: 'http://flag:1' });
  assert.equal(flag.origins.default, 'http://flag:1');
  assert.deepEqual(issues('stagingUrl: "http://a:1"\norigins: { default: "http://b:1" }\n'), [
    'c.yaml: origins.default: conflicts with stagingUrl; give the default origin once',
  ]);
  assert.equal(load('stagingUrl: "http://a:1"\norigins: { default: "http://a:1" }\n').stagingUrl, 'http://a:1');
  assert.deepEqual(issues('origins: { b: "http://b:2" }\n'), ['STAGING_URL: required by the worker (or --staging)']);
});

test('a malformed file lists every problem by its path', () => {
  const got = issues(`
origins:
  default: http://staging:8080
  other: ftp://x
  "bad name": http://x
rules:
  - name: api-v2
    match: { methods: [GET, POST], pathPrefix: /api/ }
    rewritePath: { from: '^/api/(?<rest>.*)$', to: '/v2/api/$<rest>' }
    setHeaders: { x-env: staging, x-bad: '{{path.nope}}', x-when: '{{today}}' }
  - name: no-payments
    match: { methods: [POST], pathPrefix: /payments }
    drop: true
    setHeaders: { x: y }
  - name: broken
    rewritePath: { from: '(' }
    sample: { fraction: 2, key: 'ip:x' }
  - name: api-v2
    match: { pathprefix: /x, headers: { 'bad header': true } }
    setHeaders: { content-length: 5 }
    removeHeaders: [connection]
  - name: routed
    route: nowhere
    json: { remove: ['a[x]'] }
  - { name: nothing, match: { pathPrefix: / } }
  - name: 'white space'
    drop: yes
recording: { bodyLimit: 5, extra: 1 }
hooks: ./hooks.py
redactHeaders: [ok, 'no good']
logLevel: loud
`);
  assert.deepEqual(
    got.sort(),
    [
      'c.yaml: hooks: expected the path of a .js, .mjs, .cjs, .ts, .mts or .cts module',
      'c.yaml: logLevel: expected one of fatal, error, warn, info, debug, trace, silent',
      'c.yaml: origins.bad name: expected an origin name (1-64 characters of A-Z a-z 0-9 _ -)',
      'c.yaml: origins.other: expected a http: or https: URL, got "ftp:"',
      'c.yaml: recording.dir: required',
      'c.yaml: recording.extra: unknown key',
      'c.yaml: redactHeaders[1]: expected a header name',
      'c.yaml: rules[0].setHeaders.x-bad: {{path.nope}}: no named group "nope" in this rule\'s match.path or rewritePath.from (groups: rest)',
      'c.yaml: rules[0].setHeaders.x-when: unknown variable {{today}}; known: {{entryId}}, {{requestId}}, {{attempt}}, {{method}}, {{host}}, {{now}}, {{nowMs}}, {{path.<group>}}, {{header.<name>}}',
      'c.yaml: rules[1].drop: cannot be combined with setHeaders: a dropped request goes nowhere',
      'c.yaml: rules[2].rewritePath.from: "(": not a valid regular expression: Invalid regular expression: /(/: Unterminated group',
      'c.yaml: rules[2].rewritePath.to: required',
      'c.yaml: rules[2].sample.fraction: expected a number from 0 to 1',
      "c.yaml: rules[2].sample.key: expected 'header:<name>', 'cookie:<name>' or 'query:<name>'",
      "c.yaml: rules[3].match.headers.bad header: expected a header name (letters, digits and !#$%&'*+-.^_`|~)",
      'c.yaml: rules[3].match.pathprefix: unknown key',
      'c.yaml: rules[3].name: duplicate rule name "api-v2" (also rules[0])',
      'c.yaml: rules[3].removeHeaders[0]: cannot remove this header: the replay manages it',
      'c.yaml: rules[3].setHeaders.content-length: cannot set this header: the replay manages it',
      'c.yaml: rules[4].json.remove[0]: "a[x]": expected [n] or ["key"] at "[x]"',
      'c.yaml: rules[4].route: unknown origin "nowhere"; configured: default, other, bad name',
      'c.yaml: rules[5]: has no action (sample, drop, rewritePath, setQuery, removeQuery, removeHeaders, setHeaders, appendHeaders, json, route or amplify)',
      'c.yaml: rules[6].drop: expected true (leave drop out to keep requests)',
      'c.yaml: rules[6].name: expected 1-64 characters of A-Z a-z 0-9 _ . : -',
    ].sort(),
  );
});

test('type errors name the key, and JSON files work the same way', () => {
  const env = { STAGING_URL: 'http://s:1' };
  assert.deepEqual(issues('rules: { name: x }\n', env), ['c.yaml: rules: expected a list of rules']);
  assert.deepEqual(issues('{"rules": [{"name": 5, "drop": true}], "origins": []}', env, 'c.json'), [
    'c.json: origins: expected a map of origin name to URL',
    'c.json: rules[0].name: expected a string',
  ]);
  const ok = load('{"origins": {"default": "http://s:1"}, "rules": [{"name": "d", "drop": true}]}', {}, 'c.json');
  assert.equal(ok.rules[0]!.drop, true);
});

test('docs/CONFIG.md documents every setting and file key', () => {
  const doc = readFileSync(fileURLToPath(new URL('../../docs/CONFIG.md', import.meta.url)), 'utf8');
  const keys = [...Object.keys(SETTINGS), 'origins', 'rateLimit', 'rules', 'hooks', 'recording', 'redactHeaders', 'redact'];
  const missing = keys.filter((k) => !doc.includes(`\`${k}\``));
  assert.deepEqual(missing, [], 'add these keys to docs/CONFIG.md');
  for (const [key, s] of Object.entries(SETTINGS)) assert.ok(doc.includes(`\`${s.env}\``), `${key}: its variable ${s.env} is documented`);
});

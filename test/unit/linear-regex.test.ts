import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import {
  ConfigError,
  LinearRegExp,
  RULE_JSON_MAX_BYTES,
  RULE_JSON_MAX_DEPTH,
  RuleOptions,
  compileRules,
  loadConfig,
  type MirroredRequest,
  type OutgoingRequest,
  type PipelineContext,
} from '@mirrorplane/core';

const ISSUE_PATTERN = '^/files/([a-z0-9]+-?)*\\.txt$';

function ctx(): PipelineContext {
  const mirrored: MirroredRequest = {
    method: 'GET',
    target: '/',
    rawHeaders: ['Host', 'h'],
    body: Buffer.alloc(0),
    receivedAt: 0,
    requestId: null,
    clientAddress: null,
  };
  return { entryId: '1-0', attempt: 1, requestId: null, mirrored, rules: [], tags: {} };
}

test("the issue's pattern on crafted paths: time grows with the input, not 2^n", () => {
  const stage = compileRules([RuleOptions.parse({ name: 'files', match: { path: ISSUE_PATTERN }, setHeaders: { 'x-files': 'yes' } })], {
    origins: new Set(['default']),
  });
  // Native RegExp needs seconds at 30 characters and doubles per character; 100 000 must be instant.
  for (const n of [30, 40, 1000, 100_000]) {
    const path = `/files/${'a1'.repeat(n / 2)}!`;
    const started = performance.now();
    const out = stage.pre!({ method: 'GET', path, headers: [], body: Buffer.alloc(0), origin: 'default' }, ctx()) as OutgoingRequest;
    const ms = performance.now() - started;
    assert.deepEqual(out.headers, [], 'no match');
    assert.ok(ms < 2000, `${n} characters took ${ms.toFixed(0)} ms`);
  }
  const ok = stage.pre!({ method: 'GET', path: '/files/a-b-c.txt', headers: [], body: Buffer.alloc(0), origin: 'default' }, ctx()) as OutgoingRequest;
  assert.deepEqual(ok.headers, ['x-files', 'yes']);
});

// Patterns from a small grammar of what rules use: literals, classes, groups (named too),
// alternation, the quantifiers, anchors. Each must find the same match as JavaScript's engine.
// One known difference is left out: a quantifier over something that can match the empty
// string (`(?:a*|\d)*`): JavaScript retries such an iteration, RE2 stops the loop (documented).
type Gen = readonly [source: string, nullable: boolean];
const atom = fc.constantFrom('a', 'b', '-', '/', '\\.', '[ab]', '[^a]', '\\d', '\\w', '.', '[a-z0-9]').map((a): Gen => [a, false]);
const pattern = (
  fc.letrec((tie) => ({
    re: fc.oneof(
      { depthSize: 'small' },
      atom,
      fc.tuple(tie('re') as fc.Arbitrary<Gen>, tie('re') as fc.Arbitrary<Gen>).map(([x, y]): Gen => [`${x[0]}${y[0]}`, x[1] && y[1]]),
      fc
        .tuple(tie('re') as fc.Arbitrary<Gen>, fc.constantFrom('*', '+', '?', '{1,3}', '{2}', '*?', '+?', '??'))
        .map(([x, q]): Gen => (x[1] ? x : [`(?:${x[0]})${q}`, q[0] !== '+' && q !== '{1,3}' && q !== '{2}'])),
      (tie('re') as fc.Arbitrary<Gen>).map((x): Gen => [`(${x[0]})`, x[1]]),
      (tie('re') as fc.Arbitrary<Gen>).map((x): Gen => [`(?<g>${x[0]})`, x[1]]),
      fc.tuple(tie('re') as fc.Arbitrary<Gen>, tie('re') as fc.Arbitrary<Gen>).map(([x, y]): Gen => [`(?:${x[0]}|${y[0]})`, x[1] || y[1]]),
    ),
  })).re as fc.Arbitrary<Gen>
).map((g) => g[0]);

test("fuzz: a rule pattern finds the same match on RE2 as on JavaScript's engine", () => {
  fc.assert(
    fc.property(
      pattern,
      fc.boolean(),
      fc.boolean(),
      fc.string({ unit: fc.constantFrom('a', 'b', '1', '-', '/', '.', 'x'), maxLength: 12 }),
      (body, start, end, input) => {
        const source = `${start ? '^' : ''}${body}${end ? '$' : ''}`;
        if ((source.match(/\(\?<g>/g) ?? []).length > 1) return; // a name used twice is not valid JavaScript
        const js = new RegExp(source).exec(input);
        const linear = new LinearRegExp(source).exec(input);
        assert.equal(linear === null, js === null, `${source} on ${JSON.stringify(input)}`);
        if (js && linear) {
          assert.equal(linear[0], js[0], `${source} on ${JSON.stringify(input)}`);
          assert.equal(linear.index, js.index);
          assert.deepEqual(linear.indices[0], [js.index, js.index + js[0].length]);
        }
      },
    ),
    { numRuns: 3000 },
  );
});

test('config load refuses what cannot run in linear time, naming the rule and the pattern', () => {
  const yaml = `
rules:
  - name: lookahead
    match: { path: '^/a(?=b)' }
    drop: true
  - name: backref
    rewritePath: { from: '^/(a+)/\\1$', to: '/x' }
  - name: fine
    match: { path: '${ISSUE_PATTERN}' }
    drop: true
idMapping:
  kinds:
    - name: order
      learn: [{ match: { path: '(?<!x)/orders' }, from: { json: '$.id' } }]
      use: [{ path: '/orders/(?<id>[^/]+)' }]
`;
  try {
    loadConfig({ role: 'worker', env: { STAGING_URL: 'http://127.0.0.1:1' }, file: { path: 'c.yaml', text: yaml } });
    assert.fail('expected a ConfigError');
  } catch (error) {
    assert.ok(error instanceof ConfigError, String(error));
    const text = error.issues.map((i) => `${i.key}: ${i.message}`);
    assert.ok(
      text.some((t) => t.startsWith('c.yaml: rules[0].match.path: "^/a(?=b)": a lookahead')),
      text.join('\n'),
    );
    assert.ok(
      text.some((t) => t.startsWith('c.yaml: rules[1].rewritePath.from: "^/(a+)/\\\\1$": a backreference')),
      text.join('\n'),
    );
    assert.ok(
      text.some((t) => /idMapping.*"\(\?<!x\)\/orders": a lookbehind/.test(t)),
      text.join('\n'),
    );
    assert.ok(!text.some((t) => t.includes('rules[2]')), text.join('\n'));
  }
});

test('rule JSON edits are bounded: a body too large or too deep is sent unedited, and counted', () => {
  const limited: string[] = [];
  const stage = compileRules([RuleOptions.parse({ name: 'mask', json: { set: { '$.card': 'x' } } })], {
    origins: new Set(['default']),
    observer: { limited: (rule, reason) => limited.push(`${rule}:${reason}`) },
  });
  const send = (body: Buffer) =>
    (stage.pre!({ method: 'POST', path: '/', headers: ['content-type', 'application/json'], body, origin: 'default' }, ctx()) as OutgoingRequest).body;
  assert.equal(send(Buffer.from('{"card":"1234"}')).toString(), '{"card":"x"}');
  const deep = Buffer.from(`${'['.repeat(RULE_JSON_MAX_DEPTH + 1)}${']'.repeat(RULE_JSON_MAX_DEPTH + 1)}`);
  assert.equal(send(deep), deep);
  // Brackets inside strings are not nesting.
  const flat = Buffer.from(JSON.stringify({ card: '1', s: '['.repeat(1000) }));
  assert.equal(JSON.parse(send(flat).toString()).card, 'x');
  const large = Buffer.from(JSON.stringify({ card: '1', pad: 'p'.repeat(RULE_JSON_MAX_BYTES) }));
  assert.equal(send(large), large);
  const veryDeep = Buffer.from(`${'{"a":'.repeat(200_000)}1${'}'.repeat(200_000)}`);
  assert.equal(send(veryDeep), veryDeep);
  assert.deepEqual(limited, ['mask:json_too_deep', 'mask:json_too_large', 'mask:json_too_large']);
});

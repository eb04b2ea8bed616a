import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import {
  RuleCompileError,
  RuleOptions,
  compileRules,
  loadConfig,
  sampleKeeps,
  sampleScore,
  type MirroredRequest,
  type OutgoingRequest,
  type PipelineContext,
  type PipelineObserver,
} from '@mirrorplane/core';

const EXAMPLE = fileURLToPath(new URL('../../examples/rules.yaml', import.meta.url));
const config = loadConfig({ role: 'worker', env: {}, file: { path: EXAMPLE, text: readFileSync(EXAMPLE, 'utf8') } });

function observed() {
  const events: string[] = [];
  const observer: PipelineObserver = { applied: (r) => events.push(`applied:${r}`), dropped: (by, why) => events.push(`dropped:${by}:${why}`) };
  return { events, observer };
}

const { events, observer } = observed();
const stage = compileRules(config.rules, { origins: new Set(Object.keys(config.origins)), observer });

function request(method: string, path: string, headers: string[] = [], body = ''): OutgoingRequest {
  return {
    method,
    path,
    headers: ['Host', 'staging:8081', ...headers, 'x-mirrorplane-id', '1-0', 'x-mirrorplane-attempt', '1'],
    body: Buffer.from(body),
    origin: 'default',
  };
}

function context(entryId = '1700000000000-0', host = 'shop.example.com-shadow'): PipelineContext {
  const mirrored: MirroredRequest = {
    method: 'GET',
    target: '/',
    rawHeaders: ['Host', host],
    body: Buffer.alloc(0),
    receivedAt: 0,
    requestId: 'req-1',
    clientAddress: null,
  };
  return { entryId, attempt: 1, requestId: 'req-1', mirrored, rules: [], tags: {} };
}

function run(req: OutgoingRequest, ctx = context()): OutgoingRequest | null {
  return stage.pre!(req, ctx) as OutgoingRequest | null;
}

test('the example config is valid and names its origins', () => {
  assert.deepEqual(Object.keys(config.origins).sort(), ['default', 'reports']);
  assert.equal(config.rules.length, 7);
});

test('a request no rule matches is passed on untouched', () => {
  const req = request('GET', '/health?x=%20a+b&y', ['Accept', '*/*', 'x-debug', '1'], '');
  const copy = structuredClone({ ...req, body: req.body.toString('base64') });
  const ctx = context();
  const out = run(req, ctx);
  assert.equal(out, req);
  assert.deepEqual({ ...out, body: out!.body.toString('base64') }, copy);
  assert.deepEqual(ctx.rules, []);
});

test('rewritePath with named groups and header templates', () => {
  events.length = 0;
  const ctx = context('1700000000001-7');
  const out = run(request('POST', '/api/orders/7?a=1', ['Accept', 'x']), ctx)!;
  assert.equal(out.path, '/v2/api/orders/7?a=1');
  assert.deepEqual(out.headers, [
    'Host',
    'staging:8081',
    'Accept',
    'x',
    'x-mirrorplane-id',
    '1-0',
    'x-mirrorplane-attempt',
    '1',
    'x-env',
    'staging',
    'x-trace',
    '1700000000001-7',
  ]);
  assert.deepEqual(ctx.rules, ['api-v2']);
  assert.deepEqual(events, ['applied:api-v2']);
  // Methods outside the list are not matched.
  assert.equal(run(request('DELETE', '/api/orders/7'))!.path, '/api/orders/7');
});

test('drop returns null and is reported with the rule name', () => {
  events.length = 0;
  const ctx = context();
  assert.equal(run(request('POST', '/payments/charge', [], '{}'), ctx), null);
  assert.deepEqual(events, ['dropped:no-payments:rule']);
  assert.deepEqual(ctx.rules, ['no-payments']);
  assert.notEqual(run(request('GET', '/payments/charge')), null, 'GET is not dropped');
});

test('path groups, the mirrored host, append and remove headers', () => {
  const out = run(request('GET', '/users/42/profile', ['X-Debug', 'yes', 'Via', 'proxy', 'X-User-Id', 'spoofed']))!;
  assert.deepEqual(out.headers, [
    'Host',
    'staging:8081',
    'Via',
    'proxy',
    'x-user-id',
    '42',
    'x-mirrorplane-id',
    '1-0',
    'x-mirrorplane-attempt',
    '1',
    'x-mirrored-host',
    'shop.example.com',
    'via',
    'mirrorplane',
  ]);
});

test('query parameters are removed and set; the others keep their exact encoding', () => {
  const out = run(request('GET', '/landing?utm_source=mail&q=a%20b+c&utm_medium=x&mirrored=0&mirrored=9'))!;
  assert.equal(out.path, '/landing?q=a%20b+c&mirrored=1');
  assert.equal(run(request('GET', '/landing?q=1'))!.path, '/landing?q=1');
});

test('route chooses a configured origin by name', () => {
  const ctx = context();
  const out = run(request('GET', '/reports/2024'), ctx)!;
  assert.equal(out.origin, 'reports');
  assert.deepEqual(ctx.rules, ['reports-service']);
});

test('JSON bodies are edited by path; other bodies stay byte-identical', () => {
  const json = JSON.stringify({ customer: { name: 'Zoë', email: 'zoe@real.example' }, card: { number: '4111', exp: '12/30' }, items: [1, 2] });
  const out = run(request('POST', '/orders', ['Content-Type', 'application/json; charset=utf-8'], json), context('9-9'))!;
  assert.deepEqual(JSON.parse(out.body.toString('utf8')), {
    customer: { name: 'Zoë', email: 'test@example.com' },
    card: { exp: '12/30' },
    items: [1, 2],
    source: 'mirror',
    mirrorId: '9-9',
  });

  const vendor = run(request('PUT', '/orders/1', ['content-type', 'application/vnd.shop+json'], '{"card":{"number":"1"}}'))!;
  assert.deepEqual(JSON.parse(vendor.body.toString()), { card: {}, customer: { email: 'test@example.com' }, source: 'mirror', mirrorId: '1700000000000-0' });

  for (const [type, body] of [
    ['text/plain', '{"card":{"number":"4111"}}'],
    ['application/json', '{"card": not json'],
    ['application/json', ''],
  ] as const) {
    const req = request('POST', '/orders', ['Content-Type', type], body);
    const before = req.body;
    const after = run(req)!;
    assert.equal(after.body, before, `${type} ${body}: the same Buffer`);
  }
  const binary = request('POST', '/orders', ['Content-Type', 'application/json'], '');
  binary.body = Buffer.from([0x7b, 0xff, 0xfe, 0x7d]);
  const original = binary.body;
  assert.equal(run(binary)!.body, original, 'invalid UTF-8 is not touched');
});

test('sampling is deterministic per key and near the fraction over many keys', () => {
  for (let i = 0; i < 50; i++) {
    const key = `user-${i}`;
    const first = run(request('GET', '/search?q=x', ['X-User', key]), context(`${i}-0`));
    for (let j = 1; j < 4; j++) {
      const again = run(request('GET', '/search?q=y', ['X-User', key]), context(`${i}-${j}`));
      assert.equal(again === null, first === null, `${key}: same decision every time`);
    }
    assert.equal(first !== null, sampleKeeps(key, 0.25));
  }
  for (const fraction of [0.01, 0.1, 0.25, 0.5, 0.9]) {
    let kept = 0;
    const n = 20_000;
    for (let i = 0; i < n; i++) if (sampleKeeps(`session-${i}`, fraction)) kept += 1;
    const share = kept / n;
    assert.ok(Math.abs(share - fraction) < 0.01 + fraction * 0.05, `fraction ${fraction}: kept ${share}`);
  }
  // Users kept at a smaller fraction are kept at any larger one.
  for (let i = 0; i < 1000; i++) if (sampleKeeps(`u${i}`, 0.1)) assert.ok(sampleKeeps(`u${i}`, 0.3));
  assert.ok(sampleScore('a') >= 0 && sampleScore('a') < 1);
});

test('sampling by cookie, and by entry id when the key is missing', () => {
  const cookieStage = compileRules([RuleOptions.parse({ name: 's', sample: { fraction: 0.5, key: 'cookie:session' } })], { origins: new Set(['default']) });
  for (let i = 0; i < 40; i++) {
    const session = `s${i}`;
    const out = cookieStage.pre!(request('GET', '/', ['Cookie', `theme=dark; session=${session}; x=1`]), context(`${i}-1`));
    assert.equal(out !== null, sampleKeeps(session, 0.5));
    const bare = cookieStage.pre!(request('GET', '/'), context(`${i}-1`));
    assert.equal(bare !== null, sampleKeeps(`${i}-1`, 0.5), 'no cookie: the entry id decides');
  }
});

test('setHeaders replaces every occurrence at the place of the first; header matches are case-insensitive', () => {
  const s = compileRules(
    [RuleOptions.parse({ name: 'h', match: { headers: { 'X-Tenant': 'acme', 'x-beta': true, 'x-skip': false } }, setHeaders: { 'X-Dup': 'new' } })],
    { origins: new Set(['default']) },
  );
  const out = s.pre!(request('GET', '/', ['x-dup', 'a', 'x-tenant', 'acme', 'X-DUP', 'b', 'X-Beta', '']), context()) as OutgoingRequest;
  assert.deepEqual(out.headers.slice(0, 8), ['Host', 'staging:8081', 'X-Dup', 'new', 'x-tenant', 'acme', 'X-Beta', '']);
  const skipped = request('GET', '/', ['x-dup', 'a', 'x-tenant', 'acme', 'x-beta', '1', 'x-skip', '1']);
  assert.equal((s.pre!(skipped, context()) as OutgoingRequest).headers[2], 'x-dup', 'x-skip present: no match');
  const other = request('GET', '/', ['x-tenant', 'other', 'x-beta', '1']);
  assert.deepEqual((s.pre!(other, context()) as OutgoingRequest).headers, other.headers);
});

test('a rewrite that leaves no path throws, naming the rule', () => {
  const s = compileRules([RuleOptions.parse({ name: 'bad-rewrite', rewritePath: { from: '^/(?<p>.*)$', to: '$<p>' } })], { origins: new Set(['default']) });
  assert.throws(
    () => s.pre!(request('GET', '/x'), context()),
    (e: unknown) =>
      e instanceof Error && (e as { code?: string }).code === 'MP_ERR_RULE' && /rule "bad-rewrite": rewritePath turned "\/x" into "x"/.test(e.message),
  );
});

test('compile errors list every problem by path', () => {
  try {
    compileRules(
      [
        RuleOptions.parse({ name: 'a', setHeaders: { 'x-a': '{{path.id}}', 'x-b': '{{nope}}' }, route: 'elsewhere' }),
        RuleOptions.parse({ name: 'b', rewritePath: { from: '^/(?<x>.*)', to: '/$<y>' }, json: { remove: ['a..b'] } }),
      ],
      { origins: new Set(['default']) },
    );
    assert.fail('expected RuleCompileError');
  } catch (error) {
    assert.ok(error instanceof RuleCompileError);
    const got = error.issues.map((i) => `${i.path.join('.')}: ${i.message}`);
    assert.equal(got.length, 5, got.join('\n'));
    for (const expected of [
      /^0\.setHeaders\.x-a: \{\{path\.id\}\}: no named group "id"/,
      /^0\.setHeaders\.x-b: unknown variable \{\{nope\}\}/,
      /^0\.route: unknown origin "elsewhere"; configured: default/,
      /^1\.rewritePath\.to: \$<y> names no group/,
      /^1\.json\.remove\.0: /,
    ]) {
      assert.ok(
        got.some((g) => expected.test(g)),
        `${expected} in:\n${got.join('\n')}`,
      );
    }
  }
});

test('rewritePath.to inserts exactly what String.prototype.replace would', () => {
  const cases: [string, string, string][] = [
    ['^/api/(?<rest>.*)$', '/v2/$<rest>', '/api/a/b'],
    ['^/(a)(b)(c)(d)(e)(f)(g)(h)(i)(j)(k)', '/$11-$10-$1$$-$&-$0-$12', '/abcdefghijkZ'],
    ['b(c)', "/[$`|$'|$2|$1]", '/abcd'],
    ['^/(?<a>x)(y)', '/$2$<a>$1$3', '/xyw'],
    ['^/(?<a>x)(y)', '/$<a', '/xyw'],
    ['(?<x>z)?q', '/$<x>-', '/q'],
    ['o', '/$', '/foo'],
  ];
  for (const [from, to, path] of cases) {
    const s = compileRules([RuleOptions.parse({ name: 'r', rewritePath: { from, to } })], { origins: new Set(['default']) });
    const out = s.pre!(request('GET', path), context()) as OutgoingRequest;
    assert.equal(out.path, path.replace(new RegExp(from), to), `${from} → ${to} on ${path}`);
  }
});

test('a JSON body nested past RULE_JSON_MAX_DEPTH is sent as it came, never a stack overflow, and the depth scan agrees with a parse', async () => {
  const { RULE_JSON_MAX_DEPTH, jsonDeeperThan } = await import('@mirrorplane/core');
  const fc = (await import('fast-check')).default;
  // The depth scan agrees with a parse on generated JSON, strings with brackets and escapes included.
  const nested = fc.letrec((tie) => ({
    value: fc.oneof(
      { depthSize: 'small' },
      fc.string(),
      fc.integer(),
      fc.array(tie('value'), { maxLength: 3 }),
      fc.dictionary(fc.string(), tie('value'), { maxKeys: 3 }),
    ),
  })).value;
  const depthOf = (v: unknown): number => (v !== null && typeof v === 'object' ? 1 + Math.max(0, ...Object.values(v as object).map(depthOf)) : 0);
  fc.assert(fc.property(nested, fc.nat(6), (v, max) => assert.equal(jsonDeeperThan(Buffer.from(JSON.stringify(v)), max), depthOf(v) > max)));

  const deep = (n: number) => `{"card":{"number":"4111"},"x":${'['.repeat(n)}${']'.repeat(n)}}`;
  const ok = run(request('POST', '/orders', ['Content-Type', 'application/json'], deep(RULE_JSON_MAX_DEPTH - 1)))!;
  assert.doesNotMatch(ok.body.toString(), /4111/, 'edited up to the limit');
  for (const depth of [RULE_JSON_MAX_DEPTH + 1, 20_000]) {
    const body = deep(depth);
    const out = run(request('POST', '/orders', ['Content-Type', 'application/json'], body))!;
    assert.equal(out.body.toString(), body, `depth ${depth}: sent exactly as it came`);
  }
});

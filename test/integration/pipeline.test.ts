import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parse, stringify } from 'yaml';
import { sampleKeeps } from '@mirrorplane/core';
import { RecordingServer, RedisServer, Stack, freePort, header, requestHead, runCli, sendRaw, waitFor, type Received, useStack } from '../helpers/index.js';

const EXAMPLES = fileURLToPath(new URL('../../examples/', import.meta.url));

let redis: RedisServer;
let dir: string;
useStack({ dir: 'mp-pipeline-' }, (s) => {
  redis = s.redis;
  dir = s.dir;
});

/**
 * A copy of an example config in the test's directory, with its origins pointed at this
 * test's servers and its hooks path made absolute (it is relative to the example).
 */
function exampleConfig(name: string, patch: Record<string, unknown>): string {
  const doc = parse(readFileSync(join(EXAMPLES, name), 'utf8')) as Record<string, unknown>;
  if (typeof doc.hooks === 'string') doc.hooks = resolve(EXAMPLES, doc.hooks);
  Object.assign(doc, patch);
  const path = join(dir, `${Math.random().toString(36).slice(2)}-${name}`);
  writeFileSync(path, stringify(doc));
  return path;
}

function writeFile(name: string, text: string): string {
  const path = join(dir, name);
  writeFileSync(path, text);
  return path;
}

async function send(stack: Stack, method: string, target: string, headers: string[], body = Buffer.alloc(0)): Promise<void> {
  const res = await sendRaw(stack.ingressPort, requestHead(method, target, headers, body.length > 0 ? body.length : undefined), body);
  assert.equal(res.status, 200, `${method} ${target} accepted`);
}

function byRequestId(received: readonly Received[], id: string): Received {
  const got = received.filter((r) => header(r.rawHeaders, 'x-request-id') === id);
  assert.equal(got.length, 1, `exactly one replay of ${id}, got ${got.length}`);
  return got[0]!;
}

/**
 * What staging receives around the headers a test expects: `Host` in its place (first, as the
 * tests send it) with the staging host, and the request's own `Content-Length` in its place
 * (after the fields sent, before what the replay adds) with the length of the body sent.
 */
function expectedHeaders(host: string, middle: string[], body: Buffer | null): string[] {
  const at = middle.indexOf('x-mirrorplane-id');
  return ['Host', host, ...middle.slice(0, at), ...(body ? ['Content-Length', String(body.length)] : []), ...middle.slice(at)];
}

async function metric(port: number, line: string): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
  const found = text.split('\n').find((l) => l.startsWith(`${line} `));
  return found ? Number(found.split(' ').pop()) : 0;
}

test('rules shape what staging receives; unmatched requests are untouched; drops and samples never reach staging and are counted', async () => {
  const staging = await RecordingServer.start();
  const reports = await RecordingServer.start();
  const config = exampleConfig('rules.yaml', { origins: { default: staging.url, reports: reports.url } });
  const stack = await Stack.start({ redis, stagingUrl: staging.url, workers: 0, env: { MIRRORPLANE_CONFIG: config } });
  const adminPort = await freePort();
  try {
    const worker = await stack.addWorker({ ADMIN_PORT: String(adminPort) });
    const built = await worker.waitForLog('pipeline built');
    assert.deepEqual(built.origins, ['default', 'reports']);
    const host = new URL(staging.url).host;
    const H = (id: string, ...rest: string[]) => ['Host', 'shop.example.com-shadow', 'X-Request-ID', id, ...rest];

    await send(stack, 'GET', '/health?x=%20a+b&utm=1', H('unmatched', 'Accept', '*/*', 'X-Debug', 'keep'));
    const apiBody = Buffer.from('plain text, not JSON');
    await send(stack, 'POST', '/api/orders/7?a=1', H('api', 'Content-Type', 'text/plain'), apiBody);
    await send(stack, 'POST', '/payments/charge', H('payment', 'Content-Type', 'application/json'), Buffer.from('{"amount":100}'));
    await send(stack, 'GET', '/users/42/profile', H('user', 'X-Debug', 'yes', 'Via', 'proxy', 'X-User-Id', 'spoofed'));
    await send(stack, 'GET', '/landing?utm_source=mail&q=a%20b+c&utm_medium=x', H('tracking'));
    await send(stack, 'GET', '/reports/2024?page=2', H('report'));
    const order = Buffer.from(JSON.stringify({ customer: { name: 'Zoë', email: 'zoe@real.example' }, card: { number: '4111 1111 1111 1111', exp: '12/30' } }));
    await send(stack, 'POST', '/orders', H('order-json', 'Content-Type', 'application/json'), order);
    const binary = Buffer.from([0x7b, 0x22, 0xff, 0x00, 0x0d, 0x0a, 0x7d]);
    await send(stack, 'POST', '/orders', H('order-binary', 'Content-Type', 'application/octet-stream'), binary);
    await send(stack, 'PUT', '/orders/9', H('order-bad-json', 'Content-Type', 'application/json'), Buffer.from('{"card": oops'));
    const users = Array.from({ length: 40 }, (_, i) => `user-${i}`);
    for (const user of users) await send(stack, 'GET', `/search?q=${user}`, H(`search-${user}`, 'X-User', user));
    const kept = users.filter((u) => sampleKeeps(u, 0.25));
    assert.ok(kept.length > 0 && kept.length < users.length, `the sample keeps some and drops some (${kept.length})`);

    const expected = 8 + kept.length; // everything but the payment and the sampled-out searches
    await waitFor(`${expected} replays`, () => staging.received.length + reports.received.length >= expected, 60_000);
    await waitFor(
      'the drops to be counted',
      async () =>
        (await metric(adminPort, 'mirrorplane_worker_pipeline_dropped_total{by="no-payments",reason="rule"}')) === 1 &&
        (await metric(adminPort, 'mirrorplane_worker_pipeline_dropped_total{by="sample-search",reason="sample"}')) === users.length - kept.length,
    );
    await waitFor('the stream to drain', async () => {
      const s = await stack.status();
      return s.backlog === 0 && s.pending === 0;
    });
    const status = await stack.status();
    assert.equal(status.failed, 0);
    assert.equal(status.retrying, 0);
    assert.equal(staging.received.length + reports.received.length, expected, 'nothing else reached staging');
    assert.ok(!staging.received.some((r) => r.url.startsWith('/payments')), 'the dropped payment never reached staging');
    assert.equal(await metric(adminPort, 'mirrorplane_worker_replays_total{outcome="dropped"}'), 1 + users.length - kept.length);
    assert.equal(await metric(adminPort, 'mirrorplane_worker_rule_applied_total{rule="api-v2"}'), 1);

    const idOf = (r: Received) => header(r.rawHeaders, 'x-mirrorplane-id') as string;
    const ids = (r: Received) => ['x-mirrorplane-id', idOf(r), 'x-mirrorplane-attempt', '1'];

    const unmatched = byRequestId(staging.received, 'unmatched');
    assert.equal(unmatched.method, 'GET');
    assert.equal(unmatched.url, '/health?x=%20a+b&utm=1');
    assert.deepEqual(unmatched.rawHeaders, expectedHeaders(host, ['X-Request-ID', 'unmatched', 'Accept', '*/*', 'X-Debug', 'keep', ...ids(unmatched)], null));
    assert.equal(unmatched.body.length, 0);

    const api = byRequestId(staging.received, 'api');
    assert.equal(api.method, 'POST');
    assert.equal(api.url, '/v2/api/orders/7?a=1');
    assert.deepEqual(
      api.rawHeaders,
      expectedHeaders(host, ['X-Request-ID', 'api', 'Content-Type', 'text/plain', ...ids(api), 'x-env', 'staging', 'x-trace', idOf(api)], apiBody),
    );
    assert.ok(api.body.equals(apiBody));

    const user = byRequestId(staging.received, 'user');
    assert.equal(user.url, '/users/42/profile');
    assert.deepEqual(
      user.rawHeaders,
      expectedHeaders(
        host,
        ['X-Request-ID', 'user', 'Via', 'proxy', 'x-user-id', '42', ...ids(user), 'x-mirrored-host', 'shop.example.com', 'via', 'mirrorplane'],
        null,
      ),
    );

    const tracking = byRequestId(staging.received, 'tracking');
    assert.equal(tracking.url, '/landing?q=a%20b+c&mirrored=1');

    const report = byRequestId(reports.received, 'report');
    assert.equal(report.url, '/reports/2024?page=2');
    assert.deepEqual(report.rawHeaders, expectedHeaders(new URL(reports.url).host, ['X-Request-ID', 'report', ...ids(report)], null));
    assert.equal(reports.received.length, 1, 'only the routed request reached the reports origin');

    const orderJson = byRequestId(staging.received, 'order-json');
    const edited = Buffer.from(
      JSON.stringify({ customer: { name: 'Zoë', email: 'test@example.com' }, card: { exp: '12/30' }, source: 'mirror', mirrorId: idOf(orderJson) }),
    );
    assert.ok(orderJson.body.equals(edited), `edited JSON: ${orderJson.body.toString()}`);
    assert.deepEqual(
      orderJson.rawHeaders,
      expectedHeaders(host, ['X-Request-ID', 'order-json', 'Content-Type', 'application/json', ...ids(orderJson)], edited),
    );
    assert.ok(byRequestId(staging.received, 'order-binary').body.equals(binary), 'a non-JSON body is byte-identical');
    assert.ok(byRequestId(staging.received, 'order-bad-json').body.equals(Buffer.from('{"card": oops')), 'an unparsable JSON body is byte-identical');

    const searched = users.filter((u) => staging.received.some((r) => header(r.rawHeaders, 'x-request-id') === `search-${u}`));
    assert.deepEqual(searched, kept, 'exactly the users the sample keeps');
  } finally {
    await stack.close();
    await staging.close();
    await reports.close();
  }
});

test('a replay can only reach a configured origin, whatever a hook or the request says', async () => {
  const staging = await RecordingServer.start();
  const backend = await RecordingServer.start();
  const evil = await RecordingServer.start();
  const hooks = writeFile(
    'route-hooks.mjs',
    `
export function pre(request) {
  if (request.path.startsWith('/by-url')) request.origin = ${JSON.stringify(evil.url)};
  if (request.path.startsWith('/by-name')) request.origin = 'evil';
  if (request.path.startsWith('/by-proto')) request.origin = '__proto__';
  if (request.path.startsWith('/by-path')) request.path = ${JSON.stringify(`${evil.url}/stolen?x=1`)};
  if (request.path.startsWith('/by-host')) request.headers.push('x-forwarded-host', ${JSON.stringify(new URL(evil.url).host)});
  if (request.path.startsWith('/backend')) request.origin = 'backend';
  return request;
}
`,
  );
  const config = writeFile('route.yaml', stringify({ origins: { default: staging.url, backend: backend.url }, hooks }));
  const stack = await Stack.start({ redis, stagingUrl: staging.url, env: { MIRRORPLANE_CONFIG: config } });
  try {
    const target = (path: string) => `http://${new URL(evil.url).host}${path}`;
    for (const path of ['/by-url', '/by-name', '/by-proto']) await send(stack, 'GET', path, ['Host', new URL(evil.url).host, 'X-Request-ID', path]);
    await send(stack, 'GET', target('/by-path'), ['Host', new URL(evil.url).host, 'X-Request-ID', '/by-path']);
    await send(stack, 'GET', '/by-host', ['Host', new URL(evil.url).host, 'X-Request-ID', '/by-host']);
    await send(stack, 'GET', '/backend/x', ['Host', 'shop.example.com', 'X-Request-ID', '/backend']);
    await waitFor('three failed entries', async () => (await stack.status()).failed === 3, 60_000);
    await waitFor('the other replays', () => staging.received.length === 2 && backend.received.length === 1);
    const list = await stack.cli(['failed', 'list', '--json']);
    const failed = JSON.parse(list.stdout) as { url: string; lastError: string; attempts: number }[];
    assert.deepEqual(failed.map((f) => f.url).sort(), ['/by-name', '/by-proto', '/by-url']);
    for (const f of failed) {
      assert.match(f.lastError, /origin ".*" is not configured; configured origins: default, backend/);
      assert.equal(f.attempts, 1, 'not retried: no retry can make an unknown origin known');
    }
    assert.equal(byRequestId(staging.received, '/by-path').url, '/stolen?x=1', 'an absolute path loses its authority');
    assert.equal(header(byRequestId(staging.received, '/by-host').rawHeaders, 'host'), new URL(staging.url).host);
    const routed = byRequestId(backend.received, '/backend');
    assert.equal(header(routed.rawHeaders, 'host'), new URL(backend.url).host, "a routed request carries its origin's Host");
    assert.equal(evil.received.length, 0, 'nothing reached a server that is not configured');
  } finally {
    await stack.close();
    await staging.close();
    await backend.close();
    await evil.close();
  }
});

test('the JavaScript hooks example adds a header and sends the request to the staging backend', async () => {
  const staging = await RecordingServer.start();
  const backend = await RecordingServer.start();
  const config = exampleConfig('hooks-js.yaml', { origins: { default: staging.url, backend: backend.url } });
  const stack = await Stack.start({ redis, stagingUrl: staging.url, env: { MIRRORPLANE_CONFIG: config } });
  try {
    const body = Buffer.from('{"item":"book"}');
    await send(stack, 'POST', '/orders?x=1', ['Host', 'shop.example.com', 'X-Request-ID', 'js-hook', 'Content-Type', 'application/json'], body);
    await waitFor('the replay on the backend', () => backend.received.length === 1);
    const r = backend.received[0]!;
    assert.equal(r.method, 'POST');
    assert.equal(r.url, '/orders?x=1');
    assert.ok(r.body.equals(body));
    const id = header(r.rawHeaders, 'x-mirrorplane-id') as string;
    assert.deepEqual(
      r.rawHeaders,
      expectedHeaders(
        new URL(backend.url).host,
        ['X-Request-ID', 'js-hook', 'Content-Type', 'application/json', 'x-mirrorplane-id', id, 'x-mirrorplane-attempt', '1', 'x-mirrorplane-env', 'staging'],
        body,
      ),
    );
    assert.equal(staging.received.length, 0);
  } finally {
    await stack.close();
    await staging.close();
    await backend.close();
  }
});

test('the TypeScript hooks example loads through tsx, tags tenants, shares state in Redis and drops internal traffic', async () => {
  const staging = await RecordingServer.start();
  const config = exampleConfig('hooks-ts.yaml', { origins: { default: staging.url } });
  const stack = await Stack.start({ redis, stagingUrl: staging.url, workers: 0, env: { MIRRORPLANE_CONFIG: config } });
  try {
    const worker = await stack.addWorker();
    const ready = await worker.waitForLog('tenant tagging ready');
    assert.equal(ready.component, 'hooks');
    await send(stack, 'GET', '/api/items', ['Host', 'acme.example.com', 'X-Request-ID', 'acme-1']);
    await waitFor('the first acme replay', () => staging.received.length === 1);
    await send(stack, 'GET', '/api/items/2', ['Host', 'acme.example.com', 'X-Request-ID', 'acme-2']);
    await send(stack, 'GET', '/other', ['Host', 'x.example.com', 'X-Tenant', 'Globex', 'X-Request-ID', 'globex-1']);
    await send(stack, 'GET', '/api/secret', ['Host', 'internal.example.com', 'X-Request-ID', 'internal-1']);
    await waitFor(
      'three replays and one drop',
      async () => staging.received.length === 3 && (await stack.status()).backlog === 0 && (await stack.status()).pending === 0,
      60_000,
    );
    const first = byRequestId(staging.received, 'acme-1');
    assert.equal(first.url, '/v2/api/items', 'the rules ran before the hooks');
    const id = header(first.rawHeaders, 'x-mirrorplane-id') as string;
    assert.deepEqual(
      first.rawHeaders,
      expectedHeaders(
        new URL(staging.url).host,
        ['X-Request-ID', 'acme-1', 'x-mirrorplane-id', id, 'x-mirrorplane-attempt', '1', 'x-tenant-id', 'acme', 'x-tenant-seq', '1'],
        null,
      ),
    );
    assert.equal(header(byRequestId(staging.received, 'acme-2').rawHeaders, 'x-tenant-seq'), '2', 'the counter lives in the shared store');
    const globex = byRequestId(staging.received, 'globex-1');
    assert.equal(header(globex.rawHeaders, 'x-tenant-id'), 'globex');
    assert.ok(!staging.received.some((r) => header(r.rawHeaders, 'x-request-id') === 'internal-1'));
    const client = redis.client();
    try {
      assert.equal(await client.get(`{${stack.env.MIRRORPLANE_PREFIX}}:kv:tenant:acme`), '2');
      assert.ok((await client.pttl(`{${stack.env.MIRRORPLANE_PREFIX}}:kv:tenant:acme`)) > 0, 'store keys expire');
    } finally {
      client.disconnect();
    }
  } finally {
    await stack.close();
    await staging.close();
  }
});

test('a throwing pre (hook or rule) lands the entry in the failed set with its message, once; a throwing post is logged and the replay counts', async () => {
  const staging = await RecordingServer.start();
  const hooks = writeFile(
    'throwing-hooks.mjs',
    `
export function pre(request) {
  if (request.path === '/boom') throw new Error('tenant lookup failed for /boom');
  return request;
}
export async function post(response, request) {
  if (request.path === '/post-boom') throw new Error('comparison store unavailable');
}
`,
  );
  const config = writeFile(
    'throwing.yaml',
    stringify({
      origins: { default: staging.url },
      rules: [{ name: 'strip-all', match: { pathPrefix: '/strip/' }, rewritePath: { from: '^/strip/(?<rest>.*)$', to: '$<rest>' } }],
      hooks,
    }),
  );
  const stack = await Stack.start({ redis, stagingUrl: staging.url, env: { MIRRORPLANE_CONFIG: config, REPLAY_ATTEMPTS: '3' } });
  try {
    await send(stack, 'POST', '/boom', ['Host', 'x', 'X-Request-ID', 'boom'], Buffer.from('b'));
    await send(stack, 'GET', '/strip/me', ['Host', 'x', 'X-Request-ID', 'strip']);
    await send(stack, 'GET', '/post-boom', ['Host', 'x', 'X-Request-ID', 'post-boom']);
    await waitFor('two failed entries', async () => (await stack.status()).failed === 2, 60_000);
    await waitFor('the post-boom replay', () => staging.received.length === 1);
    const warned = await stack.workers[0]!.waitForLog('post handler failed');
    assert.match(String(warned.err), /comparison store unavailable/);
    const failed = JSON.parse((await stack.cli(['failed', 'list', '--json'])).stdout) as { url: string; lastError: string; attempts: number }[];
    const byUrl = Object.fromEntries(failed.map((f) => [f.url, f]));
    assert.match(byUrl['/boom']!.lastError, /MP_ERR_HOOK: pre hook threw: tenant lookup failed for \/boom/);
    assert.match(
      byUrl['/strip/me']!.lastError,
      /MP_ERR_STAGE: pre stage rules threw: rule "strip-all": rewritePath turned "\/strip\/me" into "me", which is not a path/,
    );
    assert.equal(byUrl['/boom']!.attempts, 1);
    const status = await stack.status();
    assert.equal(status.retrying, 0, 'a failing pre is not retried');
    assert.equal(status.replayed, 1, 'the replay whose post threw counts as done');
    assert.equal(byRequestId(staging.received, 'post-boom').url, '/post-boom');
  } finally {
    await stack.close();
    await staging.close();
  }
});

test('a malformed config file stops the worker with every problem listed by path', async () => {
  const bad = writeFile(
    'malformed.yaml',
    `
origins:
  default: http://127.0.0.1:1
  other: ftp://x
rules:
  - name: api-v2
    match: { methods: [GET], pathPrefix: api/ }
    setHeaders: { x-trace: '{{path.rest}}' }
  - name: no-to
    rewritePath: { from: '^/a' }
  - name: api-v2
    match: { pathprefix: /x }
    route: nowhere
recording: { bodyLimit: -1 }
`,
  );
  const result = await runCli(['worker', '--config', bad], { REDIS_URL: redis.url });
  assert.equal(result.code, 2, result.stderr);
  const lines = result.stderr
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l.startsWith(bad));
  const keys = lines.map((l) => l.slice(bad.length + 2).split(': ')[0]).sort();
  assert.deepEqual(
    keys,
    [
      'origins.other',
      'recording.bodyLimit',
      'recording.dir',
      'rules[0].match.pathPrefix',
      'rules[1].rewritePath.to',
      'rules[2].match.pathprefix',
      'rules[2].name',
    ],
    result.stderr,
  );
  assert.match(result.stderr, /rules\[1\]\.rewritePath\.to: required/);
  assert.match(result.stderr, /rules\[2\]\.match\.pathprefix: unknown key/);
  assert.match(result.stderr, /rules\[2\]\.name: duplicate rule name "api-v2" \(also rules\[0\]\)/);
});

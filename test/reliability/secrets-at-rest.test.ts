import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Redis } from 'ioredis';
import {
  MirrorplaneProcess,
  RecordingServer,
  RedisServer,
  Stack,
  freePort,
  header,
  requestHead,
  runCli,
  sendRaw,
  waitFor,
  type Received,
  useStack,
} from '../helpers/index.js';

/**
 * Issue 12, attacks 2 and 3, as one kind each:
 * - with MIRRORPLANE_DATA_KEY, no stored payload is in clear: after a run that touches every
 *   store (stream, retries, failed set, production responses, comparisons and diff records,
 *   ID mapping, recordings), EVERY key of the deployment is read by its type and EVERY recording
 *   file is read, and no marker placed in bodies, headers or query strings is found, in clear
 *   or in base64. A store added later without sealing fails this test.
 * - without the key, what people read (logs, recordings, HAR, diff records, `failed list`, the
 *   dashboard's API) holds no secret header or query value; staging still receives every byte.
 */

let redis: RedisServer;
let dir: string;
useStack({ dir: 'mp-secrets-' }, (s) => {
  redis = s.redis;
  dir = s.dir;
});

/** A fresh marker: letters and digits only, so URL encoding leaves it as is. */
function marker(name: string): string {
  return `MK${name}${randomBytes(6).toString('hex')}`;
}

/** The marker as it shows inside base64 text at any of the three byte alignments. */
function base64Forms(m: string): string[] {
  return [0, 1, 2].map((k) => {
    const b = Buffer.concat([Buffer.alloc(k, 0x20), Buffer.from(m)]).toString('base64');
    // The first and last 4 characters depend on the neighbours; the middle only on the marker.
    return b.slice(4, -4);
  });
}

/**
 * Every key whose name holds the prefix, read whole by its type (SCAN, then TYPE): string,
 * hash (fields and values), list, set, sorted set (members), stream (every field and value).
 * A type this does not know fails the test, so a new kind of store cannot be skipped.
 */
async function readDeployment(client: Redis, prefix: string): Promise<{ keys: string[]; bytes: Buffer }> {
  const keys: string[] = [];
  let cursor = '0';
  do {
    const [next, batch] = await client.scan(cursor, 'MATCH', `*${prefix}*`, 'COUNT', 1000);
    cursor = next;
    keys.push(...batch);
  } while (cursor !== '0');
  const parts: Buffer[] = [];
  for (const key of keys) {
    parts.push(Buffer.from(key));
    const type = await client.type(key);
    switch (type) {
      case 'string':
        parts.push((await client.getBuffer(key)) ?? Buffer.alloc(0));
        break;
      case 'hash':
        for (const [f, v] of Object.entries(await client.hgetallBuffer(key))) parts.push(Buffer.from(f), v);
        break;
      case 'list':
        parts.push(...(await client.lrangeBuffer(key, 0, -1)));
        break;
      case 'set':
        parts.push(...(await client.smembersBuffer(key)));
        break;
      case 'zset':
        parts.push(...(await client.zrangeBuffer(key, 0, -1)));
        break;
      case 'stream': {
        const entries = await (client as unknown as { xrangeBuffer(...a: string[]): Promise<[Buffer, Buffer[]][]> }).xrangeBuffer(key, '-', '+');
        for (const [id, fields] of entries) parts.push(id, ...fields);
        break;
      }
      case 'none':
        break; // expired between SCAN and TYPE
      default:
        assert.fail(`key ${key} has type ${type}, which this scan does not read: teach it, and seal what it holds`);
    }
  }
  return { keys, bytes: Buffer.concat(parts) };
}

function assertAbsent(where: string, haystack: string, markers: Record<string, string>): void {
  for (const [name, m] of Object.entries(markers)) {
    assert.ok(!haystack.includes(m), `${where}: the ${name} marker in clear`);
    for (const form of base64Forms(m)) assert.ok(!haystack.includes(form), `${where}: the ${name} marker in base64`);
  }
}

/** A hook whose error quotes the request, query and all: a failure reason is stored and shown as text. */
function quotingHook(): string {
  const path = join(dir, 'quoting-hook.mjs');
  writeFileSync(
    path,
    "export function pre(request) {\n  if (request.path.startsWith('/hook-fail')) throw new Error('refused GET ' + request.path);\n  return request;\n}\n",
  );
  return path;
}

function configFile(name: string, lines: string[]): string {
  const path = join(dir, name);
  writeFileSync(path, `${lines.join('\n')}\n`);
  return path;
}

const MIXED_CONFIG = (recordingDir: string, encrypt: boolean) => [
  'productionResponses:',
  '  ttlMs: 600000',
  'idMapping:',
  '  waitLimitMs: 20000',
  '  waitDelayMs: 100',
  '  kinds:',
  '    - name: order',
  '      learn:',
  '        - match: { methods: [POST], path: "^/orders$" }',
  '          from: { json: id }',
  '      use:',
  '        - path: "^/orders/(?<id>[^/]+)$"',
  'compare:',
  '  headers: [content-type]',
  'recording:',
  `  dir: ${JSON.stringify(recordingDir)}`,
  `  encrypt: ${encrypt}`,
];

interface Markers {
  [name: string]: string;
}

/**
 * The mixed run: an order created (production and staging IDs learned), read with its
 * production ID (mapped), compared with a differing production answer (a diff record), and
 * a request staging refuses until it is in the failed set after a retry. Every request carries
 * markers in headers, query and body; production's answers carry markers in Set-Cookie and body.
 */
async function mixedRun(stack: Stack, adminPort: number, m: Markers): Promise<void> {
  const mirror = async (method: string, target: string, body: string, requestId: string) => {
    const payload = Buffer.from(body);
    const headers = [
      'Host',
      'shop.example.com',
      'X-Request-ID',
      requestId,
      'Authorization',
      `Bearer ${m.authorization}`,
      'X-Api-Key',
      m.apiKey as string,
      'Cookie',
      `session=${m.cookie}`,
      'Content-Type',
      'application/json',
    ];
    const r = await sendRaw(stack.ingressPort, requestHead(method, target, headers, payload.length || undefined), payload);
    assert.equal(r.status, 200);
  };
  const production = async (requestId: string, method: string, path: string, status: number, body: string) => {
    const r = await fetch(`http://127.0.0.1:${adminPort}/production-responses`, {
      method: 'POST',
      headers: {
        'x-mirrorplane-request-id': requestId,
        'x-mirrorplane-status': String(status),
        'x-mirrorplane-method': method,
        'x-mirrorplane-path': path,
        'x-mirrorplane-headers': JSON.stringify(['content-type', 'application/json', 'set-cookie', `prod=${m.setCookie}`]),
      },
      body,
    });
    assert.equal(r.status, 204, await r.text());
  };
  const create = `/orders?access_token=${m.query}`;
  await production('r-create', 'POST', create, 201, JSON.stringify({ id: 'ord_1001', note: m.productionBody }));
  await mirror('POST', create, JSON.stringify({ card: m.body }), 'r-create');
  await mirror('GET', `/orders/ord_1001?token=${m.query}`, '', 'r-read');
  await production('r-read', 'GET', `/orders/ord_1001?token=${m.query}`, 200, JSON.stringify({ id: 'ord_1001', note: m.productionBody, differs: true }));
  await mirror('POST', `/fail?api_key=${m.query}`, JSON.stringify({ card: m.body }), 'r-fail');
}

async function startStaging(m: Markers): Promise<RecordingServer> {
  return RecordingServer.start((req: Received, res) => {
    const path = req.url.split('?')[0] as string;
    if (path === '/fail') return void res.writeHead(503).end();
    const text = JSON.stringify({ id: 'stg_17', echo: m.stagingBody });
    res.writeHead(path === '/orders' ? 201 : 200, { 'content-type': 'application/json', 'set-cookie': `stg=${m.stagingCookie}` }).end(text);
  });
}

/** What staging received carries every secret exactly as mirrored (redaction is for people and files only). */
function assertStagingGotSecrets(received: readonly Received[], m: Markers): void {
  const create = received.find((r) => r.method === 'POST' && r.url.startsWith('/orders'));
  assert.ok(create, 'staging got the create');
  assert.equal(create.url, `/orders?access_token=${m.query}`);
  assert.equal(header(create.rawHeaders, 'authorization'), `Bearer ${m.authorization}`);
  assert.equal(header(create.rawHeaders, 'x-api-key'), m.apiKey);
  assert.equal(header(create.rawHeaders, 'cookie'), `session=${m.cookie}`);
  assert.equal(create.body.toString(), JSON.stringify({ card: m.body }));
  const read = received.find((r) => r.method === 'GET');
  assert.equal(read?.url, `/orders/stg_17?token=${m.query}`, "the production ID mapped to staging's");
}

test('MIRRORPLANE_DATA_KEY: after a mixed run, no key of the deployment and no recording file holds a marker in clear', async () => {
  const m: Markers = {
    authorization: marker('auth'),
    apiKey: marker('apikey'),
    cookie: marker('cookie'),
    query: marker('query'),
    body: marker('body'),
    productionBody: marker('prodbody'),
    setCookie: marker('setcookie'),
    stagingBody: marker('stgbody'),
    stagingCookie: marker('stgcookie'),
  };
  const server = await startStaging(m);
  const recordingDir = join(dir, 'rec-encrypted');
  const adminPort = await freePort();
  const dataKey = `k1:${randomBytes(32).toString('base64')}`;
  const config = configFile('encrypted.yaml', [...MIXED_CONFIG(recordingDir, true), `hooks: ${JSON.stringify(quotingHook())}`]);
  const stack = await Stack.start({
    redis,
    stagingUrl: server.url,
    workers: 0,
    env: { MIRRORPLANE_CONFIG: config, MIRRORPLANE_DATA_KEY: dataKey, REPLAY_ATTEMPTS: '2', REPLAY_BACKOFF_MS: '100' },
    ingressEnv: { ADMIN_PORT: String(adminPort) },
  });
  const client = redis.client();
  try {
    await stack.addWorker();
    await mixedRun(stack, adminPort, m);
    assert.equal((await fetch(`http://127.0.0.1:${stack.ingressPort}/hook-fail?token=${m.query}`)).status, 200);
    await waitFor(
      '2 replayed; 2 failed: after a retry, and by the hook',
      async () => {
        const s = await stack.status();
        return s.replayed === 2 && s.failed === 2 && s.backlog === 0 && s.pending === 0;
      },
      60_000,
    );
    const prefix = stack.env.MIRRORPLANE_PREFIX as string;
    await waitFor('a diff record', async () => (await client.llen(`{${prefix}}:diffs`)) > 0);
    assertStagingGotSecrets(server.received, m);
    const failedList = await stack.cli(['failed', 'list']);
    assert.match(failedList.stdout, /refused GET \/hook-fail\?token=\[redacted\]/, failedList.stdout);

    const { keys, bytes } = await readDeployment(client, prefix);
    // The run did reach every store this test means to cover.
    for (const kind of [':stream', ':retry:', ':prod:', ':idmap:order:', ':diffs', ':diff:routes']) {
      assert.ok(
        keys.some((k) => k.includes(kind)),
        `a key like ${kind} (keys: ${keys.join(' ')})`,
      );
    }
    assertAbsent('Redis', bytes.toString('latin1'), m);
    // The ID-mapping key names carry no production ID either.
    assert.ok(!keys.some((k) => k.includes('ord_1001')), keys.join(' '));

    await stack.close();
    const files = readdirSync(recordingDir).filter((f) => f.endsWith('.jsonl'));
    assert.ok(files.length > 0, 'recordings were written');
    const recorded = files.map((f) => readFileSync(join(recordingDir, f), 'latin1')).join('\n');
    assert.ok(
      recorded
        .split('\n')
        .filter(Boolean)
        .every((line) => line.startsWith('mps1:')),
      'every line sealed',
    );
    assertAbsent('recordings', recorded, m);
    // With the key, the CLI reads them back (and without it says why it cannot).
    const har = await runCli(['record', 'export', '--format', 'har', ...files.map((f) => join(recordingDir, f))], { MIRRORPLANE_DATA_KEY: dataKey });
    assert.equal(har.code, 0, har.stderr);
    assert.ok((JSON.parse(har.stdout) as { log: { entries: unknown[] } }).log.entries.length >= 2);
    const blind = await runCli(['record', 'export', '--format', 'har', join(recordingDir, files[0] as string)], {});
    assert.notEqual(blind.code, 0);
    assert.match(blind.stderr, /encrypted .*MIRRORPLANE_DATA_KEY/);
  } finally {
    client.disconnect();
    await stack.close();
    await server.close();
  }
});

test('redaction by default: secret headers and query values appear in no log, recording, HAR, diff record, failed list or dashboard answer; staging gets every byte', async () => {
  const m: Markers = {
    authorization: marker('auth'),
    apiKey: marker('apikey'),
    cookie: marker('cookie'),
    query: marker('query'),
    body: 'plain-body',
    productionBody: 'plain-production',
    setCookie: marker('setcookie'),
    stagingBody: 'plain-staging',
    stagingCookie: marker('stgcookie'),
  };
  // Bodies are not secret by name: only headers and query values are checked here.
  const secrets = {
    authorization: m.authorization,
    apiKey: m.apiKey,
    cookie: m.cookie,
    query: m.query,
    setCookie: m.setCookie,
    stagingCookie: m.stagingCookie,
  } as Record<string, string>;
  const server = await startStaging(m);
  const recordingDir = join(dir, 'rec-plain');
  const adminPort = await freePort();
  const config = configFile('plain.yaml', [...MIXED_CONFIG(recordingDir, false), `hooks: ${JSON.stringify(quotingHook())}`]);
  const stack = await Stack.start({
    redis,
    stagingUrl: server.url,
    workers: 0,
    env: { MIRRORPLANE_CONFIG: config, REPLAY_ATTEMPTS: '2', REPLAY_BACKOFF_MS: '100', LOG_LEVEL: 'debug' },
    ingressEnv: { ADMIN_PORT: String(adminPort) },
  });
  const client = redis.client();
  const dashboardPort = await freePort();
  let dashboard: MirrorplaneProcess | undefined;
  try {
    await stack.addWorker({ LOG_LEVEL: 'debug' });
    await mixedRun(stack, adminPort, m);
    assert.equal((await fetch(`http://127.0.0.1:${stack.ingressPort}/hook-fail?token=${m.query}`)).status, 200);
    await waitFor(
      '2 replayed; 2 failed: after a retry, and by the hook',
      async () => {
        const s = await stack.status();
        return s.replayed === 2 && s.failed === 2 && s.backlog === 0 && s.pending === 0;
      },
      60_000,
    );
    const prefix = stack.env.MIRRORPLANE_PREFIX as string;
    await waitFor('a diff record', async () => (await client.llen(`{${prefix}}:diffs`)) > 0);
    assertStagingGotSecrets(server.received, m);

    const failedList = await stack.cli(['failed', 'list']);
    assert.equal(failedList.code, 0, failedList.stderr);
    assert.match(failedList.stdout, /\/fail\?api_key=\[redacted\]/);
    assert.match(failedList.stdout, /refused GET \/hook-fail\?token=\[redacted\]/, 'the error message, redacted');
    const failedJson = await stack.cli(['failed', 'list', '--json']);
    const diffRecords = (await client.lrange(`{${prefix}}:diffs`, 0, -1)).join('\n');
    assert.match(diffRecords, /\[redacted\]/);

    dashboard = new MirrorplaneProcess(['dashboard', '--port', String(dashboardPort)], stack.env);
    await dashboard.waitForLog('dashboard listening');
    const board = await (await fetch(`http://127.0.0.1:${dashboardPort}/queues/api/queues?activeQueue=retry&status=failed&page=1`)).text();
    assert.match(board, /api_key=\[redacted\]/);

    await stack.close();
    const files = readdirSync(recordingDir)
      .filter((f) => f.endsWith('.jsonl'))
      .map((f) => join(recordingDir, f));
    assert.ok(files.length > 0);
    const recorded = files.map((f) => readFileSync(f, 'utf8')).join('\n');
    assert.match(recorded, /access_token=\[redacted\]/);
    const har = await runCli(['record', 'export', '--format', 'har', ...files], {});
    assert.equal(har.code, 0, har.stderr);
    // A recording written before redaction (secrets in clear) is redacted on export all the same.
    const legacy = join(recordingDir, 'legacy.jsonl');
    writeFileSync(legacy, `${(recorded.split('\n')[0] as string).replaceAll('[redacted]', m.query as string)}\n`);
    assert.ok(readFileSync(legacy, 'utf8').includes(m.query as string));
    const legacyHar = await runCli(['record', 'export', '--format', 'har', legacy], {});
    assert.equal(legacyHar.code, 0, legacyHar.stderr);

    const readable: [string, string][] = [
      ['ingress logs', stack.ingress.stdout + stack.ingress.stderr],
      ...stack.workers.map((w, i): [string, string] => [`worker ${i} logs`, w.stdout + w.stderr]),
      ['dashboard logs', dashboard.stdout + dashboard.stderr],
      ['failed list', failedList.stdout + failedList.stderr],
      ['failed list --json', failedJson.stdout],
      ['diff records', diffRecords],
      ['dashboard API', board],
      ['recordings', recorded],
      ['HAR', har.stdout],
      ['HAR of a legacy recording', legacyHar.stdout],
    ];
    for (const [where, text] of readable) assertAbsent(where, text, secrets);
  } finally {
    client.disconnect();
    await dashboard?.stop();
    await stack.close();
    await server.close();
  }
});

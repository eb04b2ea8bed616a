import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { encodeEntryFields, keysFor } from '@mirrorplane/core';
import { RecordingServer, RedisServer, Stack, header, runCli, waitFor, useStack } from '../helpers/index.js';
import { parseFilter, parseSpeed, parseTime, progressReporter } from '../../apps/cli/src/replay-window.js';

let redis: RedisServer;
let client: Redis;

useStack({}, (s) => {
  redis = s.redis;
  client = s.client();
});

test('times, speeds and filters are parsed, and bad ones are named', () => {
  const now = Date.parse('2026-11-26T12:00:00Z');
  assert.equal(parseTime('2026-11-26T10:00:00Z', now), Date.parse('2026-11-26T10:00:00Z'));
  assert.equal(parseTime('2026-11-26 10:00:00+01:00', now), Date.parse('2026-11-26T09:00:00Z'));
  assert.equal(parseTime('-15m', now), now - 900_000);
  assert.equal(parseTime('2h ago', now), now - 7_200_000);
  assert.equal(parseTime('now', now), now);
  assert.equal(parseTime('1764151200000', now), 1764151200000);
  assert.throws(() => parseTime('2026-11-26T10:00:00', now), /expected a time/, 'a time without a zone is refused');
  assert.equal(parseSpeed('2x'), 2);
  assert.equal(parseSpeed('0.5'), 0.5);
  assert.equal(parseSpeed('max'), Infinity);
  assert.throws(() => parseSpeed('fast'), /expected a speed like 2x/);
  const f = parseFilter('method=POST,put path=^/api header.x-tenant=^acme');
  assert.equal(f({ method: 'POST', target: '/api/x', rawHeaders: ['X-Tenant', 'acme-1'] }), true);
  assert.equal(f({ method: 'PUT', target: '/api/x', rawHeaders: ['x-tenant', 'acme'] }), true);
  assert.equal(f({ method: 'GET', target: '/api/x', rawHeaders: ['x-tenant', 'acme'] }), false);
  assert.equal(f({ method: 'POST', target: '/web', rawHeaders: ['x-tenant', 'acme'] }), false);
  assert.equal(f({ method: 'POST', target: '/api', rawHeaders: [] }), false);
  assert.throws(() => parseFilter('verb=GET'), /unknown key "verb"/);
  assert.throws(() => parseFilter('path=(['), /filter term "path=\(\["/);
});

/** Appends entries at chosen times, as the ingress would have. */
async function seed(prefix: string, items: { t: number; method: string; target: string; body: string }[]): Promise<void> {
  const { stream } = keysFor(prefix);
  for (const [i, it] of items.entries()) {
    const fields = encodeEntryFields({
      method: it.method,
      target: it.target,
      rawHeaders: ['Host', 'prod.example', 'X-Request-Id', `r${i}`],
      body: Buffer.from(it.body),
      receivedAt: it.t,
      requestId: `r${i}`,
      clientAddress: '10.0.0.1',
    });
    await client.xadd(stream, `${it.t}-0`, ...(fields as string[]));
  }
}

test('--staging: the window is replayed from the CLI to that origin, filtered, with its timing scaled', async () => {
  const staging = await RecordingServer.start((req, res) => void res.writeHead(req.url.endsWith('/3') ? 404 : 201).end());
  const prefix = `t${randomBytes(4).toString('hex')}`;
  const t0 = Date.now() - 600_000;
  await seed(prefix, [
    { t: t0 - 5000, method: 'POST', target: '/api/before', body: 'outside the window' },
    { t: t0, method: 'POST', target: '/api/orders/1', body: 'one' },
    { t: t0 + 300, method: 'POST', target: '/api/orders/2', body: 'two' },
    { t: t0 + 450, method: 'GET', target: '/api/orders', body: '' },
    { t: t0 + 600, method: 'POST', target: '/web/login', body: 'not api' },
    { t: t0 + 900, method: 'POST', target: '/api/orders/3', body: 'three' },
    { t: t0 + 5000, method: 'POST', target: '/api/after', body: 'outside the window' },
  ]);
  try {
    const result = await runCli(
      [
        'replay',
        '--from',
        String(t0),
        '--to',
        new Date(t0 + 1000).toISOString(),
        '--speed',
        '2x',
        '--staging',
        staging.url,
        '--filter',
        'method=POST path=^/api',
      ],
      { REDIS_URL: redis.url, MIRRORPLANE_PREFIX: prefix },
    );
    assert.equal(result.code, 0, result.stderr);
    assert.deepEqual(
      staging.received.map((r) => [r.method, r.url, r.body.toString()]),
      [
        ['POST', '/api/orders/1', 'one'],
        ['POST', '/api/orders/2', 'two'],
        ['POST', '/api/orders/3', 'three'],
      ],
    );
    assert.equal(header(staging.received[0]!.rawHeaders, 'x-request-id'), 'r1');
    // 900 ms of traffic at 2x: the last request leaves no sooner than 450 ms after the first.
    const span = staging.received[2]!.receivedAt - staging.received[0]!.receivedAt;
    assert.ok(span >= 400, `the original gaps, halved (${span} ms)`);
    assert.match(result.stdout, /read 5, filtered out 2/);
    assert.match(result.stdout, new RegExp(`sent 3 to ${staging.url.replace(/[.:/]/g, '\\$&')}`));
    assert.match(result.stdout, /2xx 2 {2}4xx 1/);
    assert.equal(result.stderr, '', 'no progress bar drawn into a pipe');
    const drawn: string[] = [];
    const bar = progressReporter((s) => drawn.push(s), true);
    bar.update(1, 3);
    bar.done();
    assert.match(drawn.join(''), /^\r\[#{30}\] 100% {2}3 sent {2}\d+ s\n$/, 'on a terminal the bar reaches 100%');

    const json = await runCli(['replay', '--from', String(t0), '--to', String(t0 + 1000), '--speed', 'max', '--staging', staging.url, '--json'], {
      REDIS_URL: redis.url,
      MIRRORPLANE_PREFIX: prefix,
    });
    assert.equal(json.code, 0, json.stderr);
    const summary = JSON.parse(json.stdout);
    assert.equal(summary.read, 5);
    assert.equal(summary.sent, 5);
    assert.deepEqual(summary.statuses, { '2xx': 4, '4xx': 1 });
  } finally {
    await staging.close();
  }
});

test('without --staging the window goes back to the stream and the workers replay it again', async () => {
  const staging = await RecordingServer.start();
  const stack = await Stack.start({ redis, stagingUrl: staging.url, env: { STREAM_RETENTION: '1h' } });
  try {
    for (let i = 0; i < 10; i++) {
      const res = await fetch(`http://127.0.0.1:${stack.ingressPort}/again/${i}`, {
        method: 'PUT',
        body: `payload-${i}`,
        headers: { 'x-request-id': `again-${i}` },
      });
      assert.equal(res.status, 200);
    }
    await waitFor('the first replay', async () => (await stack.status()).replayed === 10);
    const result = await stack.cli(['replay', '--from', '-5m', '--speed', 'max']);
    assert.equal(result.code, 0, result.stderr);
    assert.match(result.stdout, /appended 10 to the stream for the workers/);
    await waitFor('the second replay', () => staging.received.length === 20);
    const first = staging.received.slice(0, 10);
    const second = staging.received.slice(10);
    for (let i = 0; i < 10; i++) {
      const a = first.find((r) => header(r.rawHeaders, 'x-request-id') === `again-${i}`)!;
      const b = second.find((r) => header(r.rawHeaders, 'x-request-id') === `again-${i}`)!;
      assert.equal(b.method, 'PUT');
      assert.equal(b.url, a.url);
      assert.deepEqual(b.body, a.body, 'byte for byte');
      assert.notEqual(header(b.rawHeaders, 'x-mirrorplane-id'), header(a.rawHeaders, 'x-mirrorplane-id'), 'a new entry');
    }
    const status = await waitFor('both replays counted', async () => {
      const s = await stack.status();
      return s.replayed === 20 ? s : null;
    });
    assert.equal(status.backlog, 0);

    const empty = await stack.cli(['replay', '--from', '2001-01-01T00:00:00Z', '--to', '2001-01-02T00:00:00Z']);
    assert.equal(empty.code, 0);
    assert.match(empty.stdout, /nothing in that window/);
    const bad = await stack.cli(['replay', '--from', 'yesterday']);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /--from: expected a time/);
    const backwards = await stack.cli(['replay', '--from', '-1m', '--to', '-2m']);
    assert.equal(backwards.code, 2);
    assert.match(backwards.stderr, /--to .* is before --from/);
  } finally {
    await stack.close();
    await staging.close();
  }
});

test('--file replays recording files; lines with truncated bodies are skipped and counted', async () => {
  const staging = await RecordingServer.start();
  const dir = mkdtempSync(join(tmpdir(), 'mp-test-recordings-'));
  try {
    const at = (ms: number) => new Date(Date.parse('2026-11-26T10:00:00Z') + ms).toISOString();
    const line = (i: number, body: { size: number; text: string; encoding?: 'base64'; truncated?: true }) =>
      JSON.stringify({
        v: 1,
        entryId: `1-${i}`,
        requestId: `rec-${i}`,
        attempt: 1,
        receivedAt: at(i * 100),
        sentAt: at(i * 100 + 5),
        ms: 3,
        origin: { name: 'default', url: 'http://staging' },
        rules: [],
        tags: {},
        mirrored: {
          method: 'POST',
          target: `/rec/${i}`,
          clientAddress: null,
          headers: [
            ['Host', 'prod'],
            ['X-Request-Id', `rec-${i}`],
          ],
          body,
        },
        sent: { method: 'POST', path: `/rec/${i}`, headers: [], body: { size: 0, text: '' } },
        response: { status: 200, headers: [], body: { size: 0, text: '' } },
      });
    const file = join(dir, 'r.jsonl');
    writeFileSync(
      file,
      [
        line(0, { size: 5, text: 'hello' }),
        line(1, { size: 3, text: Buffer.from([0, 1, 255]).toString('base64'), encoding: 'base64' }),
        line(2, { size: 100000, text: 'cut', truncated: true }),
      ].join('\n') + '\n',
    );
    const result = await runCli(['replay', '--file', file, '--staging', staging.url, '--speed', 'max'], { REDIS_URL: redis.url, MIRRORPLANE_PREFIX: 'tfile' });
    assert.equal(result.code, 0, result.stderr);
    assert.deepEqual(
      staging.received.map((r) => [r.url, r.body.toString('hex')]),
      [
        ['/rec/0', Buffer.from('hello').toString('hex')],
        ['/rec/1', '0001ff'],
      ],
    );
    assert.match(result.stdout, /read 3, filtered out 0, skipped 1 with truncated bodies/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
    await staging.close();
  }
});

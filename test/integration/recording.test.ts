import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parse, stringify } from 'yaml';
import { z } from 'zod';
import { RecordingServer, RedisServer, Stack, header, requestHead, runCli, sendRaw, waitFor, useStack } from '../helpers/index.js';

const EXAMPLES = fileURLToPath(new URL('../../examples/', import.meta.url));

let redis: RedisServer;
let dir: string;
useStack({ dir: 'mp-recording-' }, (s) => {
  redis = s.redis;
  dir = s.dir;
});

// HAR 1.2 (http://www.softwareishard.com/blog/har-12-spec/): the required fields of each
// object, with their types. Custom fields must start with an underscore.
const nameValue = z.strictObject({ name: z.string(), value: z.string(), comment: z.string().optional() });
const custom = (shape: z.ZodRawShape) =>
  z.looseObject(shape).superRefine((o, ctx) => {
    for (const key of Object.keys(o)) if (!(key in shape) && !key.startsWith('_')) ctx.addIssue({ code: 'custom', message: `non-HAR field ${key}` });
  });
const HarSchema = z.strictObject({
  log: custom({
    version: z.literal('1.2'),
    creator: custom({ name: z.string(), version: z.string() }),
    pages: z.array(z.unknown()).optional(),
    entries: z.array(
      custom({
        pageref: z.string().optional(),
        startedDateTime: z.iso.datetime({ offset: true }),
        time: z.number().min(0),
        request: custom({
          method: z.string(),
          url: z.url(),
          httpVersion: z.string(),
          cookies: z.array(nameValue),
          headers: z.array(nameValue),
          queryString: z.array(nameValue),
          postData: custom({ mimeType: z.string(), params: z.array(z.unknown()), text: z.string() }).optional(),
          headersSize: z.number().int(),
          bodySize: z.number().int(),
        }),
        response: custom({
          status: z.number().int(),
          statusText: z.string(),
          httpVersion: z.string(),
          cookies: z.array(nameValue),
          headers: z.array(nameValue),
          content: custom({ size: z.number().int(), mimeType: z.string(), text: z.string().optional(), encoding: z.string().optional() }),
          redirectURL: z.string(),
          headersSize: z.number().int(),
          bodySize: z.number().int(),
        }),
        cache: z.object({}),
        timings: custom({
          blocked: z.number().optional(),
          dns: z.number().optional(),
          connect: z.number().optional(),
          send: z.number(),
          wait: z.number(),
          receive: z.number(),
          ssl: z.number().optional(),
        }),
      }),
    ),
  }),
});

const SECRETS = ['auth-secret-123', 'cookie-secret-456', 'key-secret-789', 'staging-secret-cookie'];
const binaryAnswer = Buffer.from([0x00, 0xff, 0x10, 0x80, 0x7f, 0x0d, 0x0a]);

test('every finished replay is recorded, secrets stay out of recordings and logs, and the HAR export is valid HAR 1.2', async () => {
  const staging = await RecordingServer.start((req, res) => {
    if (req.url.startsWith('/binary')) {
      res.writeHead(200, { 'content-type': 'application/octet-stream' }).end(binaryAnswer);
      return;
    }
    res.writeHead(201, [
      ['Content-Type', 'application/json'],
      ['Set-Cookie', 'sid=staging-secret-cookie; HttpOnly'],
      ['X-Staging', 'yes'],
    ] as unknown as Record<string, string>);
    res.end(JSON.stringify({ ok: true, got: req.body.length }));
  });
  const recordings = join(dir, 'recordings');
  const doc = parse(readFileSync(join(EXAMPLES, 'recording.yaml'), 'utf8')) as Record<string, unknown>;
  doc.hooks = resolve(EXAMPLES, doc.hooks as string);
  doc.origins = { default: staging.url };
  doc.recording = { ...(doc.recording as object), dir: recordings, bodyLimit: 1024 };
  const config = join(dir, 'recording.yaml');
  writeFileSync(config, stringify(doc));
  const stack = await Stack.start({ redis, stagingUrl: staging.url, env: { MIRRORPLANE_CONFIG: config } });
  try {
    const count = 24;
    const big = Buffer.from('x'.repeat(3000));
    for (let i = 0; i < count; i++) {
      const headers = [
        'Host',
        'shop.example.com',
        'X-Request-ID',
        `rec-${i}`,
        'Authorization',
        'Bearer auth-secret-123',
        'Cookie',
        'session=cookie-secret-456',
        'X-Api-Key',
        'key-secret-789',
      ];
      const target = i === 0 ? '/binary' : `/orders/${i}?q=a%20b`;
      const body = i === 1 ? big : i % 2 === 0 ? Buffer.alloc(0) : Buffer.from(JSON.stringify({ n: i, name: 'Zoë' }));
      if (body.length > 0) headers.push('Content-Type', 'application/json');
      const res = await sendRaw(stack.ingressPort, requestHead(i % 2 === 0 ? 'GET' : 'POST', target, headers, body.length || undefined), body);
      assert.equal(res.status, 200);
    }
    await waitFor(`${count} replays`, () => staging.received.length === count, 60_000);
    // A graceful stop: every line queued must be on disk when the worker exits.
    const code = await stack.workers[0]!.stop('SIGTERM');
    assert.equal(code, 0);

    const files = readdirSync(recordings)
      .filter((f) => f.endsWith('.jsonl'))
      .map((f) => join(recordings, f));
    assert.ok(files.length >= 1);
    const text = files.map((f) => readFileSync(f, 'utf8')).join('');
    const lines = text
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l));
    assert.equal(lines.length, count, 'one line per finished replay, none lost on shutdown');
    const logs = stack.workers[0]!.stdout;
    for (const secret of SECRETS) {
      assert.ok(!text.includes(secret), `recordings never hold ${secret}`);
      assert.ok(!logs.includes(secret), `logs never hold ${secret}`);
    }
    assert.ok(text.includes('[redacted]') && logs.includes('[redacted]'));

    const answered = stack.workers[0]!.logs().filter((l) => l.msg === 'staging answered');
    assert.equal(answered.length, count, 'the post hook logged every answer');
    const logged = answered.find((l) => l.path === '/orders/3?q=a%20b')!;
    assert.deepEqual(logged.headers, [
      'content-type',
      'application/json',
      'set-cookie',
      '[redacted]',
      'x-staging',
      'yes',
      ...(logged.headers as string[]).slice(6),
    ]);
    assert.ok((logged.sent as string[]).includes('[redacted]'));
    assert.equal((logged.sent as string[])[(logged.sent as string[]).indexOf('X-Api-Key') + 1], '[redacted]');

    const thirdBody = JSON.stringify({ n: 3, name: 'Zoë' });
    const thirdAnswer = JSON.stringify({ ok: true, got: Buffer.byteLength(thirdBody) });
    const third = lines.find((l) => l.requestId === 'rec-3');
    assert.equal(third.v, 1);
    assert.equal(third.attempt, 1);
    assert.deepEqual(third.rules, ['mark-mirror']);
    assert.deepEqual(third.origin, { name: 'default', url: staging.url });
    assert.equal(third.mirrored.method, 'POST');
    assert.equal(third.mirrored.target, '/orders/3?q=a%20b');
    assert.deepEqual(third.mirrored.headers.slice(0, 5), [
      ['Host', 'shop.example.com'],
      ['X-Request-ID', 'rec-3'],
      ['Authorization', '[redacted]'],
      ['Cookie', '[redacted]'],
      ['X-Api-Key', '[redacted]'],
    ]);
    assert.deepEqual(third.mirrored.body, { size: Buffer.byteLength(thirdBody), text: thirdBody });
    assert.equal(third.sent.path, '/orders/3?q=a%20b');
    assert.ok(
      third.sent.headers.some(([n, v]: [string, string]) => n === 'x-mirrored-at' && !Number.isNaN(Date.parse(v))),
      'what the rule added is recorded',
    );
    assert.equal(third.response.status, 201);
    assert.deepEqual(third.response.headers.slice(0, 3), [
      ['content-type', 'application/json'],
      ['set-cookie', '[redacted]'],
      ['x-staging', 'yes'],
    ]);
    assert.deepEqual(third.response.body, { size: thirdAnswer.length, text: thirdAnswer });
    assert.ok(Date.parse(third.sentAt) >= Date.parse(third.receivedAt));
    const staged = staging.received.find((r) => header(r.rawHeaders, 'x-request-id') === 'rec-3')!;
    assert.equal(third.entryId, header(staged.rawHeaders, 'x-mirrorplane-id'));

    const binary = lines.find((l) => l.requestId === 'rec-0');
    assert.deepEqual(binary.response.body, { size: binaryAnswer.length, text: binaryAnswer.toString('base64'), encoding: 'base64' });
    const cut = lines.find((l) => l.requestId === 'rec-1');
    assert.deepEqual(cut.sent.body, { size: 3000, text: 'x'.repeat(1024), truncated: true });

    const harPath = join(dir, 'out.har');
    const exported = await runCli(['record', 'export', ...files, '--format', 'har', '--out', harPath], {});
    assert.equal(exported.code, 0, exported.stderr);
    const har = JSON.parse(readFileSync(harPath, 'utf8'));
    const checked = HarSchema.safeParse(har);
    assert.ok(checked.success, checked.success ? '' : JSON.stringify(checked.error.issues.slice(0, 5)));
    assert.equal(har.log.entries.length, count);
    const e = har.log.entries.find((x: { _mirrorplane: { requestId: string } }) => x._mirrorplane.requestId === 'rec-3');
    assert.equal(e.request.method, 'POST');
    assert.equal(e.request.url, `${staging.url}/orders/3?q=a%20b`);
    assert.deepEqual(e.request.queryString, [{ name: 'q', value: 'a b' }]);
    assert.deepEqual(e.request.postData, { mimeType: 'application/json', params: [], text: thirdBody });
    assert.ok(e.request.headers.some((h: { name: string; value: string }) => h.name === 'Authorization' && h.value === '[redacted]'));
    assert.equal(e.response.status, 201);
    assert.equal(e.response.statusText, 'Created');
    assert.deepEqual(e.response.content, { size: thirdAnswer.length, mimeType: 'application/json', text: thirdAnswer });
    assert.deepEqual(e.response.cookies, [], 'a redacted Set-Cookie has no name=value left');
    assert.equal(e.startedDateTime, third.sentAt);
    assert.equal(e._mirrorplane.entryId, third.entryId);
    assert.deepEqual(e._mirrorplane.rules, ['mark-mirror']);
    const b = har.log.entries.find((x: { _mirrorplane: { requestId: string } }) => x._mirrorplane.requestId === 'rec-0');
    assert.ok(Buffer.from(b.response.content.text, 'base64').equals(binaryAnswer), 'binary bodies round-trip through base64');
    assert.equal(b.response.content.encoding, 'base64');
    const sorted = har.log.entries.map((x: { startedDateTime: string }) => x.startedDateTime);
    assert.deepEqual(sorted, [...sorted].sort(), 'entries in time order');

    const toStdout = await runCli(['record', 'export', files[0]!, '--format', 'har'], {});
    assert.equal(toStdout.code, 0);
    assert.ok(HarSchema.safeParse(JSON.parse(toStdout.stdout)).success);
  } finally {
    await stack.close();
    await staging.close();
  }
});

test('record export refuses what is not a recording, naming the file and line', async () => {
  const file = join(dir, 'not-a-recording.jsonl');
  writeFileSync(file, '{"v":1,"entryId":"1-0"}\n');
  const result = await runCli(['record', 'export', file, '--format', 'har'], {});
  assert.equal(result.code, 1);
  assert.match(result.stderr, new RegExp(`MP_ERR_RECORDING: ${file.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}:1: not a mirrorplane recording line`));
  const format = await runCli(['record', 'export', file, '--format', 'csv'], {});
  assert.equal(format.code, 2);
  assert.match(format.stderr, /--format: expected har, got "csv"/);
});

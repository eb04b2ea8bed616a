import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import * as zlib from 'node:zlib';
import { Ajv } from 'ajv';
import { toHar } from '../../apps/cli/src/record.js';
import { RECORDING_VERSION, recordBody, type RecordedExchange } from '@mirrorplane/runtime';

/**
 * HAR export checked by a third-party validator: the HAR 1.2 JSON schemas of `har-schema`
 * (the ones `har-validator` shipped, now that it is deprecated) compiled by Ajv 8.
 */
const require = createRequire(import.meta.url);
const schemas = require('har-schema') as Record<string, Record<string, unknown>>;
const ajv = new Ajv({ strict: false, allErrors: true });
ajv.addMetaSchema(require('ajv/dist/refs/json-schema-draft-06.json') as Record<string, unknown>);
for (const schema of Object.values(schemas)) ajv.addSchema(schema);
const validateHar = ajv.getSchema('har.json#')!;

function exchange(sent: { headers: [string, string][]; body: Buffer }, response: { headers: [string, string][]; body: Buffer }): RecordedExchange {
  return {
    v: RECORDING_VERSION,
    entryId: '1700000000000-0',
    requestId: 'r-1',
    attempt: 1,
    receivedAt: '2026-01-01T00:00:00.000Z',
    sentAt: '2026-01-01T00:00:00.010Z',
    ms: 3.5,
    origin: { name: 'default', url: 'http://staging.test' },
    rules: [],
    tags: {},
    mirrored: { method: 'POST', target: '/login', clientAddress: null, headers: sent.headers, body: recordBody(sent.body, 65536) },
    sent: { method: 'POST', path: '/login?next=%2Fhome', headers: sent.headers, body: recordBody(sent.body, 65536) },
    response: { status: 200, headers: response.headers, body: recordBody(response.body, 65536) },
  };
}

function valid(har: unknown): void {
  const ok = validateHar(har);
  assert.ok(ok, JSON.stringify(validateHar.errors, null, 2));
}

test('url-encoded form bodies fill postData.params (HAR 1.2), decoded, in order, duplicates kept', () => {
  const form = Buffer.from('user=ann+lee&pass=s%C3%A9cret&tag=a&tag=b&pct=50%off&empty=&bare');
  const har = toHar(
    [
      exchange(
        { headers: [['content-type', 'application/x-www-form-urlencoded; charset=utf-8']], body: form },
        { headers: [['content-type', 'text/plain']], body: Buffer.from('ok') },
      ),
    ],
    '0.1.0',
  );
  valid(har);
  const postData = har.log.entries[0]!.request.postData!;
  assert.equal(postData.text, form.toString());
  assert.deepEqual(postData.params, [
    { name: 'user', value: 'ann lee' },
    { name: 'pass', value: 'sécret' },
    { name: 'tag', value: 'a' },
    { name: 'tag', value: 'b' },
    { name: 'pct', value: '50%off' },
    { name: 'empty', value: '' },
    { name: 'bare', value: '' },
  ]);
  assert.deepEqual(har.log.entries[0]!.request.queryString, [{ name: 'next', value: '/home' }]);
});

test('JSON and binary request bodies: no params; binary text is base64 flagged by _encoding', () => {
  const binary = Buffer.from([0, 1, 2, 255, 254]);
  const har = toHar(
    [
      exchange({ headers: [['content-type', 'application/json']], body: Buffer.from('{"a":1}') }, { headers: [], body: Buffer.alloc(0) }),
      exchange({ headers: [['content-type', 'application/octet-stream']], body: binary }, { headers: [['content-type', 'image/png']], body: binary }),
    ],
    '0.1.0',
  );
  valid(har);
  const [json, bin] = har.log.entries;
  assert.deepEqual(json!.request.postData!.params, []);
  assert.equal(json!.request.postData!.text, '{"a":1}');
  assert.deepEqual(bin!.request.postData, { mimeType: 'application/octet-stream', params: [], text: binary.toString('base64'), _encoding: 'base64' });
  assert.deepEqual(bin!.response.content, { size: 5, mimeType: 'image/png', text: binary.toString('base64'), encoding: 'base64' });
});

test('compressed bodies are shown decoded, with HAR compression; an undecodable one as received, and said so', () => {
  const text = JSON.stringify({ items: Array.from({ length: 50 }, (_, i) => ({ i, name: `item ${i}` })) });
  const gz = zlib.gzipSync(Buffer.from(text));
  const br = zlib.brotliCompressSync(Buffer.from('user=ann&x=1'));
  const har = toHar(
    [
      exchange(
        {
          headers: [
            ['content-type', 'application/x-www-form-urlencoded'],
            ['content-encoding', 'br'],
          ],
          body: br,
        },
        {
          headers: [
            ['content-type', 'application/json'],
            ['content-encoding', 'gzip'],
          ],
          body: gz,
        },
      ),
      exchange(
        { headers: [['content-type', 'text/plain']], body: Buffer.from('x') },
        {
          headers: [
            ['content-type', 'application/json'],
            ['content-encoding', 'gzip'],
          ],
          body: Buffer.from('not gzip at all'),
        },
      ),
    ],
    '0.1.0',
  );
  valid(har);
  const [good, bad] = har.log.entries;
  assert.equal(good!.response.content.text, text);
  assert.equal(good!.response.content.size, text.length);
  assert.equal(good!.response.content.compression, text.length - gz.length);
  assert.equal(good!.response.bodySize, gz.length);
  assert.deepEqual(good!.request.postData!.params, [
    { name: 'user', value: 'ann' },
    { name: 'x', value: '1' },
  ]);
  assert.equal(bad!.response.content.text, 'not gzip at all');
  assert.match(bad!._mirrorplane.undecoded?.response ?? '', /^gzip body does not decode/);
});

test('the validator is not a rubber stamp: a broken HAR fails it', () => {
  const har = toHar([exchange({ headers: [], body: Buffer.from('a=1') }, { headers: [], body: Buffer.alloc(0) })], '0.1.0') as unknown as {
    log: { entries: { request: { method?: unknown } }[] };
  };
  delete har.log.entries[0]!.request.method;
  assert.equal(validateHar(har), false);
});

test('an HTTP/2 exchange is marked HTTP/2 in HAR (request and response) and keeps its trailers under _mirrorplane', () => {
  const line: RecordedExchange = {
    ...exchange(
      { headers: [['content-type', 'application/grpc']], body: Buffer.from([0, 0, 0, 0, 1, 7]) },
      { headers: [['content-type', 'application/grpc']], body: Buffer.alloc(0) },
    ),
    protocol: 'HTTP/2',
  };
  line.response.trailers = [
    ['grpc-status', '0'],
    ['grpc-message', ''],
  ];
  const har = toHar([line], '0.0.0');
  valid(har);
  const [entry] = har.log.entries;
  assert.equal(entry?.request.httpVersion, 'HTTP/2');
  assert.equal(entry?.response.httpVersion, 'HTTP/2');
  assert.deepEqual(entry?._mirrorplane.responseTrailers, [
    { name: 'grpc-status', value: '0' },
    { name: 'grpc-message', value: '' },
  ]);
  const plain = toHar([exchange({ headers: [], body: Buffer.alloc(0) }, { headers: [], body: Buffer.alloc(0) })], '0.0.0');
  assert.equal(plain.log.entries[0]?.request.httpVersion, 'HTTP/1.1');
  assert.equal(plain.log.entries[0]?._mirrorplane.responseTrailers, undefined);
});

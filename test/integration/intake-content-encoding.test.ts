import { test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import * as zlib from 'node:zlib';
import { Redis } from 'ioredis';
import { RedisServer, Stack, freePort, useStack } from '../helpers/index.js';
import { productionKeys } from '@mirrorplane/core';

/**
 * The intake (`POST /production-responses` on the ingress admin port, a real ingress process)
 * fed with bodies whose own Content-Encoding is set: a sender that compresses its uploads.
 */

let redis: RedisServer;
let client: Redis;
let dir: string;

useStack({ dir: 'mp-intake-coding-' }, (s) => {
  redis = s.redis;
  client = s.client();
  dir = s.dir;
});

const codings: [string, (b: Buffer) => Buffer][] = [
  ['gzip', (b) => zlib.gzipSync(b)],
  ['deflate', (b) => zlib.deflateSync(b)],
  ['br', (b) => zlib.brotliCompressSync(b)],
  ['gzip, br', (b) => zlib.brotliCompressSync(zlib.gzipSync(b))],
];

test('intake: a production answer POSTed with its own Content-Encoding is decoded (the new ID learned) or refused naming the coding, never stored as if plain', async () => {
  const config = join(dir, 'mirrorplane.yaml');
  writeFileSync(
    config,
    [
      'idMapping:',
      '  kinds:',
      '    - name: order',
      '      learn:',
      '        - match: { methods: [POST], path: "^/orders$" }',
      '          from: { json: id }',
      '      use:',
      '        - path: "^/orders/(?<id>[^/]+)$"',
      '',
    ].join('\n'),
  );
  const adminPort = await freePort();
  const stack = await Stack.start({
    redis,
    stagingUrl: 'http://127.0.0.1:9',
    workers: 0,
    env: { MIRRORPLANE_CONFIG: config },
    ingressEnv: { ADMIN_PORT: String(adminPort) },
  });
  const keys = productionKeys(stack.env.MIRRORPLANE_PREFIX!);
  const post = (requestId: string, coding: string, body: Buffer) =>
    fetch(`http://127.0.0.1:${adminPort}/production-responses`, {
      method: 'POST',
      headers: {
        'x-mirrorplane-request-id': requestId,
        'x-mirrorplane-status': '201',
        'x-mirrorplane-method': 'POST',
        'x-mirrorplane-path': '/orders',
        'content-type': 'application/json',
        // The upload itself is compressed (HTTP request Content-Encoding, RFC 9110 §8.4).
        'content-encoding': coding,
      },
      body,
    });
  try {
    for (const [coding, encode] of codings) {
      const id = `ord_${coding.replace(/\W/g, '')}`;
      const res = await post(`c-${id}`, coding, encode(Buffer.from(JSON.stringify({ id, item: 'book' }))));
      assert.equal(res.status, 204, `${coding}: ${await res.text()}`);
      assert.equal(await client.get(keys.idmap('order', id)), `?c-${id}`, `${coding}: decoded, so the new ID is pending like any other create`);
      // Stored decoded: readers see the plain JSON production sent.
      assert.equal(await client.hget(keys.response(`c-${id}`), 'b'), JSON.stringify({ id, item: 'book' }));
    }
    const unknown = await post('c-x', 'compress', Buffer.from('x'));
    assert.equal(unknown.status, 415);
    assert.match(await unknown.text(), /content-encoding: cannot decode content-coding "compress"/);
    const corrupt = await post('c-y', 'gzip', Buffer.from('{"id":"ord_y"}'));
    assert.equal(corrupt.status, 400);
    assert.match(await corrupt.text(), /content-encoding: gzip body does not decode/);
    assert.equal(await client.exists(keys.response('c-x'), keys.response('c-y'), keys.idmap('order', 'ord_y')), 0, 'refused answers are not stored');
  } finally {
    await stack.close();
  }
});

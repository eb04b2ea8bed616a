import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as zlib from 'node:zlib';
import { Redis } from 'ioredis';
import { productionKeys } from '@mirrorplane/runtime';
import { RedisServer, Stack, freePort } from '../helpers/index.js';

/**
 * The intake (`POST /production-responses` on the ingress admin port, a real ingress process)
 * fed with bodies whose own Content-Encoding is set: a sender that compresses its uploads.
 */

let redis: RedisServer;
let client: Redis;
let dir: string;

before(async () => {
  redis = await RedisServer.start();
  client = new Redis(redis.url, { maxRetriesPerRequest: 2 });
  dir = mkdtempSync(join(tmpdir(), 'mp-attack14-intake-'));
});

after(async () => {
  client?.disconnect();
  await redis?.close();
  rmSync(dir, { recursive: true, force: true });
});

test('intake: a production answer POSTed with Content-Encoding: gzip is decoded (the new ID learned) or clearly refused, never stored as if plain', async () => {
  const config = join(dir, 'mirrorplane.yaml');
  writeFileSync(config, [
    'idMapping:',
    '  kinds:',
    '    - name: order',
    '      learn:',
    '        - match: { methods: [POST], path: "^/orders$" }',
    '          from: { json: id }',
    '      use:',
    '        - path: "^/orders/(?<id>[^/]+)$"',
    '',
  ].join('\n'));
  const adminPort = await freePort();
  const stack = await Stack.start({ redis, stagingUrl: 'http://127.0.0.1:9', workers: 0, env: { MIRRORPLANE_CONFIG: config }, ingressEnv: { ADMIN_PORT: String(adminPort) } });
  const keys = productionKeys(stack.env.MIRRORPLANE_PREFIX!);
  try {
    const res = await fetch(`http://127.0.0.1:${adminPort}/production-responses`, {
      method: 'POST',
      headers: {
        'x-mirrorplane-request-id': 'gz-1',
        'x-mirrorplane-status': '201',
        'x-mirrorplane-method': 'POST',
        'x-mirrorplane-path': '/orders',
        'content-type': 'application/json',
        // The upload itself is compressed (HTTP request Content-Encoding, RFC 9110 §8.4).
        'content-encoding': 'gzip',
      },
      body: zlib.gzipSync(Buffer.from('{"id":"ord_9","item":"book"}')),
    });
    const text = await res.text();
    if (res.status === 204) {
      assert.equal(await client.get(keys.idmap('order', 'ord_9')), '?gz-1', 'accepted, so the new ID is pending like any other create');
    } else {
      assert.ok(res.status === 415 || res.status === 400, `a clear refusal, got ${res.status} ${text}`);
      assert.match(text, /content-encoding/i);
    }
  } finally {
    await stack.close();
  }
});

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import type { Redis } from 'ioredis';
import { RecordingServer, RedisServer, Stack, waitFor, useStack } from '../helpers/index.js';

/**
 * Encryption at rest means every stored payload: with
 * MIRRORPLANE_DATA_KEY set, a request whose path, an ordinary header and body carry personal
 * data, refused by staging (whose answer quotes the request) until it sits in the failed set.
 * SCAN every key of the deployment: none of the request's content may be in clear.
 */

let redis: RedisServer;
useStack({}, (s) => {
  redis = s.redis;
});

async function readDeployment(client: Redis, prefix: string): Promise<{ key: string; text: string }[]> {
  const keys: string[] = [];
  let cursor = '0';
  do {
    const [next, batch] = await client.scan(cursor, 'MATCH', `*${prefix}*`, 'COUNT', 1000);
    cursor = next;
    keys.push(...batch);
  } while (cursor !== '0');
  const out: { key: string; text: string }[] = [];
  for (const key of keys) {
    const type = await client.type(key);
    let parts: Buffer[] = [];
    if (type === 'string') parts = [(await client.getBuffer(key)) ?? Buffer.alloc(0)];
    else if (type === 'hash') parts = Object.entries(await client.hgetallBuffer(key)).flatMap(([f, v]) => [Buffer.from(f), v]);
    else if (type === 'list') parts = await client.lrangeBuffer(key, 0, -1);
    else if (type === 'set') parts = await client.smembersBuffer(key);
    else if (type === 'zset') parts = await client.zrangeBuffer(key, 0, -1);
    else if (type === 'stream') {
      const entries = await (client as unknown as { xrangeBuffer(...a: string[]): Promise<[Buffer, Buffer[]][]> }).xrangeBuffer(key, '-', '+');
      parts = entries.flatMap(([id, f]) => [id, ...f]);
    } else if (type !== 'none') assert.fail(`unknown type ${type} for ${key}`);
    out.push({ key, text: key + '\n' + Buffer.concat(parts).toString('latin1') });
  }
  return out;
}

test("with MIRRORPLANE_DATA_KEY, a failed entry's path, headers, body and staging's answer are nowhere in clear", async () => {
  const M = { path: 'MKPATHa12x', header: 'MKHEADERa12x', body: 'MKBODYa12x' };
  // Staging refuses, quoting the request in its answer (as many error pages do).
  const staging = await RecordingServer.start((req, res) => void res.writeHead(422, { 'content-type': 'text/plain' }).end(`no such user in ${req.url}`));
  const dataKey = `k1:${randomBytes(32).toString('base64')}`;
  const stack = await Stack.start({
    redis,
    stagingUrl: staging.url,
    env: { MIRRORPLANE_DATA_KEY: dataKey, REPLAY_ATTEMPTS: '2', REPLAY_BACKOFF_MS: '100', RETRY_STATUSES: '422,5xx' },
  });
  const client = redis.client();
  try {
    const res = await fetch(`http://127.0.0.1:${stack.ingressPort}/users/${M.path}/profile`, {
      method: 'POST',
      body: `{"email":"${M.body}"}`,
      headers: { 'x-customer': M.header },
    });
    assert.equal(res.status, 200);
    await waitFor('1 failed', async () => (await stack.status()).failed === 1, 60_000);
    assert.ok(
      staging.received.some((r) => r.url.includes(M.path)),
      'staging got the request',
    );
    const prefix = stack.env.MIRRORPLANE_PREFIX as string;
    const stored = await readDeployment(client, prefix);
    const leaks: string[] = [];
    for (const { key, text } of stored) {
      for (const [what, m] of Object.entries(M)) {
        if (text.includes(m) || text.includes(Buffer.from(m).toString('base64').slice(0, 12))) {
          const at = text.indexOf(m);
          leaks.push(`${what} in ${key}: …${text.slice(Math.max(0, at - 80), at + 40).replace(/[^\x20-\x7e]/g, '.')}…`);
        }
      }
    }
    assert.deepEqual(leaks, [], 'request content in clear in Redis with a data key set');
  } finally {
    client.disconnect();
    await stack.close();
    await staging.close();
  }
});

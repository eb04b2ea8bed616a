import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { MirrorplaneProcess, RawRecordingServer, RedisServer, Stack, TestCerts, requestHead, sendRaw, waitFor } from '../helpers/index.js';

/**
 * Staging over HTTPS with a private CA and a client certificate (mutual TLS), through real
 * processes: the bytes staging receives are the bytes the ingress received; without the CA
 * nothing is sent and the entry fails with the certificate named; `insecure: true` works and
 * is logged at start; an unreadable file stops the worker naming the origin's key.
 */

let certs: TestCerts;
let redis: RedisServer;
/** Requires a client certificate from the test CA. */
let staging: RawRecordingServer;

before(async () => {
  certs = TestCerts.create();
  redis = await RedisServer.start();
  staging = await RawRecordingServer.start({
    cert: certs.read(certs.server.cert),
    key: certs.read(certs.server.key),
    ca: certs.read(certs.ca),
    requestCert: true,
    rejectUnauthorized: true,
  });
});

after(async () => {
  await staging?.close();
  await redis?.close();
  certs?.remove();
});

function configFile(name: string, origin: Record<string, unknown>): string {
  const path = join(certs.dir, `${name}.json`);
  writeFileSync(path, JSON.stringify({ origins: { default: origin } }));
  return path;
}

/** Sends one request through a stack whose only origin is `origin`; returns the stack (caller closes). */
async function stackWith(name: string, origin: Record<string, unknown>, env: Record<string, string> = {}): Promise<Stack> {
  return Stack.start({ redis, stagingUrl: '', env: { MIRRORPLANE_CONFIG: configFile(name, origin), STAGING_URL: '', ...env } });
}

test('staging over mutual TLS with a private CA receives the bytes the ingress received', async () => {
  const stack = await stackWith('good', { url: staging.url, ca: 'ca.pem', cert: 'client.pem', key: 'client.key', servername: 'localhost' });
  try {
    const body = Buffer.from([0x00, 0xff, 0x0d, 0x0a, 0x30, 0x0d, 0x0a, 0x0d, 0x0a]);
    const headers = ['Host', 'shop.example', 'X-Request-ID', 'stls-1', 'x-MiXeD', 'a', 'X-Dup', '1', 'x-dup', '2', 'X-Sp', ' lead  mid '];
    const res = await sendRaw(stack.ingressPort, requestHead('PATCH', '/p/%7E?a=1&a=2', headers, body.length), body);
    assert.equal(res.status, 200);
    const got = await waitFor('the replay over TLS', () => staging.received.find((r) => r.rawHeaders.includes('stls-1')), 60_000);
    assert.equal(got.method, 'PATCH');
    assert.equal(got.target, '/p/%7E?a=1&a=2');
    assert.ok(got.body.equals(body), 'body byte for byte');
    // Names in received case and order, duplicates kept (the worker only adds its own fields).
    const names = got.rawHeaders.filter((_, i) => i % 2 === 0);
    const mirrored = names.filter((n) => ['x-request-id', 'x-mixed', 'x-dup', 'x-sp'].includes(n.toLowerCase()));
    assert.deepEqual(mirrored, ['X-Request-ID', 'x-MiXeD', 'X-Dup', 'x-dup', 'X-Sp']);
    assert.equal(got.rawHeaders[got.rawHeaders.indexOf('X-Sp') + 1], 'lead  mid');
  } finally {
    await stack.close();
  }
});

test('without the private CA nothing is sent, and the failed entry names the certificate problem', async () => {
  const before = staging.received.length;
  const stack = await stackWith('no-ca', { url: staging.url, cert: 'client.pem', key: 'client.key' }, { REPLAY_ATTEMPTS: '2', REPLAY_BACKOFF_MS: '50' });
  try {
    const res = await sendRaw(stack.ingressPort, requestHead('GET', '/untrusted', ['Host', 'x', 'X-Request-ID', 'stls-untrusted']));
    assert.equal(res.status, 200);
    await waitFor('the failed entry', async () => (await stack.status()).failed === 1, 60_000);
    const list = await stack.cli(['failed', 'list', '--json']);
    const [row] = JSON.parse(list.stdout) as { lastError: string }[];
    assert.match(row!.lastError, /certificate|UNABLE_TO_VERIFY|self.signed/i);
    // The cause and the setting that fixes it, in both views: nothing of it is a secret.
    for (const text of [row!.lastError, (await stack.cli(['failed', 'list'])).stdout]) {
      assert.match(text, /: (unable to verify the first certificate|self-signed certificate in certificate chain): /, text);
      assert.match(text, /origins\.default\.ca/, text);
      assert.ok(!text.includes('[redacted]'), text);
    }
    assert.equal(staging.received.length, before, 'staging received nothing');
  } finally {
    await stack.close();
  }
});

test('insecure: true is logged at start and replays without verification', async () => {
  const stack = await stackWith('insecure', { url: staging.url, cert: 'client.pem', key: 'client.key', insecure: true });
  try {
    const log = await stack.workers[0]!.waitForLog('staging origin with insecure: true: its TLS certificate is NOT verified');
    assert.equal(log.origin, 'default');
    const res = await sendRaw(stack.ingressPort, requestHead('GET', '/insecure', ['Host', 'x', 'X-Request-ID', 'stls-insecure']));
    assert.equal(res.status, 200);
    await waitFor('the insecure replay', () => staging.received.find((r) => r.rawHeaders.includes('stls-insecure')), 60_000);
    // `mirrorplane replay --staging` sends directly: it warns too.
    const replay = await stack.cli(['replay', '--staging', staging.url, '--from', '-1m']);
    assert.match(replay.stderr, /staging origin default has insecure: true: its TLS certificate is NOT verified/);
  } finally {
    await stack.close();
  }
});

test('an origin TLS file that cannot be read stops the worker naming its key; contradictions are config errors', async () => {
  const env = { REDIS_URL: redis.url, ADMIN_PORT: '0', MIRRORPLANE_PREFIX: 'stls-bad' };
  const missing = new MirrorplaneProcess(['worker'], { ...env, MIRRORPLANE_CONFIG: configFile('missing', { url: staging.url, ca: 'nope.pem' }) });
  assert.equal(await missing.exited, 2, missing.stderr);
  assert.match(missing.stderr, /MP_ERR_TLS_FILE: .*missing\.json: origins\.default\.ca: cannot read .*nope\.pem.*ENOENT/);
  const contradiction = new MirrorplaneProcess(['worker'], {
    ...env,
    MIRRORPLANE_CONFIG: configFile('contradiction', { url: staging.url.replace('https:', 'http:'), ca: 'ca.pem', insecure: true }),
  });
  assert.equal(await contradiction.exited, 2);
  assert.match(contradiction.stderr, /origins\.default\.url: TLS settings need an https:\/\/ URL/);
  assert.match(contradiction.stderr, /origins\.default\.insecure: contradicts ca\/servername/);
});

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  MirrorplaneProcess,
  RecordingServer,
  RedisServer,
  Stack,
  TestCerts,
  freePort,
  header,
  requestHead,
  runCli,
  sendRaw,
  waitFor,
  type CertFiles,
} from '../helpers/index.js';

/**
 * rediss:// against real redis-servers with TLS (`--tls-port`, `--tls-auth-clients yes`): the
 * whole path (ingress → Redis → worker → staging) over TLS with a private CA and a client
 * certificate, and every bad handshake ending in MP_ERR_REDIS_TLS naming the setting to fix,
 * with a non-zero exit, for an operator command and for a role alike.
 */

let certs: TestCerts;
/** Redis with a good certificate (localhost, 127.0.0.1) that requires client certificates. */
let good: RedisServer;
let goodTls: number;
let expired: RedisServer;
let expiredTls: number;
let wrongName: RedisServer;
let wrongNameTls: number;

async function tlsRedis(server: CertFiles): Promise<[RedisServer, number]> {
  const port = await freePort();
  const redis = await RedisServer.start({
    args: [
      '--tls-port',
      String(port),
      '--tls-cert-file',
      server.cert,
      '--tls-key-file',
      server.key,
      '--tls-ca-cert-file',
      certs.ca,
      '--tls-auth-clients',
      'yes',
    ],
  });
  return [redis, port];
}

before(async () => {
  certs = TestCerts.create();
  [good, goodTls] = await tlsRedis(certs.server);
  [expired, expiredTls] = await tlsRedis(certs.expiredServer);
  [wrongName, wrongNameTls] = await tlsRedis(certs.wrongNameServer);
});

after(async () => {
  await Promise.all([good?.close(), expired?.close(), wrongName?.close()]);
  certs?.remove();
});

const clientEnv = () => ({ REDIS_TLS_CA: certs.ca, REDIS_TLS_CERT: certs.client.cert, REDIS_TLS_KEY: certs.client.key });

async function status(env: Record<string, string>) {
  return runCli(['status', '--json'], { MIRRORPLANE_PREFIX: 'tls', REDIS_CONNECT_TIMEOUT_MS: '5000', ...env });
}

test('rediss:// with the private CA and a client certificate works', async () => {
  const result = await status({ REDIS_URL: `rediss://localhost:${goodTls}`, ...clientEnv() });
  assert.equal(result.code, 0, result.stderr);
  assert.equal(JSON.parse(result.stdout).backlog, 0);
});

test('each bad handshake is MP_ERR_REDIS_TLS naming the setting, exit 2, no key contents', async () => {
  const cases: [string, Record<string, string>, RegExp][] = [
    [
      'untrusted server (no REDIS_TLS_CA)',
      { REDIS_URL: `rediss://localhost:${goodTls}`, REDIS_TLS_CERT: certs.client.cert, REDIS_TLS_KEY: certs.client.key },
      /MP_ERR_REDIS_TLS.*REDIS_TLS_CA/,
    ],
    ['CA of someone else', { REDIS_URL: `rediss://localhost:${goodTls}`, ...clientEnv(), REDIS_TLS_CA: certs.otherCa }, /MP_ERR_REDIS_TLS.*REDIS_TLS_CA/],
    ['no client certificate', { REDIS_URL: `rediss://localhost:${goodTls}`, REDIS_TLS_CA: certs.ca }, /MP_ERR_REDIS_TLS.*REDIS_TLS_CERT/],
    [
      'client certificate from another CA',
      { REDIS_URL: `rediss://localhost:${goodTls}`, REDIS_TLS_CA: certs.ca, REDIS_TLS_CERT: certs.foreignClient.cert, REDIS_TLS_KEY: certs.foreignClient.key },
      /MP_ERR_REDIS_TLS.*REDIS_TLS_CERT/,
    ],
    ['expired server certificate', { REDIS_URL: `rediss://localhost:${expiredTls}`, ...clientEnv() }, /MP_ERR_REDIS_TLS.*expired/],
    ['certificate for another name', { REDIS_URL: `rediss://localhost:${wrongNameTls}`, ...clientEnv() }, /MP_ERR_REDIS_TLS.*REDIS_TLS_SERVERNAME/],
    [
      'server name that the certificate lacks',
      { REDIS_URL: `rediss://localhost:${goodTls}`, ...clientEnv(), REDIS_TLS_SERVERNAME: 'other.example' },
      /REDIS_TLS_SERVERNAME/,
    ],
    [
      'expired client certificate',
      { REDIS_URL: `rediss://localhost:${goodTls}`, ...clientEnv(), REDIS_TLS_CERT: certs.expiredServer.cert, REDIS_TLS_KEY: certs.expiredServer.key },
      /MP_ERR_TLS_FILE.*REDIS_TLS_CERT.*expired/,
    ],
    [
      'missing CA file',
      { REDIS_URL: `rediss://localhost:${goodTls}`, ...clientEnv(), REDIS_TLS_CA: join(certs.dir, 'nope.pem') },
      /MP_ERR_TLS_FILE.*REDIS_TLS_CA.*ENOENT/,
    ],
    ['TLS settings with redis://', { REDIS_URL: `redis://127.0.0.1:${good.port}`, REDIS_TLS_CA: certs.ca }, /REDIS_TLS_CA: needs a TLS REDIS_URL/],
  ];
  const key = readFileSync(certs.client.key, 'latin1').split('\n')[1]!;
  for (const [name, env, expected] of cases) {
    const started = Date.now();
    const result = await status(env);
    assert.equal(result.code, 2, `${name}: exit 2 (${result.stderr})`);
    assert.match(result.stderr, expected, name);
    assert.ok(!result.stderr.includes(key) && !result.stderr.includes('BEGIN'), `${name}: no PEM contents`);
    assert.ok(Date.now() - started < 4_500 + 3_000, `${name}: fails at the handshake, not at the 5 s deadline`);
  }
});

test('a name the certificate carries, given in REDIS_TLS_SERVERNAME, makes the wrong-name server reachable', async () => {
  const result = await status({ REDIS_URL: `rediss://127.0.0.1:${wrongNameTls}`, ...clientEnv(), REDIS_TLS_SERVERNAME: 'wrong.example' });
  assert.equal(result.code, 0, result.stderr);
});

test('ingress and worker over rediss://: staging receives the bytes sent', async () => {
  const staging = await RecordingServer.start();
  const stack = await Stack.start({ redis: good, stagingUrl: staging.url, env: { REDIS_URL: `rediss://localhost:${goodTls}`, ...clientEnv() } });
  try {
    const body = Buffer.from([0x00, 0xc3, 0x28, 0x0d, 0x0a, 0x41]);
    const res = await sendRaw(stack.ingressPort, requestHead('PUT', '/over/rediss', ['Host', 'h', 'X-Request-ID', 'rediss-1'], body.length), body);
    assert.equal(res.status, 200);
    const got = await waitFor('the replay', () => staging.received.find((r) => header(r.rawHeaders, 'x-request-id') === 'rediss-1'), 60_000);
    assert.ok(got.body.equals(body));
    // The entry went through the TLS port: the plain port's Redis is the same server.
    const client = good.client();
    try {
      assert.ok(Number((await client.info('stats')).match(/total_connections_received:(\d+)/)?.[1]) > 0);
    } finally {
      client.disconnect();
    }
  } finally {
    await stack.close();
    await staging.close();
  }
});

test('an ingress whose Redis certificate is untrusted exits non-zero naming REDIS_TLS_CA', async () => {
  const ingress = new MirrorplaneProcess(['ingress'], {
    REDIS_URL: `rediss://localhost:${goodTls}`,
    REDIS_TLS_CERT: certs.client.cert,
    REDIS_TLS_KEY: certs.client.key,
    REDIS_TLS_CA: certs.otherCa,
    INGRESS_PORT: '0',
    ADMIN_PORT: '0',
    MIRRORPLANE_PREFIX: 'tls-ingress',
  });
  const code = await ingress.exited;
  assert.equal(code, 2, ingress.stderr);
  assert.match(ingress.stderr, /MP_ERR_REDIS_TLS.*REDIS_TLS_CA/);
});

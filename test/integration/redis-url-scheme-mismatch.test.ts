import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { RedisServer, TestCerts, freePort, runCli } from '../helpers/index.js';

/**
 * Issue #20, Redis hop: a URL whose scheme does not match the port's protocol, in both
 * directions and for single, Sentinel and Cluster URLs, and the password of a rediss:// URL in
 * every failure message. Promised: a clear error naming the setting (REDIS_URL, rediss:// or
 * redis://), exit non-zero, never a hang until the deadline; no secret in clear.
 */

let certs: TestCerts;
let redis: RedisServer;
let tlsPort: number;
const PASSWORD = 'Sup3rSecretPw0rd';

before(async () => {
  certs = TestCerts.create();
  tlsPort = await freePort();
  redis = await RedisServer.start({
    args: [
      '--tls-port', String(tlsPort), '--tls-cert-file', certs.server.cert, '--tls-key-file', certs.server.key,
      '--tls-ca-cert-file', certs.ca, '--tls-auth-clients', 'yes',
    ],
  }); // prettier-ignore
});

after(async () => {
  await redis?.close();
  certs?.remove();
});

const clientEnv = () => ({ REDIS_TLS_CA: certs.ca, REDIS_TLS_CERT: certs.client.cert, REDIS_TLS_KEY: certs.client.key });

async function status(env: Record<string, string>) {
  const started = Date.now();
  const result = await runCli(['status', '--json'], { MIRRORPLANE_PREFIX: 'atk20', REDIS_CONNECT_TIMEOUT_MS: '8000', ...env });
  return { ...result, ms: Date.now() - started };
}

for (const [kind, url] of [
  ['single', (port: number) => `redis://127.0.0.1:${port}`],
  ['sentinel', (port: number) => `redis+sentinel://127.0.0.1:${port}/mymaster`],
  ['cluster', (port: number) => `redis+cluster://127.0.0.1:${port}`],
] as const) {
  test(`${kind}: a plain URL pointed at a TLS-only port: a clear error that says rediss:// and REDIS_URL, exit non-zero, before the deadline`, async () => {
    const result = await status({ REDIS_URL: url(tlsPort) });
    assert.notEqual(result.code, 0, 'exits non-zero');
    assert.match(result.stderr, /speaks TLS/i, `the message says the port speaks TLS: ${result.stderr}`);
    assert.match(result.stderr, /rediss:\/\/.*REDIS_URL/, `names the setting to change: ${result.stderr}`);
    assert.ok(result.ms < 8000, `fails at once, not at the 8 s deadline (took ${result.ms} ms)`);
  });
}

test('rediss:// pointed at a plain port: a clear error, exit non-zero, before the deadline', async () => {
  const result = await status({ REDIS_URL: `rediss://localhost:${redis.port}`, ...clientEnv() });
  assert.notEqual(result.code, 0, 'exits non-zero');
  assert.match(result.stderr, /plain text|redis:\/\//i, result.stderr);
  assert.ok(result.ms < 8000, `took ${result.ms} ms`);
});

test('the password of a rediss:// URL never appears in any TLS failure', async () => {
  const cases: Record<string, Record<string, string>> = {
    'untrusted server': { REDIS_URL: `rediss://default:${PASSWORD}@localhost:${tlsPort}`, REDIS_TLS_CERT: certs.client.cert, REDIS_TLS_KEY: certs.client.key },
    'wrong name': { REDIS_URL: `rediss://default:${PASSWORD}@localhost:${tlsPort}`, ...clientEnv(), REDIS_TLS_SERVERNAME: 'other.example' },
    'no client cert': { REDIS_URL: `rediss://default:${PASSWORD}@localhost:${tlsPort}`, REDIS_TLS_CA: certs.ca },
    'plain port': { REDIS_URL: `rediss://default:${PASSWORD}@localhost:${redis.port}`, ...clientEnv() },
    'plain url to tls port': { REDIS_URL: `redis://default:${PASSWORD}@127.0.0.1:${tlsPort}` },
    'sentinel over tls': { REDIS_URL: `rediss+sentinel://default:${PASSWORD}@localhost:${tlsPort}/mymaster`, REDIS_TLS_CA: certs.ca },
    'cluster over tls': { REDIS_URL: `rediss+cluster://default:${PASSWORD}@localhost:${tlsPort}`, REDIS_TLS_CA: certs.ca },
  };
  for (const [name, env] of Object.entries(cases)) {
    const result = await status(env);
    assert.notEqual(result.code, 0, `${name}: exits non-zero`);
    assert.ok(!`${result.stdout}${result.stderr}`.includes(PASSWORD), `${name}: password in output: ${result.stderr}`);
  }
});

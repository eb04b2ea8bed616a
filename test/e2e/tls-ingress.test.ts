import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { copyFileSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { request as httpsRequest } from 'node:https';
import {
  MirrorplaneProcess,
  RecordingServer,
  RedisServer,
  Stack,
  TestCerts,
  freePort,
  header,
  requestHead,
  sendRaw,
  sendRawTls,
  waitFor,
} from '../helpers/index.js';

/**
 * The traffic port and the admin port over TLS and mutual TLS, with real processes: only a
 * client certificate from the CA and on the allow-list gets a request stored; every other
 * client is refused at the handshake and nothing reaches Redis or staging; the bytes staging
 * receives are those sent over TLS; a renewed certificate is served without a restart, and a
 * broken one is logged and ignored.
 */

let certs: TestCerts;
let redis: RedisServer;
let staging: RecordingServer;
let stack: Stack;
let adminPort: number;

before(async () => {
  certs = TestCerts.create();
  redis = await RedisServer.start();
  staging = await RecordingServer.start();
  adminPort = await freePort();
  stack = await Stack.start({
    redis,
    stagingUrl: staging.url,
    workers: 1,
    ingressEnv: {
      INGRESS_TLS_CERT: certs.server.cert,
      INGRESS_TLS_KEY: certs.server.key,
      INGRESS_TLS_CA: certs.ca,
      INGRESS_TLS_ALLOW: 'spiffe://mirrorplane.test/mirror',
      ADMIN_PORT: String(adminPort),
      ADMIN_TLS_CERT: certs.server.cert,
      ADMIN_TLS_KEY: certs.server.key,
    },
  });
});

after(async () => {
  await stack?.close();
  await staging?.close();
  await redis?.close();
  certs?.remove();
});

const client = () => ({ ca: certs.read(certs.ca), cert: certs.read(certs.client.cert), key: certs.read(certs.client.key) });

/** GET over HTTPS on the admin port, trusting the test CA. */
function adminGet(path: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = httpsRequest({ host: '127.0.0.1', port: adminPort, path, servername: 'localhost', ca: certs.read(certs.ca) }, (res) => {
      let body = '';
      res.on('data', (c: Buffer) => (body += c.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

test('a client certificate on the allow-list gets its request stored and replayed byte for byte', async () => {
  const body = Buffer.from([0, 1, 2, 0xff, 0xfe, 0x0d, 0x0a, 0x7f, ...Buffer.from('über')]);
  const outcome = await sendRawTls(
    stack.ingressPort,
    requestHead('POST', '/tls/ok?q=1', ['Host', 'shop.example', 'X-Request-ID', 'tls-ok', 'X-Odd', ' two  spaces '], body.length),
    body,
    client(),
  );
  assert.ok(outcome.ok, outcome.ok ? '' : outcome.error);
  assert.equal(outcome.response.status, 200);
  assert.equal(outcome.peer.subject?.CN, 'localhost');
  const got = await waitFor('the replay', () => staging.received.find((r) => header(r.rawHeaders, 'x-request-id') === 'tls-ok'), 60_000);
  assert.equal(got.method, 'POST');
  assert.equal(got.url, '/tls/ok?q=1');
  assert.ok(got.body.equals(body), 'staging received the exact body sent over TLS');
  assert.equal(header(got.rawHeaders, 'x-odd'), 'two  spaces');
});

test('no certificate, a certificate from another CA, a name not on the allow-list, clear text: refused, nothing stored', async () => {
  const head = (id: string) => requestHead('POST', '/tls/refused', ['Host', 'x', 'X-Request-ID', id], 4);
  const body = Buffer.from('nope');
  const cases = {
    none: { ca: certs.read(certs.ca) },
    foreign: { ca: certs.read(certs.ca), cert: certs.read(certs.foreignClient.cert), key: certs.read(certs.foreignClient.key) },
    intruder: { ca: certs.read(certs.ca), cert: certs.read(certs.intruder.cert), key: certs.read(certs.intruder.key) },
  };
  for (const [id, options] of Object.entries(cases)) {
    const outcome = await sendRawTls(stack.ingressPort, head(`refused-${id}`), body, options);
    assert.equal(outcome.ok, false, `${id}: no HTTP answer, the connection is refused`);
  }
  // Clear text on the TLS port is not HTTP to it: no answer, nothing read as a request.
  await assert.rejects(sendRaw(stack.ingressPort, head('refused-clear'), body));
  // A request accepted after the refusals proves the refused ones would have arrived by now.
  const outcome = await sendRawTls(stack.ingressPort, requestHead('GET', '/tls/after', ['Host', 'x', 'X-Request-ID', 'tls-after']), undefined, client());
  assert.ok(outcome.ok && outcome.response.status === 200);
  await waitFor('the later replay', () => staging.received.find((r) => header(r.rawHeaders, 'x-request-id') === 'tls-after'), 60_000);
  assert.deepEqual(
    staging.received.filter((r) => /^refused-/.test(header(r.rawHeaders, 'x-request-id') ?? '')),
    [],
    'nothing refused reached staging',
  );
  const status = await stack.status();
  assert.equal(status.backlog + status.pending + status.retrying + status.failed, 0, 'nothing refused is stored');
  const metrics = await adminGet('/metrics');
  assert.equal(metrics.status, 200, 'the admin port answers over HTTPS');
  const handshake = Number(/mirrorplane_ingress_tls_refused_total\{reason="handshake"\} (\d+)/.exec(metrics.body)?.[1]);
  const notAllowed = Number(/mirrorplane_ingress_tls_refused_total\{reason="not_allowed"\} (\d+)/.exec(metrics.body)?.[1]);
  assert.ok(handshake >= 2, `handshake refusals counted (${handshake})`);
  assert.equal(notAllowed, 1, 'the intruder was refused by the allow-list');
  assert.equal(/mirrorplane_ingress_requests_received_total (\d+)/.exec(metrics.body)?.[1], '2', 'refused connections are no requests');
});

test('the admin port speaks HTTPS only', async () => {
  assert.equal((await adminGet('/healthz')).status, 200);
  await assert.rejects(sendRaw(adminPort, requestHead('GET', '/healthz', ['Host', 'x'])));
});

test('a renewed certificate is served without a restart; a broken one is logged and the last good one kept', async () => {
  const cert = join(certs.dir, 'live.pem');
  const key = join(certs.dir, 'live.key');
  copyFileSync(certs.server.cert, cert);
  copyFileSync(certs.server.key, key);
  const port = await freePort();
  const ingress = new MirrorplaneProcess(['ingress'], {
    ...stack.env,
    INGRESS_PORT: String(port),
    INGRESS_HOST: '127.0.0.1',
    INGRESS_TLS_CERT: cert,
    INGRESS_TLS_KEY: key,
    TLS_RELOAD_MS: '100',
  });
  try {
    await ingress.waitForLog('ingress listening');
    const serial = async () => {
      const outcome = await sendRawTls(port, requestHead('GET', '/reload', ['Host', 'x']), undefined, { ca: certs.read(certs.ca) });
      assert.ok(outcome.ok, outcome.ok ? '' : outcome.error);
      return outcome.peer.serialNumber;
    };
    const first = await serial();
    const renewedSerial = readSerial(certs.server2.cert);
    assert.notEqual(first, renewedSerial);
    // The key first, then the certificate: in between the pair does not match and must be kept out.
    copyFileSync(certs.server2.key, key);
    copyFileSync(certs.server2.cert, cert);
    await waitFor('the renewed certificate', async () => (await serial()) === renewedSerial, 30_000);
    // A broken pair (a key of another certificate): logged with its code, the renewed one stays.
    const reloadErrors = () => ingress.logs().filter((l) => l.code === 'MP_ERR_TLS_FILE');
    const before = reloadErrors().length;
    copyFileSync(certs.intruder.key, key);
    const logged = await waitFor('the reload error', () => reloadErrors()[before], 30_000);
    assert.match(String(logged.err), /INGRESS_TLS_KEY/);
    assert.ok(!ingress.stdout.includes(readFileSync(certs.intruder.key, 'latin1').split('\n')[1]!), 'key contents never logged');
    assert.equal(await serial(), renewedSerial);
  } finally {
    await ingress.stop('SIGKILL');
  }
});

test('an unusable TLS file stops the start with the setting named, never its contents', async () => {
  const cases: [Record<string, string>, RegExp][] = [
    [{ INGRESS_TLS_CERT: join(certs.dir, 'missing.pem'), INGRESS_TLS_KEY: certs.server.key }, /INGRESS_TLS_CERT: cannot read .*missing\.pem.*ENOENT/],
    [{ INGRESS_TLS_CERT: certs.server.cert, INGRESS_TLS_KEY: certs.intruder.key }, /INGRESS_TLS_KEY: .* is not the PEM private key of INGRESS_TLS_CERT/],
    [{ INGRESS_TLS_CERT: certs.server.key, INGRESS_TLS_KEY: certs.server.key }, /INGRESS_TLS_CERT: .* is not a PEM certificate/],
    [{ INGRESS_TLS_CERT: certs.server.cert }, /INGRESS_TLS_KEY: required with INGRESS_TLS_CERT/],
    [{ INGRESS_TLS_ALLOW: 'x' }, /INGRESS_TLS_CA: required with INGRESS_TLS_ALLOW/],
  ];
  for (const [env, expected] of cases) {
    const ingress = new MirrorplaneProcess(['ingress'], { ...stack.env, INGRESS_PORT: '0', ADMIN_PORT: '0', ...env });
    const code = await ingress.exited;
    assert.notEqual(code, 0, `${JSON.stringify(env)} exits non-zero`);
    assert.match(ingress.stderr, expected);
    assert.ok(!ingress.stderr.includes('BEGIN'), 'no PEM contents in the message');
  }
});

function readSerial(path: string): string {
  return new X509Certificate(readFileSync(path)).serialNumber;
}

test('the dashboard serves HTTPS and, with ADMIN_TLS_CA, only to a client certificate from that CA', async () => {
  const port = await freePort();
  const dashboard = new MirrorplaneProcess(['dashboard', '--port', String(port)], {
    REDIS_URL: stack.env.REDIS_URL!,
    MIRRORPLANE_PREFIX: stack.env.MIRRORPLANE_PREFIX!,
    ADMIN_TLS_CERT: certs.server.cert,
    ADMIN_TLS_KEY: certs.server.key,
    ADMIN_TLS_CA: certs.ca,
  });
  try {
    const log = await dashboard.waitForLog('dashboard listening');
    assert.match(String(log.url), /^https:\/\/127\.0\.0\.1:/);
    const get = requestHead('GET', '/api/status', ['Host', `127.0.0.1:${port}`]);
    const withCert = await sendRawTls(port, get, undefined, client());
    assert.ok(withCert.ok && withCert.response.status === 200, withCert.ok ? withCert.response.head : withCert.error);
    const without = await sendRawTls(port, get, undefined, { ca: certs.read(certs.ca) });
    assert.equal(without.ok, false, 'no client certificate: refused');
  } finally {
    await dashboard.stop('SIGKILL');
  }
});

test('INGRESS_PROCESSES > 1: every process serves TLS on the shared port', async () => {
  const port = await freePort();
  const ingress = new MirrorplaneProcess(['ingress'], {
    ...stack.env,
    INGRESS_PORT: String(port),
    INGRESS_HOST: '127.0.0.1',
    INGRESS_PROCESSES: '2',
    ADMIN_PORT: '0',
    INGRESS_TLS_CERT: certs.server.cert,
    INGRESS_TLS_KEY: certs.server.key,
  });
  try {
    await waitFor('both processes listening', () => ingress.logs().filter((l) => l.msg === 'ingress listening').length === 2, 60_000);
    for (let i = 0; i < 6; i++) {
      const outcome = await sendRawTls(port, requestHead('GET', `/cluster/${i}`, ['Host', 'x', 'X-Request-ID', `tls-cluster-${i}`]), undefined, {
        ca: certs.read(certs.ca),
      });
      assert.ok(outcome.ok && outcome.response.status === 200, outcome.ok ? outcome.response.head : outcome.error);
    }
    await sendRaw(port, requestHead('GET', '/clear', ['Host', 'x'])).then(
      () => assert.fail('clear text answered on a TLS port'),
      () => undefined,
    );
  } finally {
    await ingress.stop('SIGKILL');
  }
});

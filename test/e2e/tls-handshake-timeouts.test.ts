import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import { Socket, connect as netConnect } from 'node:net';
import { join } from 'node:path';
import { MirrorplaneProcess, RecordingServer, RedisServer, Stack, TestCerts, freePort, requestHead, sendRawTls, waitFor } from '../helpers/index.js';

/**
 * Issue #20, connections that never finish their TLS handshake: closed by the listener within
 * the handshake bound and counted, so they cannot hold MAX_CONNECTIONS slots (traffic port),
 * nor keep a process from exiting on SIGTERM (dashboard; the traffic and admin ports are in
 * tls-ingress-lifecycle.test.ts).
 */

const ALLOWED = 'spiffe://mirrorplane.test/mirror';
let certs: TestCerts;
let redis: RedisServer;
let staging: RecordingServer;
let stack: Stack;
let adminPort: number;
/** Extra certificates made by this file, in certs.dir. */
const extra: Record<string, { cert: string; key: string }> = {};

function openssl(args: string[], cwd: string): void {
  execFileSync('openssl', args, { cwd, stdio: ['ignore', 'ignore', 'pipe'] });
}

/**
 * A certificate signed by `ca` (`openssl ca`, so dates can be in the past or the future):
 * `ext` are the extension lines, `alt` the [alt] section lines.
 */
function sign(
  name: string,
  ca: { cert: string; key: string },
  subject: string,
  ext: string[],
  alt: string[] = [],
  opts: { start?: string; end?: string; keyArgs?: string[] } = {},
): { cert: string; key: string } {
  const dir = certs.dir;
  const key = join(dir, `atk-${name}.key`);
  const csr = join(dir, `atk-${name}.csr`);
  const cert = join(dir, `atk-${name}.pem`);
  openssl(
    [
      'req',
      '-new',
      '-newkey',
      ...(opts.keyArgs ?? ['ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1']),
      '-nodes',
      '-keyout',
      key,
      '-out',
      csr,
      '-subj',
      subject,
    ],
    dir,
  );
  const cnf = join(dir, `atk-${name}.cnf`);
  writeFileSync(join(dir, `atk-${name}-index.txt`), '');
  writeFileSync(join(dir, `atk-${name}-serial`), `${(4096 + Object.keys(extra).length).toString(16).padStart(4, '0')}\n`);
  writeFileSync(
    cnf,
    [
      '[ca]', 'default_ca = d', '[d]', `database = ${join(dir, `atk-${name}-index.txt`)}`, `new_certs_dir = ${dir}`,
      `serial = ${join(dir, `atk-${name}-serial`)}`, 'default_md = sha256', 'policy = p', 'x509_extensions = e', 'unique_subject = no',
      '[p]', 'commonName = optional', '[e]', ...ext, ...(alt.length ? ['subjectAltName = @alt', '[alt]', ...alt] : []), '',
    ].join('\n'),
  ); // prettier-ignore
  openssl(
    ['ca', '-batch', '-notext', '-config', cnf, '-cert', ca.cert, '-keyfile', ca.key, '-in', csr, '-out', cert,
      '-startdate', opts.start ?? '20200101000000Z', '-enddate', opts.end ?? '20991231000000Z'],
    dir,
  ); // prettier-ignore
  extra[name] = { cert, key };
  return { cert, key };
}

const caPair = () => ({ cert: certs.ca, key: join(certs.dir, 'ca.key') });
const CLIENT = ['extendedKeyUsage = clientAuth', 'basicConstraints = CA:FALSE'];

before(async () => {
  certs = TestCerts.create();
  const ca = caPair();
  sign('dns-inject', ca, '/CN=workload', CLIENT, [`DNS.1 = x, URI:${ALLOWED}, DNS:y`]);
  sign('uri-inject', ca, '/CN=workload', CLIENT, [`URI.1 = spiffe://evil/x, URI:${ALLOWED}, URI:spiffe://evil/y`]);
  sign('cn-contains', ca, `/CN=x ${ALLOWED.replace(/\//g, '\\/')} y`, CLIENT);
  sign('uri-prefix', ca, '/CN=workload', CLIENT, [`URI.1 = ${ALLOWED}/../admin`]);
  sign('uri-trailing-slash', ca, '/CN=workload', CLIENT, [`URI.1 = ${ALLOWED}/`]);
  sign('uri-case', ca, '/CN=workload', CLIENT, [`URI.1 = ${ALLOWED.toUpperCase()}`]);
  sign('uri-suffix', ca, '/CN=workload', CLIENT, [`URI.1 = ${ALLOWED}-evil`]);
  sign('dns-allowed', ca, '/CN=workload', CLIENT, [`DNS.1 = mirrorplane.test`, `email.1 = ${ALLOWED}`]);
  sign('expired-client', ca, '/CN=mirror-proxy', CLIENT, [`URI.1 = ${ALLOWED}`], { start: '20200101000000Z', end: '20200102000000Z' });
  sign('future-client', ca, '/CN=mirror-proxy', CLIENT, [`URI.1 = ${ALLOWED}`], { start: '20900101000000Z', end: '20910101000000Z' });
  sign('server-only-eku', ca, '/CN=mirror-proxy', ['extendedKeyUsage = serverAuth', 'basicConstraints = CA:FALSE'], [`URI.1 = ${ALLOWED}`]);
  sign('rsa1024', ca, '/CN=mirror-proxy', CLIENT, [`URI.1 = ${ALLOWED}`], { keyArgs: ['rsa:1024'] });
  // An intermediate CA with the allowed SPIFFE ID, used itself as a client.
  sign(
    'intermediate',
    ca,
    '/CN=Intermediate',
    ['basicConstraints = critical,CA:TRUE', 'keyUsage = critical,keyCertSign,cRLSign,digitalSignature'],
    [`URI.1 = ${ALLOWED}`],
  );
  sign('via-intermediate', extra.intermediate!, '/CN=mirror-proxy', CLIENT, [`URI.1 = ${ALLOWED}`]);
  // Self-signed, same names as the allowed client.
  const selfKey = join(certs.dir, 'atk-self.key');
  const selfCert = join(certs.dir, 'atk-self.pem');
  openssl(['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', selfKey, '-out', selfCert, '-days', '30',
    '-subj', '/CN=mirror-proxy', '-addext', `subjectAltName=URI:${ALLOWED}`], certs.dir); // prettier-ignore
  extra.self = { cert: selfCert, key: selfKey };

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
      INGRESS_TLS_ALLOW: ALLOWED,
      ADMIN_PORT: String(adminPort),
    },
  });
});

after(async () => {
  await stack?.close();
  await staging?.close();
  await redis?.close();
  certs?.remove();
});

function adminGet(path: string, port = adminPort): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host: '127.0.0.1', port, path }, (res) => {
      let body = '';
      res.on('data', (c: Buffer) => (body += c.toString()));
      res.on('end', () => resolve(body));
    });
    req.on('error', reject);
    req.end();
  });
}

async function metric(name: string, port = adminPort): Promise<number> {
  const body = await adminGet('/metrics', port);
  const escaped = name.replace(/[{}"=]/g, (c) => `\\${c}`);
  // A counter not incremented yet may have no line: 0.
  return Number(new RegExp(`^${escaped} (\\d+)`, 'm').exec(body)?.[1] ?? '0');
}

// Both wait out the 10 s handshake bound: run side by side.
describe('handshake timeouts', { concurrency: true }, () => {
  test('connections that never finish a handshake cannot lock the proxy out for long: MAX_CONNECTIONS slots come back, refusals counted', async () => {
    const port = await freePort();
    const admin = await freePort();
    const ingress = new MirrorplaneProcess(['ingress'], {
      ...stack.env,
      INGRESS_PORT: String(port),
      INGRESS_HOST: '127.0.0.1',
      ADMIN_PORT: String(admin),
      MAX_CONNECTIONS: '8',
      INGRESS_TLS_CERT: certs.server.cert,
      INGRESS_TLS_KEY: certs.server.key,
    });
    const sockets: Socket[] = [];
    try {
      await ingress.waitForLog('ingress listening');
      const refusedBefore = await metric('mirrorplane_ingress_tls_refused_total{reason="handshake"}', admin);
      for (let i = 0; i < 8; i++) {
        const s = netConnect(port, '127.0.0.1');
        s.on('error', () => undefined);
        sockets.push(s);
        await new Promise((r) => s.once('connect', r));
      }
      // The slots come back within the documented handshake bound (10 s) plus slack.
      const started = Date.now();
      await waitFor(
        'a real client served again',
        async () => {
          const outcome = await sendRawTls(port, requestHead('GET', '/after-flood', ['Host', 'x']), undefined, { ca: certs.read(certs.ca) });
          return outcome.ok && outcome.response.status === 200;
        },
        30_000,
      );
      assert.ok(Date.now() - started < 20_000, `served after ${Date.now() - started} ms`);
      // Each silent connection is closed by the ingress (not by us) and counted.
      await waitFor('the silent connections closed by the ingress', () => sockets.every((s) => s.destroyed || s.readableEnded) || null, 10_000);
      const refused = await metric('mirrorplane_ingress_tls_refused_total{reason="handshake"}', admin);
      assert.ok(refused >= refusedBefore + 8, `8 handshake timeouts counted: ${refusedBefore} before, ${refused} after`);
    } finally {
      for (const s of sockets) s.destroy();
      await ingress.stop('SIGKILL');
    }
  });

  test('the dashboard over TLS: a silent connection is closed after the handshake timeout, and SIGTERM with one open exits promptly', async () => {
    const port = await freePort();
    const dashboard = new MirrorplaneProcess(['dashboard', '--port', String(port)], {
      REDIS_URL: stack.env.REDIS_URL!,
      MIRRORPLANE_PREFIX: stack.env.MIRRORPLANE_PREFIX!,
      ADMIN_TLS_CERT: certs.server.cert,
      ADMIN_TLS_KEY: certs.server.key,
    });
    const sockets: Socket[] = [];
    try {
      await dashboard.waitForLog('dashboard listening');
      const silent = (): Promise<Socket> =>
        new Promise((resolve) => {
          const s = netConnect(port, '127.0.0.1');
          s.on('error', () => undefined);
          sockets.push(s);
          s.once('connect', () => resolve(s));
        });
      // Closed by the dashboard within the handshake bound (10 s) plus slack.
      const first = await silent();
      const closed = new Promise<number>((r) => first.once('close', () => r(Date.now())));
      const opened = Date.now();
      let timer: NodeJS.Timeout | undefined;
      const at = await Promise.race([closed, new Promise<null>((r) => (timer = setTimeout(() => r(null), 20_000)))]);
      clearTimeout(timer);
      assert.ok(at !== null && at - opened < 15_000, 'the silent connection is closed by the dashboard');
      await silent();
      const started = Date.now();
      dashboard.child.kill('SIGTERM');
      const code = await Promise.race([dashboard.exited, new Promise<string>((r) => (timer = setTimeout(() => r('still running after 20 s'), 20_000)))]);
      clearTimeout(timer);
      assert.equal(code, 0, 'exits 0');
      assert.ok(Date.now() - started < 5000, `exits promptly, took ${Date.now() - started} ms`);
    } finally {
      for (const s of sockets) s.destroy();
      if (dashboard.child.exitCode === null) await dashboard.stop('SIGKILL');
    }
  });
});

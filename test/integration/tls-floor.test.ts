import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { connect, createServer, type ConnectionOptions, type Server } from 'node:tls';
import { originTlsOptions, redisTlsOptions } from '@mirrorplane/runtime';
import { originTlsHint } from '../../apps/worker/src/replay.js';
import { TestCerts } from '../helpers/index.js';

/**
 * Issue #20, the TLS floor on the client side (Redis, staging origins), as on the listeners
 * (tls-ingress-client-certificates.test.ts): a server whose certificate has an RSA-1024 key,
 * from a trusted CA, fails ("EE certificate key too weak"); an RSA-2048 one passes; TLS 1.1
 * is refused. The staging failure names what to do.
 */

let certs: TestCerts;
const servers: Server[] = [];

function rsaServer(bits: number): { cert: string; key: string } {
  const dir = certs.dir;
  const key = join(dir, `rsa${bits}.key`);
  const csr = join(dir, `rsa${bits}.csr`);
  const cert = join(dir, `rsa${bits}.pem`);
  const ext = join(dir, `rsa${bits}.ext`);
  execFileSync('openssl', ['req', '-new', '-newkey', `rsa:${bits}`, '-nodes', '-keyout', key, '-out', csr, '-subj', '/CN=localhost'], { stdio: 'ignore' });
  execFileSync('sh', ['-c', `printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\\nextendedKeyUsage=serverAuth\\n' > ${ext}`]);
  execFileSync(
    'openssl',
    ['x509', '-req', '-in', csr, '-CA', certs.ca, '-CAkey', join(dir, 'ca.key'), '-CAcreateserial', '-days', '30', '-extfile', ext, '-out', cert],
    {
      stdio: 'ignore',
    },
  );
  return { cert, key };
}

async function serve(files: { cert: string; key: string }, extra: object = {}): Promise<number> {
  const server = createServer({ cert: readFileSync(files.cert), key: readFileSync(files.key), ...extra }, (s) => s.end());
  // Node's own default (security level 1) on the server: only the client's floor is tested here.
  server.on('tlsClientError', () => undefined);
  servers.push(server);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return (server.address() as AddressInfo).port;
}

function handshake(port: number, options: ConnectionOptions): Promise<string> {
  return new Promise((resolve) => {
    const socket = connect({ host: '127.0.0.1', port, servername: 'localhost', ...options });
    socket.once('secureConnect', () => {
      socket.destroy();
      resolve('ok');
    });
    socket.once('error', (e) => resolve(`${String((e as { code?: string }).code)} ${(e as Error).message}`));
  });
}

before(() => {
  certs = TestCerts.create();
});

after(() => {
  for (const s of servers) s.close();
  certs?.remove();
});

const clients = (): [string, ConnectionOptions][] => [
  ['redis', redisTlsOptions({ ca: certs.ca, cert: null, key: null, servername: null })],
  ['staging', originTlsOptions({ where: 'origins.default', ca: certs.ca, cert: null, key: null, servername: null, insecure: false } as never)],
];

test('Redis and staging clients refuse a server certificate with an RSA-1024 key from a trusted CA; RSA-2048 passes', async () => {
  const weak = await serve(rsaServer(1024));
  const strong = await serve(rsaServer(2048));
  for (const [name, options] of clients()) {
    assert.match(await handshake(weak, options), /key too weak/, `${name}: RSA-1024 refused`);
    assert.equal(await handshake(strong, options), 'ok', `${name}: RSA-2048 accepted`);
  }
  assert.match(originTlsHint('UNSPECIFIED', 'default', 'EE certificate key too weak') ?? '', /weaker than the TLS floor/);
});

test('Redis and staging clients refuse a server that offers only TLS 1.1', async () => {
  const old = await serve(certs.server, { minVersion: 'TLSv1', maxVersion: 'TLSv1.1', ciphers: 'DEFAULT:@SECLEVEL=0' });
  for (const [name, options] of clients()) assert.notEqual(await handshake(old, options), 'ok', `${name}: TLS 1.1 refused`);
});

import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { freePort } from './ports.js';
import { RecordingServer } from './recording-server.js';
import { RedisServer } from './redis-server.js';
import { Stack } from './stack.js';
import { TestCerts } from './certs.js';

/** The SPIFFE ID the TLS ingress of `startTlsIngress` allows (INGRESS_TLS_ALLOW). */
export const ALLOWED_SPIFFE_ID = 'spiffe://mirrorplane.test/mirror';

/** Extensions of a client certificate: clientAuth, not a CA. */
export const CLIENT_CERT_EXTENSIONS = ['extendedKeyUsage = clientAuth', 'basicConstraints = CA:FALSE'];

function openssl(args: string[], cwd: string): void {
  execFileSync('openssl', args, { cwd, stdio: ['ignore', 'ignore', 'pipe'] });
}

let serial = 4096;

/**
 * A certificate signed by `ca` with `openssl ca` (so dates can lie in the past or the future),
 * written into `certs.dir`: `ext` are the extension lines, `alt` the [alt] section lines,
 * `opts.keyArgs` the `-newkey` arguments (default EC P-256). Throws when openssl fails.
 */
export function signCertificate(
  certs: TestCerts,
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
  const newKey = opts.keyArgs ?? ['ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1'];
  openssl(['req', '-new', '-newkey', ...newKey, '-nodes', '-keyout', key, '-out', csr, '-subj', subject], dir);
  const cnf = join(dir, `atk-${name}.cnf`);
  writeFileSync(join(dir, `atk-${name}-index.txt`), '');
  writeFileSync(join(dir, `atk-${name}-serial`), `${(serial++).toString(16).padStart(4, '0')}\n`);
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
  return { cert, key };
}

/** A self-signed certificate (EC P-256, 30 days) with `subject` and the SAN `altName`, in `certs.dir`. */
export function selfSignedCertificate(certs: TestCerts, name: string, subject: string, altName: string): { cert: string; key: string } {
  const key = join(certs.dir, `atk-${name}.key`);
  const cert = join(certs.dir, `atk-${name}.pem`);
  openssl(['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', key, '-out', cert, '-days', '30',
    '-subj', subject, '-addext', `subjectAltName=${altName}`], certs.dir); // prettier-ignore
  return { cert, key };
}

/** What `startTlsIngress` runs; `close` stops all of it and removes the certificates. */
export interface TlsIngress {
  certs: TestCerts;
  redis: RedisServer;
  staging: RecordingServer;
  stack: Stack;
  adminPort: number;
  close(): Promise<void>;
}

/**
 * A stack whose traffic port takes mutual TLS only from clients of the test CA with
 * `ALLOWED_SPIFFE_ID` (INGRESS_TLS_CERT/KEY/CA/ALLOW), one worker, a recording staging, and an
 * admin port in clear text. `prepare` runs after the certificates exist and before the stack
 * starts (to sign more of them).
 */
export async function startTlsIngress(prepare?: (certs: TestCerts) => void): Promise<TlsIngress> {
  const certs = TestCerts.create();
  prepare?.(certs);
  const redis = await RedisServer.start();
  const staging = await RecordingServer.start();
  const adminPort = await freePort();
  const stack = await Stack.start({
    redis,
    stagingUrl: staging.url,
    workers: 1,
    ingressEnv: {
      INGRESS_TLS_CERT: certs.server.cert,
      INGRESS_TLS_KEY: certs.server.key,
      INGRESS_TLS_CA: certs.ca,
      INGRESS_TLS_ALLOW: ALLOWED_SPIFFE_ID,
      ADMIN_PORT: String(adminPort),
    },
  });
  return {
    certs,
    redis,
    staging,
    stack,
    adminPort,
    async close() {
      await stack.close();
      await staging.close();
      await redis.close();
      certs.remove();
    },
  };
}

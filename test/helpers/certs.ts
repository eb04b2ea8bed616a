import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** A certificate and its key, as files. */
export interface CertFiles {
  cert: string;
  key: string;
}

/**
 * Certificates for one test file, made with the `openssl` command into a temporary directory
 * (`remove()` deletes it): a private CA, and another CA nobody trusts; server certificates for
 * 127.0.0.1/localhost (two, for reloads), one expired, one for the wrong name; client
 * certificates from the CA (`mirror-proxy` with a SPIFFE ID, `intruder`) and one from the
 * other CA. EC P-256 keys: quick to make.
 */
export class TestCerts {
  readonly dir: string;
  /** The private CA's certificate (the trust anchor). */
  readonly ca: string;
  /** A CA that signed `foreignClient` and is trusted by nobody. */
  readonly otherCa: string;
  readonly server: CertFiles;
  /** A second server certificate for the same names (a renewal). */
  readonly server2: CertFiles;
  /** For servers that are also clients of each other (Redis Cluster bus, Sentinel to its master): serverAuth and clientAuth. */
  readonly node: CertFiles;
  readonly expiredServer: CertFiles;
  /** Names only wrong.example: a client that checks names refuses it. */
  readonly wrongNameServer: CertFiles;
  /** CN=mirror-proxy, URI SAN spiffe://mirrorplane.test/mirror. */
  readonly client: CertFiles;
  /** CN=intruder, from the same CA: verified, but not on an allow-list. */
  readonly intruder: CertFiles;
  /** CN=mirror-proxy, from `otherCa`: not verified. */
  readonly foreignClient: CertFiles;

  private constructor(dir: string) {
    this.dir = dir;
    const ca = makeCa(dir, 'ca', 'Mirrorplane Test CA');
    const other = makeCa(dir, 'other-ca', 'Untrusted CA');
    this.ca = ca.cert;
    this.otherCa = other.cert;
    const serverSan = 'subjectAltName=DNS:localhost,IP:127.0.0.1';
    this.server = issue(dir, ca, 'server', '/CN=localhost', serverSan, 'serverAuth');
    this.server2 = issue(dir, ca, 'server2', '/CN=localhost', serverSan, 'serverAuth');
    this.node = issue(dir, ca, 'node', '/CN=localhost', serverSan, 'serverAuth,clientAuth');
    this.expiredServer = issue(dir, ca, 'expired', '/CN=localhost', serverSan, 'serverAuth', true);
    this.wrongNameServer = issue(dir, ca, 'wrong-name', '/CN=wrong.example', 'subjectAltName=DNS:wrong.example', 'serverAuth');
    this.client = issue(dir, ca, 'client', '/CN=mirror-proxy', 'subjectAltName=URI:spiffe://mirrorplane.test/mirror', 'clientAuth');
    this.intruder = issue(dir, ca, 'intruder', '/CN=intruder', 'subjectAltName=DNS:intruder', 'clientAuth');
    this.foreignClient = issue(dir, other, 'foreign', '/CN=mirror-proxy', 'subjectAltName=URI:spiffe://mirrorplane.test/mirror', 'clientAuth');
  }

  static create(): TestCerts {
    return new TestCerts(mkdtempSync(join(tmpdir(), 'mp-test-certs-')));
  }

  /** A file's contents (for clients that take PEM text). */
  read(path: string): Buffer {
    return readFileSync(path);
  }

  remove(): void {
    rmSync(this.dir, { recursive: true, force: true });
  }
}

function openssl(dir: string, args: string[]): void {
  execFileSync('openssl', args, { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] });
}

function makeCa(dir: string, name: string, cn: string): CertFiles {
  const cert = join(dir, `${name}.pem`);
  const key = join(dir, `${name}.key`);
  openssl(dir, [
    'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
    '-keyout', key, '-out', cert, '-days', '30', '-subj', `/CN=${cn}`,
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign',
  ]); // prettier-ignore
  return { cert, key };
}

/**
 * A certificate signed by `ca`. `expired`: valid only during one day of 2020, set with
 * `openssl ca` (`x509 -req` cannot date a certificate in the past).
 */
function issue(dir: string, ca: CertFiles, name: string, subject: string, san: string, usage: string, expired = false): CertFiles {
  const cert = join(dir, `${name}.pem`);
  const key = join(dir, `${name}.key`);
  const csr = join(dir, `${name}.csr`);
  openssl(dir, [
    'req',
    '-new',
    '-newkey',
    'ec',
    '-pkeyopt',
    'ec_paramgen_curve:prime256v1',
    '-nodes',
    '-keyout',
    key,
    '-out',
    csr,
    '-subj',
    subject,
    '-addext',
    san,
  ]);
  const ext = join(dir, `${name}.ext`);
  writeFileSync(ext, `${san}\nextendedKeyUsage=${usage}\nbasicConstraints=CA:FALSE\n`);
  if (!expired) {
    openssl(dir, ['x509', '-req', '-in', csr, '-CA', ca.cert, '-CAkey', ca.key, '-CAcreateserial', '-out', cert, '-days', '30', '-extfile', ext]);
    return { cert, key };
  }
  const cnf = join(dir, `${name}-ca.cnf`);
  writeFileSync(join(dir, `${name}-index.txt`), '');
  writeFileSync(
    cnf,
    [
      '[ca]',
      'default_ca = d',
      '[d]',
      `database = ${join(dir, `${name}-index.txt`)}`,
      `new_certs_dir = ${dir}`,
      `serial = ${join(dir, `${name}-serial`)}`,
      'default_md = sha256',
      'policy = p',
      'copy_extensions = copy',
      'x509_extensions = e',
      '[p]',
      'commonName = supplied',
      '[e]',
      `extendedKeyUsage = ${usage}`,
      'basicConstraints = CA:FALSE',
      '',
    ].join('\n'),
  );
  writeFileSync(join(dir, `${name}-serial`), '1000\n');
  openssl(dir, [
    'ca', '-batch', '-notext', '-config', cnf, '-cert', ca.cert, '-keyfile', ca.key, '-in', csr, '-out', cert,
    '-startdate', '20200101000000Z', '-enddate', '20200102000000Z',
  ]); // prettier-ignore
  return { cert, key };
}

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { request as httpRequest } from 'node:http';
import { connect as netConnect } from 'node:net';
import { join } from 'node:path';
import { connect as tlsConnect, type ConnectionOptions } from 'node:tls';
import {
  RecordingServer,
  Stack,
  TestCerts,
  header,
  requestHead,
  sendRawTls,
  waitFor,
  startTlsIngress,
  signCertificate,
  selfSignedCertificate,
  ALLOWED_SPIFFE_ID,
  CLIENT_CERT_EXTENSIONS,
  type TlsIngress,
} from '../helpers/index.js';

/**
 * Issue #20, the TLS traffic port: the allow-list against odd client certificates (names that
 * only look allowed, expired, not yet valid, wrong EKU, self-signed, RSA-1024, a CA certificate),
 * weak protocol versions, garbage and clear text on the TLS port, pipelining and large bodies
 * byte for byte.
 */

const ALLOWED = ALLOWED_SPIFFE_ID;
let tls: TlsIngress;
let certs: TestCerts;
let staging: RecordingServer;
let stack: Stack;
let adminPort: number;
/** The odd client certificates this file tries, in certs.dir. */
const extra: Record<string, { cert: string; key: string }> = {};

before(async () => {
  tls = await startTlsIngress((made) => {
    const ca = { cert: made.ca, key: join(made.dir, 'ca.key') };
    const sign = (name: string, by: { cert: string; key: string }, subject: string, ext: string[], alt: string[] = [], opts = {}) =>
      (extra[name] = signCertificate(made, name, by, subject, ext, alt, opts));
    const CLIENT = CLIENT_CERT_EXTENSIONS;
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
    extra.self = selfSignedCertificate(made, 'self', '/CN=mirror-proxy', `URI:${ALLOWED}`);
  });
  ({ certs, staging, stack, adminPort } = tls);
});

after(async () => {
  await tls?.close();
});

const allowedClient = (): ConnectionOptions => ({ ca: certs.read(certs.ca), cert: certs.read(certs.client.cert), key: certs.read(certs.client.key) });
const withCert = (name: string, chain?: string[]): ConnectionOptions => ({
  ca: certs.read(certs.ca),
  cert: Buffer.concat([certs.read(extra[name]!.cert), ...(chain ?? []).map((c) => certs.read(c))]),
  key: certs.read(extra[name]!.key),
});

function adminGet(path: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host: '127.0.0.1', port: adminPort, path }, (res) => {
      let body = '';
      res.on('data', (c: Buffer) => (body += c.toString()));
      res.on('end', () => resolve(body));
    });
    req.on('error', reject);
    req.end();
  });
}

async function metric(name: string): Promise<number> {
  const body = await adminGet('/metrics');
  const escaped = name.replace(/[{}"=]/g, (c) => `\\${c}`);
  // A counter not incremented yet may have no line: 0.
  return Number(new RegExp(`^${escaped} (\\d+)`, 'm').exec(body)?.[1] ?? '0');
}

test('allow-list: certificates from the CA that only look like the allowed SPIFFE ID are refused, nothing stored', async () => {
  const names = ['dns-inject', 'uri-inject', 'cn-contains', 'uri-prefix', 'uri-trailing-slash', 'uri-case', 'uri-suffix', 'dns-allowed'];
  for (const name of names) {
    const outcome = await sendRawTls(
      stack.ingressPort,
      requestHead('GET', `/allow/${name}`, ['Host', 'x', 'X-Request-ID', `atk-${name}`]),
      undefined,
      withCert(name),
    );
    assert.equal(outcome.ok, false, `${name}: refused (${outcome.ok ? outcome.response.head : ''})`);
  }
  const ok = await sendRawTls(stack.ingressPort, requestHead('GET', '/allow/ok', ['Host', 'x', 'X-Request-ID', 'atk-allow-ok']), undefined, allowedClient());
  assert.ok(ok.ok && ok.response.status === 200);
  await waitFor('the allowed replay', () => staging.received.find((r) => header(r.rawHeaders, 'x-request-id') === 'atk-allow-ok'), 60_000);
  const leaked = staging.received.filter((r) => names.some((n) => header(r.rawHeaders, 'x-request-id') === `atk-${n}`));
  assert.deepEqual(
    leaked.map((r) => r.url),
    [],
  );
});

/** Each named client certificate is refused at the handshake, and each refusal is counted. */
async function refusedAtHandshake(names: string[]): Promise<void> {
  const before = await metric('mirrorplane_ingress_tls_refused_total{reason="handshake"}');
  const accepted: string[] = [];
  for (const name of names) {
    const outcome = await sendRawTls(
      stack.ingressPort,
      requestHead('GET', `/bad/${name}`, ['Host', 'x', 'X-Request-ID', `atk-${name}`]),
      undefined,
      withCert(name),
    );
    if (outcome.ok) accepted.push(`${name} -> ${outcome.response.status}`);
  }
  assert.deepEqual(accepted, [], 'each is refused');
  const after = await waitFor('refusals counted', async () => {
    const n = await metric('mirrorplane_ingress_tls_refused_total{reason="handshake"}');
    return n >= before + names.length ? n : null;
  }, 10_000).catch(() => null); // prettier-ignore
  const now = await metric('mirrorplane_ingress_tls_refused_total{reason="handshake"}');
  assert.ok(after !== null, `every refusal counted as a handshake refusal: ${before} before, ${now} after ${names.length} refusals`);
}

test('bad client certificates (expired, not yet valid, serverAuth only, self-signed) are refused at the handshake, counted', () =>
  refusedAtHandshake(['expired-client', 'future-client', 'server-only-eku', 'self']));

test('a client certificate with an RSA-1024 key (allowed SPIFFE ID, from the CA) is refused', () => refusedAtHandshake(['rsa1024']));

test('a CA certificate (CA:TRUE, keyCertSign) used as a client certificate is refused', () => refusedAtHandshake(['intermediate']));

test('a client certificate signed by an intermediate (chain sent) with the allowed SPIFFE ID is accepted', async () => {
  const outcome = await sendRawTls(
    stack.ingressPort,
    requestHead('GET', '/chain', ['Host', 'x', 'X-Request-ID', 'atk-chain']),
    undefined,
    withCert('via-intermediate', [extra.intermediate!.cert]),
  );
  assert.ok(outcome.ok && outcome.response.status === 200, outcome.ok ? outcome.response.head : outcome.error);
});

test('TLS 1.0 and 1.1 are refused; TLS 1.2 works', async () => {
  for (const version of ['TLSv1', 'TLSv1.1'] as const) {
    const outcome = await sendRawTls(stack.ingressPort, requestHead('GET', '/old', ['Host', 'x']), undefined, {
      ...allowedClient(),
      minVersion: version,
      maxVersion: version,
      ciphers: 'DEFAULT@SECLEVEL=0',
    });
    assert.equal(outcome.ok, false, `${version} refused`);
  }
  const v12 = await sendRawTls(stack.ingressPort, requestHead('GET', '/v12', ['Host', 'x']), undefined, { ...allowedClient(), maxVersion: 'TLSv1.2' });
  assert.ok(v12.ok && v12.response.status === 200);
});

/** Writes `bytes` to the port and resolves once the server closes (or `ms` elapse: then false). */
function sendAndWaitClose(port: number, bytes: Buffer, ms: number): Promise<{ closed: boolean; reply: Buffer }> {
  return new Promise((resolve) => {
    const socket = netConnect(port, '127.0.0.1');
    const chunks: Buffer[] = [];
    const timer = setTimeout(() => {
      socket.destroy();
      resolve({ closed: false, reply: Buffer.concat(chunks) });
    }, ms);
    socket.on('connect', () => socket.write(bytes));
    socket.on('data', (c: Buffer) => chunks.push(c));
    socket.on('error', () => undefined);
    socket.on('close', () => {
      clearTimeout(timer);
      resolve({ closed: true, reply: Buffer.concat(chunks) });
    });
  });
}

test('garbage bytes, clear-text HTTP and an h2c preface on the TLS port: closed promptly, counted, nothing stored', async () => {
  const before = await metric('mirrorplane_ingress_tls_refused_total{reason="handshake"}');
  const inputs = {
    garbage: Buffer.from([0x00, 0xff, 0x13, 0x37, ...Buffer.alloc(300, 0x41)]),
    http: Buffer.from(requestHead('GET', '/clear', ['Host', 'x', 'X-Request-ID', 'atk-clear-on-tls'])),
    h2c: Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n'),
    tlsRecordHeaderOnly: Buffer.from([0x16, 0x03, 0x01, 0xff, 0xff]),
  };
  for (const [name, bytes] of Object.entries(inputs)) {
    const started = Date.now();
    const result = await sendAndWaitClose(stack.ingressPort, bytes, 15_000);
    assert.ok(result.closed, `${name}: closed by the server`);
    assert.ok(!/^HTTP\/1\.1 200/.test(result.reply.toString('latin1')), `${name}: no 200`);
    if (name !== 'tlsRecordHeaderOnly') assert.ok(Date.now() - started < 5000, `${name}: closed promptly (${Date.now() - started} ms)`);
  }
  await waitFor('each counted', async () => (await metric('mirrorplane_ingress_tls_refused_total{reason="handshake"}')) >= before + 4, 15_000);
  assert.equal(staging.received.filter((r) => header(r.rawHeaders, 'x-request-id') === 'atk-clear-on-tls').length, 0);
});

test('pipelined requests with a large binary body over TLS: every answer 200, every body replayed byte for byte', async () => {
  const big = Buffer.alloc(900 * 1024);
  for (let i = 0; i < big.length; i++) big[i] = (i * 31 + (i >> 8)) & 0xff;
  const small = Buffer.from([0, 13, 10, 13, 10, 0xff]);
  const parts: Buffer[] = [];
  const ids = ['atk-pipe-1', 'atk-pipe-2', 'atk-pipe-3'];
  const bodies = [big, small, big.subarray(0, 65_537)];
  ids.forEach((id, i) => {
    const head = requestHead('POST', `/pipe/${i}`, ['Host', 'x', 'X-Request-ID', id], bodies[i]!.length);
    // Keep-alive: all but the last request drop requestHead's `Connection: close`.
    parts.push(Buffer.from(i < ids.length - 1 ? head.replace('Connection: close\r\n', '') : head, 'latin1'), bodies[i]!);
  });
  const answers = await new Promise<string>((resolve, reject) => {
    const socket = tlsConnect({ host: '127.0.0.1', port: stack.ingressPort, servername: 'localhost', ...allowedClient() });
    let text = '';
    socket.on('secureConnect', () => {
      // Written in odd-sized slices to cross TLS record boundaries.
      const all = Buffer.concat(parts);
      for (let o = 0; o < all.length; o += 7777) socket.write(all.subarray(o, o + 7777));
    });
    socket.on('data', (c: Buffer) => {
      text += c.toString('latin1');
      if ((text.match(/HTTP\/1\.1 /g) ?? []).length >= 3) {
        socket.end();
        resolve(text);
      }
    });
    socket.on('error', reject);
    setTimeout(() => reject(new Error(`only got: ${text}`)), 60_000).unref();
  });
  assert.deepEqual(answers.match(/HTTP\/1\.1 \d+/g), ['HTTP/1.1 200', 'HTTP/1.1 200', 'HTTP/1.1 200']);
  for (const [i, id] of ids.entries()) {
    const got = await waitFor(id, () => staging.received.find((r) => header(r.rawHeaders, 'x-request-id') === id), 60_000);
    assert.ok(got.body.equals(bodies[i]!), `${id}: body replayed byte for byte`);
  }
});

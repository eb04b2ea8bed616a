import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:http';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parse } from 'yaml';
import { loadConfig } from '@mirrorplane/core';
import { ServerTls, closeHttp, createLogger, listenHttp } from '@mirrorplane/runtime';
import { requestHead, sendRawTls } from '../helpers/index.js';

/**
 * The TLS variant of the compose topology, checked without Docker or Envoy (like
 * topology.test.ts): envoy/envoy-tls.yaml is envoy/envoy.yaml plus TLS on the mirror cluster
 * and nothing else; docker-compose.tls.yml mounts what Envoy's TLS context names and gives the
 * ingress valid settings; and the certificates examples/tls/make-certs.sh makes fit both
 * sides: a real TLS listener with the ingress's settings takes Envoy's certificate, sent as
 * Envoy sends it (SNI `ingress`), and refuses another.
 */

const root = (path: string) => fileURLToPath(new URL(`../../${path}`, import.meta.url));
const read = (path: string) => readFileSync(root(path), 'utf8');
type Json = Record<string, any>;
const envoy = parse(read('envoy/envoy.yaml')) as Json;
const envoyTls = parse(read('envoy/envoy-tls.yaml')) as Json;
const base = parse(read('docker-compose.yml')) as Json;
const override = parse(read('docker-compose.tls.yml')) as Json;

const mirrorCluster = (config: Json, name = 'mirrorplane_ingress') => (config.static_resources.clusters as Json[]).find((c) => c.name === name) as Json;
const tlsContext = () => mirrorCluster(envoyTls).transport_socket.typed_config as Json;

/** Compose's merge of a service's volumes: by container path, the override's winning. */
function volumes(service: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const v of [...(base.services[service].volumes ?? []), ...(override.services[service]?.volumes ?? [])]) {
    const [source, target] = String(v).split(':');
    out.set(target!, source!);
  }
  return out;
}

function ingressEnv(): Record<string, string> {
  return { ...base.services.ingress.environment, ...override.services.ingress.environment } as Record<string, string>;
}

test('envoy-tls.yaml is envoy.yaml with TLS on the mirror clusters (HTTP/1.1 and gRPC), and nothing else', () => {
  const withoutTls = structuredClone(envoyTls);
  delete mirrorCluster(withoutTls).transport_socket;
  delete mirrorCluster(withoutTls, 'mirrorplane_ingress_h2').transport_socket;
  assert.deepEqual(withoutTls, envoy, 'the two files differ only in the mirror clusters transport_socket');
  assert.deepEqual(
    mirrorCluster(envoyTls, 'mirrorplane_ingress_h2').transport_socket,
    mirrorCluster(envoyTls).transport_socket,
    'the gRPC mirror uses the same TLS',
  );
  const socket = mirrorCluster(envoyTls).transport_socket as Json;
  assert.equal(socket.name, 'envoy.transport_sockets.tls');
  assert.equal(socket.typed_config['@type'], 'type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext');
  const context = tlsContext().common_tls_context as Json;
  assert.equal(context.tls_certificates.length, 1, 'Envoy presents a client certificate (mutual TLS)');
  assert.ok(context.validation_context.trusted_ca.filename, "the ingress's certificate is verified against a CA");
  const names = context.validation_context.match_typed_subject_alt_names as Json[];
  assert.deepEqual(
    names.map((n) => [n.san_type, n.matcher.exact]),
    [['DNS', tlsContext().sni]],
    'the name verified is the name sent',
  );
  // The production cluster is untouched: TLS there is production's business.
  assert.equal(((envoyTls.static_resources.clusters as Json[]).find((c) => c.name === 'production') as Json).transport_socket, undefined);
});

test('docker-compose.tls.yml mounts what Envoy and the ingress name, and the ingress settings load', () => {
  const envoyCommand = base.services.envoy.command as string[];
  const configPath = envoyCommand[envoyCommand.indexOf('-c') + 1]!;
  assert.equal(volumes('envoy').get(configPath), './envoy/envoy-tls.yaml', 'Envoy runs the TLS file');
  const context = tlsContext().common_tls_context as Json;
  const envoyFiles = [
    context.tls_certificates[0].certificate_chain.filename,
    context.tls_certificates[0].private_key.filename,
    context.validation_context.trusted_ca.filename,
  ];
  for (const file of envoyFiles as string[]) {
    const dir = file.slice(0, file.lastIndexOf('/'));
    assert.equal(volumes('envoy').get(dir), './examples/tls/certs', `${file} is in the mounted certificate directory`);
  }
  const env = ingressEnv();
  const config = loadConfig({ role: 'ingress', env });
  assert.ok(config.ingressTls, 'the ingress speaks TLS');
  for (const file of [config.ingressTls.cert, config.ingressTls.key, config.ingressTls.ca!]) {
    assert.equal(volumes('ingress').get(file.slice(0, file.lastIndexOf('/'))), './examples/tls/certs', `${file} is mounted`);
  }
  // The health check asks the admin port in clear text, on loopback: it must stay so.
  assert.equal(config.adminTls, null);
  assert.match(base.services.ingress.healthcheck.test.join(' '), /http:\/\/127\.0\.0\.1:9090\/readyz/);
});

test("make-certs.sh makes certificates both sides accept, and a real TLS listener with the ingress's settings takes Envoy's", async () => {
  const dir = mkdtempSync(join(tmpdir(), 'mp-test-compose-certs-'));
  try {
    execFileSync('sh', [root('examples/tls/make-certs.sh'), dir], { stdio: 'ignore' });
    const file = (name: string) => join(dir, name);
    const ca = new X509Certificate(readFileSync(file('ca.pem')));
    const ingress = new X509Certificate(readFileSync(file('ingress.pem')));
    const envoyCert = new X509Certificate(readFileSync(file('envoy.pem')));
    assert.ok(ingress.verify(ca.publicKey) && envoyCert.verify(ca.publicKey), 'both are signed by the CA');
    assert.ok(ingress.subjectAltName?.split(', ').includes(`DNS:${tlsContext().sni}`), "the ingress's certificate carries the name Envoy verifies");
    const env = ingressEnv();
    const spiffe = envoyCert.subjectAltName?.replace(/^URI:/, '');
    assert.deepEqual(env.INGRESS_TLS_ALLOW!.split(','), [spiffe], "the ingress allows Envoy's SPIFFE ID");
    // The same files, found by the names the compose files use.
    const context = tlsContext().common_tls_context as Json;
    for (const f of [context.tls_certificates[0].certificate_chain.filename, context.validation_context.trusted_ca.filename, env.INGRESS_TLS_CERT])
      readFileSync(file(basename(f as string)));

    const local = (path: string) => file(basename(path));
    const config = loadConfig({
      role: 'ingress',
      env: { ...env, INGRESS_TLS_CERT: local(env.INGRESS_TLS_CERT!), INGRESS_TLS_KEY: local(env.INGRESS_TLS_KEY!), INGRESS_TLS_CA: local(env.INGRESS_TLS_CA!) },
    });
    const server = createServer((_req, res) => res.end('ok'));
    const port = await listenHttp(server, 0, '127.0.0.1', new ServerTls(config.ingressTls!, createLogger({ logLevel: 'silent' }, 'test')));
    try {
      const asEnvoy = {
        ca: readFileSync(file('ca.pem')),
        cert: readFileSync(file('envoy.pem')),
        key: readFileSync(file('envoy.key')),
        servername: tlsContext().sni as string,
      };
      const ok = await sendRawTls(port, requestHead('GET', '/', ['Host', 'ingress']), undefined, asEnvoy);
      assert.ok(ok.ok && ok.response.status === 200, ok.ok ? ok.response.head : ok.error);
      // The ingress's own certificate is from the CA but is not Envoy's ID: refused.
      const other = await sendRawTls(port, requestHead('GET', '/', ['Host', 'ingress']), undefined, {
        ...asEnvoy,
        cert: readFileSync(file('ingress.pem')),
        key: readFileSync(file('ingress.key')),
      });
      assert.equal(other.ok, false);
    } finally {
      await closeHttp(server);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

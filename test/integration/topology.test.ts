import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { parse } from 'yaml';
import {
  SETTINGS,
  compileRules,
  loadConfig,
  type Config,
  type MirroredRequest,
  type OutgoingRequest,
  type PipelineContext,
  type Role,
} from '@mirrorplane/core';
import { runCli } from '../helpers/index.js';

/**
 * No Docker engine or Envoy binary runs here, so docker-compose.yml, envoy/envoy.yaml, the
 * Dockerfile and the compose config file are checked by parsing them and cross-checking
 * every reference: what one file names, the other must provide. The same topology runs for
 * real, with nginx as the mirroring proxy, in test/e2e/nginx-mirror.test.ts.
 */

const root = (path: string) => fileURLToPath(new URL(`../../${path}`, import.meta.url));
const read = (path: string) => readFileSync(root(path), 'utf8');

type Json = Record<string, any>;
const compose = parse(read('docker-compose.yml')) as Json;
const envoy = parse(read('envoy/envoy.yaml')) as Json;
const dockerfile = read('Dockerfile');
const rootPackage = JSON.parse(read('package.json')) as { version: string; workspaces: string[] };
const services = compose.services as Record<string, Json>;

/** Env vars the processes read: every setting's, plus the config file's path (read in apps/cli/src/process.ts). */
const KNOWN_ENV = new Set([...Object.values(SETTINGS).map((s) => s.env), 'MIRRORPLANE_CONFIG']);
const ROLES: Record<string, Role> = { ingress: 'ingress', worker: 'worker' };

function environment(service: Json): Record<string, string> {
  const env = service.environment ?? {};
  if (Array.isArray(env)) return Object.fromEntries(env.map((e: string) => [e.split('=')[0], e.split('=').slice(1).join('=')]));
  return Object.fromEntries(Object.entries(env).map(([k, v]) => [k, String(v)]));
}

/** The host file a service mounts at `target`. */
function mountedFile(service: Json, target: string): string | undefined {
  for (const v of service.volumes ?? []) {
    const [source, at] = String(v).split(':');
    if (at === target) return source;
  }
  return undefined;
}

/** The validated config of a Mirrorplane service, as its process would load it at start. */
function serviceConfig(name: string): Config {
  const service = services[name] as Json;
  const env = environment(service);
  const path = env.MIRRORPLANE_CONFIG;
  let file: { path: string; text: string } | undefined;
  if (path) {
    const source = mountedFile(service, path);
    assert.ok(source, `${name}: MIRRORPLANE_CONFIG ${path} is mounted from a file of this repository`);
    file = { path: source, text: read(source.replace(/^\.\//, '')) };
  }
  return loadConfig({ role: ROLES[name] as Role, env, ...(file ? { file } : {}) });
}

function flag(command: string[], name: string): string | undefined {
  const i = command.indexOf(name);
  return i === -1 ? undefined : command[i + 1];
}

/** The port each service listens on inside its container, from its own settings. */
function listeningPort(name: string): number {
  const service = services[name] as Json;
  const command = (service.command ?? []) as string[];
  if (name === 'ingress') return serviceConfig('ingress').ingressPort;
  if (name === 'redis') return 6379;
  if (command[0] === 'sample-backend') return Number(flag(command, '--port') ?? 8000);
  if (name === 'envoy') return listener().address.socket_address.port_value;
  throw new Error(`no known port for ${name}`);
}

function listener(): Json {
  const listeners = envoy.static_resources.listeners as Json[];
  assert.equal(listeners.length, 1, 'one listener, in front of production');
  return listeners[0] as Json;
}

function connectionManager(): Json {
  const filters = listener().filter_chains[0].filters as Json[];
  const hcm = filters.find((f) => f.name === 'envoy.filters.network.http_connection_manager');
  assert.ok(hcm, 'the listener runs the HTTP connection manager');
  return hcm.typed_config;
}

function routes(): Json[] {
  const vhosts = connectionManager().route_config.virtual_hosts as Json[];
  return vhosts.flatMap((v) => v.routes as Json[]);
}

/** The catch-all route: everything that is not gRPC goes to production. */
function route(): Json {
  const all = routes();
  assert.equal(all.length, 2, 'two routes: gRPC first, then everything else, both to production');
  const last = all.at(-1) as Json;
  assert.deepEqual(last.match, { prefix: '/' }, 'the last route takes everything');
  return last.route;
}

/** The gRPC route, before the catch-all. */
function grpcRoute(): Json {
  const first = routes()[0] as Json;
  assert.deepEqual(first.match, { prefix: '/', grpc: {} }, 'the first route takes gRPC');
  return first.route;
}

function cluster(name: string): Json {
  const found = (envoy.static_resources.clusters as Json[]).find((c) => c.name === name);
  assert.ok(found, `cluster ${name} is defined`);
  return found;
}

function endpoints(c: Json): Json[] {
  return (c.load_assignment.endpoints as Json[]).flatMap((e) => (e.lb_endpoints as Json[]).map((l) => l.endpoint));
}

function seconds(duration: unknown, where: string): number {
  // protobuf Duration in YAML: "0.25s", never "250ms" (Envoy refuses to load that).
  assert.match(String(duration), /^\d+(\.\d+)?s$/, `${where}: a protobuf duration like 0.25s, got ${String(duration)}`);
  return Number(String(duration).slice(0, -1));
}

/** The ports a compose service publishes or exposes: container port → host binding. */
function containerPorts(service: Json): number[] {
  return (service.ports ?? []).map((p: string) => Number(String(p).split(':').pop()));
}

test('compose runs the documented services, each with a pinned image and a health check', () => {
  assert.deepEqual(Object.keys(services).sort(), ['envoy', 'ingress', 'production', 'redis', 'staging', 'worker']);
  for (const [name, service] of Object.entries(services)) {
    const image = String(service.image ?? '');
    const tag = /^[^:]+(?::(.+))?$/.exec(image.replace(/^[^/]+:\d+\//, ''))?.[1];
    assert.ok(tag, `${name}: image ${image} names a tag`);
    assert.notEqual(tag, 'latest', `${name}: no :latest`);
    assert.match(tag, /\d+\.\d+/, `${name}: image ${image} is pinned to a version`);
    if (service.build !== undefined)
      assert.equal(image, `mirrorplane:${rootPackage.version}`, `${name}: the image built here is tagged with the package version`);
    assert.ok(Array.isArray(service.healthcheck?.test) && service.healthcheck.test.length > 1, `${name}: has a health check`);
    for (const [dep, cond] of Object.entries((service.depends_on ?? {}) as Record<string, Json>)) {
      assert.ok(services[dep], `${name} depends on ${dep}, a service of this file`);
      assert.equal(cond.condition, 'service_healthy', `${name} waits until ${dep} is healthy`);
    }
  }
  for (const [name, deps] of Object.entries({ envoy: ['production', 'ingress'], ingress: ['redis'], worker: ['redis', 'staging'] })) {
    assert.deepEqual(Object.keys(services[name]?.depends_on ?? {}).sort(), deps.sort(), `${name} starts after ${deps.join(' and ')}`);
  }
});

test('every environment variable a service sets is a setting Mirrorplane reads, with a valid value', () => {
  for (const [name, service] of Object.entries(services)) {
    const env = environment(service);
    if (!['ingress', 'worker'].includes(name)) {
      assert.deepEqual(Object.keys(env), [], `${name} takes no Mirrorplane settings`);
      continue;
    }
    for (const key of Object.keys(env)) assert.ok(KNOWN_ENV.has(key), `${name}: ${key} is a known setting (see SETTINGS in packages/core/src/config.ts)`);
    // loadConfig throws with every problem named when a value is invalid or a required one is missing.
    serviceConfig(name);
  }
  const ingress = serviceConfig('ingress');
  const worker = serviceConfig('worker');
  assert.equal(ingress.prefix, worker.prefix, 'ingress and workers share one stream');
  assert.equal(ingress.redisUrl, worker.redisUrl, 'ingress and workers share one Redis');
  const redisUrl = new URL(ingress.redisUrl);
  assert.equal(redisUrl.hostname, 'redis');
  assert.equal(Number(redisUrl.port || 6379), listeningPort('redis'));
  const staging = new URL(worker.stagingUrl as string);
  assert.ok(services[staging.hostname], `STAGING_URL names the ${staging.hostname} service`);
  assert.equal(staging.hostname, 'staging');
  assert.equal(Number(staging.port || 80), listeningPort('staging'), "STAGING_URL has staging's port");
});

test('redis keeps every key and every accepted entry: noeviction and AOF', () => {
  const command = (services.redis?.command ?? []) as string[];
  assert.equal(flag(command, '--maxmemory-policy'), 'noeviction');
  assert.equal(flag(command, '--appendonly'), 'yes');
  assert.ok(mountedFile(services.redis as Json, '/data'), 'the AOF lives on a volume');
});

test('workers scale: two replicas, no fixed name, no published port, graceful stop window', () => {
  const worker = services.worker as Json;
  assert.equal(worker.deploy?.replicas, 2);
  assert.equal(worker.container_name, undefined);
  assert.equal(worker.ports, undefined);
  const grace = Number(String(worker.stop_grace_period).replace(/s$/, ''));
  assert.ok(grace * 1000 > serviceConfig('worker').shutdownTimeoutMs, 'compose waits longer than SHUTDOWN_TIMEOUT_MS before SIGKILL');
});

test('the sample backends are started with options the CLI has', async () => {
  const help = await runCli(['sample-backend', '--help'], {});
  assert.equal(help.code, 0, help.stderr);
  for (const name of ['production', 'staging']) {
    const command = services[name]?.command as string[];
    assert.equal(command[0], 'sample-backend');
    for (const word of command.filter((w) => w.startsWith('--'))) assert.ok(help.stdout.includes(word), `${name}: sample-backend has ${word}`);
  }
  for (const name of ['ingress', 'worker']) assert.deepEqual(services[name]?.command, [name]);
});

test('every Envoy cluster address resolves to a compose service and its port', () => {
  const clusters = envoy.static_resources.clusters as Json[];
  assert.deepEqual(clusters.map((c) => c.name).sort(), ['mirrorplane_ingress', 'mirrorplane_ingress_h2', 'production']);
  for (const c of clusters) {
    assert.equal(c.type, 'STRICT_DNS', `${c.name}: resolves compose service names`);
    seconds(c.connect_timeout, `${c.name}.connect_timeout`);
    for (const endpoint of endpoints(c)) {
      const { address, port_value: port } = endpoint.address.socket_address;
      assert.ok(services[address], `${c.name}: ${address} is a compose service`);
      assert.equal(port, listeningPort(address), `${c.name}: ${address} listens on ${port}`);
    }
  }
  assert.equal(endpoints(cluster('production'))[0]?.address.socket_address.address, 'production');
  assert.equal(endpoints(cluster('mirrorplane_ingress'))[0]?.address.socket_address.address, 'ingress');
});

test('the route sends traffic to production and mirrors it to the ingress, at a runtime-adjustable share', () => {
  const r = route();
  assert.equal(r.cluster, 'production');
  seconds(r.timeout, 'route.timeout');
  const policies = r.request_mirror_policies as Json[];
  assert.equal(policies.length, 1);
  const mirror = policies[0] as Json;
  assert.equal(mirror.cluster, 'mirrorplane_ingress');
  assert.equal(endpoints(cluster(mirror.cluster))[0]?.address.socket_address.address, 'ingress', 'the mirror cluster is the ingress');
  assert.equal(mirror.runtime_fraction.default_value.numerator, 100, 'everything is mirrored by default');
  assert.equal(mirror.runtime_fraction.default_value.denominator, 'HUNDRED');
  assert.match(mirror.runtime_fraction.runtime_key, /^mirrorplane\./, 'the share has a runtime key');
  assert.ok(
    (envoy.layered_runtime.layers as Json[]).some((l) => 'admin_layer' in l),
    'the runtime key can be changed through the admin port',
  );
  // Envoy's -shadow host suffix is kept; the worker strips it when PRESERVE_HOST=true.
  assert.notEqual(mirror.disable_shadow_host_suffix_append, true);
});

test('gRPC goes to production over HTTP/2 and is mirrored to the same ingress port over h2c, guarded like the HTTP/1.1 mirror', () => {
  const r = grpcRoute();
  const plain = route();
  assert.equal(r.cluster, plain.cluster, 'the same production');
  assert.equal(seconds(r.timeout, 'grpc route timeout'), 0, 'no route timeout: streaming calls last as long as they last');
  assert.deepEqual(r.request_headers_to_remove, plain.request_headers_to_remove);
  const [mirror] = r.request_mirror_policies as Json[];
  const [plainMirror] = plain.request_mirror_policies as Json[];
  assert.equal(mirror?.cluster, 'mirrorplane_ingress_h2');
  assert.deepEqual(mirror?.runtime_fraction, plainMirror?.runtime_fraction, 'one runtime key sets the share of both');
  assert.deepEqual(mirror?.request_headers_mutations, plainMirror?.request_headers_mutations, 'the copy carries the ingress token');
  const h2 = cluster('mirrorplane_ingress_h2');
  const h1 = cluster('mirrorplane_ingress');
  assert.deepEqual(endpoints(h2), endpoints(h1), 'the same ingress and port: it tells h2c from HTTP/1.1 by the preface');
  const options = h2.typed_extension_protocol_options['envoy.extensions.upstreams.http.v3.HttpProtocolOptions'];
  assert.ok(options.explicit_http_config.http2_protocol_options, 'h2c with prior knowledge');
  const streams = Number(options.explicit_http_config.http2_protocol_options.max_concurrent_streams);
  const ingress = serviceConfig('ingress');
  assert.ok(streams > 0 && streams <= ingress.maxConcurrentStreams, "Envoy never opens more streams than the ingress's MAX_CONCURRENT_STREAMS");
  assert.ok(seconds(options.common_http_protocol_options.idle_timeout, 'idle_timeout') < 75);
  for (const key of ['circuit_breakers', 'outlier_detection', 'common_lb_config', 'connect_timeout'])
    assert.deepEqual(h2[key], h1[key], `${key} as the HTTP/1.1 mirror`);
  const production = cluster('production').typed_extension_protocol_options['envoy.extensions.upstreams.http.v3.HttpProtocolOptions'];
  assert.ok(production.use_downstream_protocol_config.http2_protocol_options, 'gRPC reaches production over HTTP/2');
  assert.ok(production.use_downstream_protocol_config.http_protocol_options, 'HTTP/1.1 stays HTTP/1.1');
});

test('x-request-id is kept from the client, made when missing, and returned on the response', () => {
  const hcm = connectionManager();
  assert.notEqual(hcm.generate_request_id, false);
  assert.equal(hcm.preserve_external_request_id, true);
  assert.equal(hcm.always_set_request_id_in_response, true);
  assert.ok((hcm.http_filters as Json[]).at(-1)?.name === 'envoy.filters.http.router', 'the router is the last filter');
});

test('the mirror cluster cannot cost production: short timeouts, circuit breakers, no retries, a failing ingress ejected', () => {
  const c = cluster('mirrorplane_ingress');
  assert.ok(seconds(c.connect_timeout, 'connect_timeout') <= 0.5, 'connect timeout at most 0.5 s');
  const options = c.typed_extension_protocol_options['envoy.extensions.upstreams.http.v3.HttpProtocolOptions'];
  assert.ok(seconds(options.common_http_protocol_options.max_stream_duration, 'max_stream_duration') <= 2, 'a copy is abandoned after 2 s at most');
  const idle = seconds(options.common_http_protocol_options.idle_timeout, 'idle_timeout');
  assert.ok(idle < 75, 'Envoy closes idle connections before the ingress does (its keep-alive is 75 s)');
  const threshold = (c.circuit_breakers.thresholds as Json[])[0] as Json;
  for (const key of ['max_connections', 'max_pending_requests', 'max_requests']) assert.ok(Number(threshold[key]) > 0, `circuit breaker ${key}`);
  assert.equal(threshold.max_retries, 0);
  // No active health check: the ingress's traffic port would record it as a mirrored request,
  // and its admin port stays on loopback. A failing ingress is ejected by outlier detection.
  assert.equal(c.health_checks, undefined);
  assert.ok(Number(c.outlier_detection.consecutive_5xx) > 0);
  assert.equal(c.outlier_detection.max_ejection_percent, 100);
  seconds(c.outlier_detection.base_ejection_time, 'base_ejection_time');
  assert.equal(c.common_lb_config.healthy_panic_threshold.value, 0, 'no panic routing to an ejected ingress');
  const production = cluster('production');
  assert.equal(production.circuit_breakers, undefined, "production keeps Envoy's defaults: the guards are for the mirror");
});

test("compose publishes Envoy's listener and admin port, and mounts the config Envoy is started with", () => {
  const service = services.envoy as Json;
  const ports = containerPorts(service);
  assert.ok(ports.includes(listener().address.socket_address.port_value), 'the listener is published');
  assert.ok(ports.includes(envoy.admin.address.socket_address.port_value), 'the admin port is published');
  const adminBinding = (service.ports as string[]).find((p) => p.endsWith(`:${envoy.admin.address.socket_address.port_value}`));
  assert.match(String(adminBinding), /^127\.0\.0\.1:/, 'the admin port is published on loopback only');
  const config = flag(service.command as string[], '-c') as string;
  assert.equal(mountedFile(service, config), './envoy/envoy.yaml');
  const healthcheck = (service.healthcheck.test as string[]).join(' ');
  assert.ok(healthcheck.includes(String(envoy.admin.address.socket_address.port_value)), 'the health check asks the admin port');
  for (const name of ['ingress', 'worker']) {
    const port = name === 'ingress' ? serviceConfig('ingress').adminPort : serviceConfig('worker').adminPort;
    assert.ok(
      (services[name]?.healthcheck.test as string[]).join(' ').includes(`:${port}/readyz`),
      `${name}: health check asks /readyz on its admin port ${port}`,
    );
  }
  for (const name of ['production', 'staging']) {
    assert.ok((services[name]?.healthcheck.test as string[]).join(' ').includes(`:${listeningPort(name)}/healthz`), `${name}: health check on its port`);
  }
});

test("the compose config file fixes how staging differs: its rule moves every path under staging's prefix", async () => {
  const config = serviceConfig('worker');
  assert.equal(config.rules.length, 1);
  const prefix = flag(services.staging?.command as string[], '--path-prefix') as string;
  assert.ok(prefix, 'staging serves under a path prefix');
  assert.equal(flag(services.production?.command as string[], '--path-prefix'), undefined, 'production does not');
  const stage = compileRules(config.rules, { origins: new Set(Object.keys(config.origins)) });
  for (const path of ['/orders', '/orders/ord_1?fields=item', '/']) {
    const mirrored: MirroredRequest = {
      method: 'GET',
      target: path,
      rawHeaders: ['Host', 'shop.example.com-shadow'],
      body: Buffer.alloc(0),
      receivedAt: 0,
      requestId: null,
      clientAddress: null,
    };
    const ctx: PipelineContext = { entryId: '1-0', attempt: 1, requestId: null, mirrored, rules: [], tags: {} };
    const request: OutgoingRequest = { method: 'GET', path, headers: ['Host', 'staging:8000'], body: Buffer.alloc(0), origin: 'default' };
    const out = (await stage.pre!(request, ctx)) as OutgoingRequest;
    assert.equal(out.path, `${prefix}${path}`, `${path} is replayed as ${prefix}${path}`);
  }
});

test('the Dockerfile builds one non-root image, pinned, with production dependencies only, that runs any role', () => {
  const from = [...dockerfile.matchAll(/^FROM\s+(\S+)/gm)].map((m) => m[1] as string);
  assert.ok(from.length >= 2, 'multi-stage');
  const nodeImage = /^ARG NODE_IMAGE=(\S+)/m.exec(dockerfile)?.[1];
  assert.match(String(nodeImage), /^node:\d+\.\d+\.\d+-/, 'the Node image is pinned to a release');
  for (const image of from) assert.ok(image === '${NODE_IMAGE}' || /:\d/.test(image), `FROM ${image} is pinned`);
  const runtime = dockerfile.slice(dockerfile.lastIndexOf('FROM '));
  assert.match(runtime, /npm ci --omit=dev/);
  assert.match(runtime, /^USER (?!root\b|0\b)\S+/m, 'runs as a non-root user');
  assert.match(runtime, /^ENTRYPOINT \["mirrorplane"\]/m);
  for (const workspace of rootPackage.workspaces) {
    assert.ok(runtime.includes(`COPY ${workspace}/package.json ${workspace}/`), `${workspace}/package.json is in the image`);
    assert.ok(runtime.includes(`/src/${workspace}/lib ${workspace}/lib`), `${workspace}/lib is copied from the build stage`);
  }
  const ignore = read('.dockerignore');
  for (const entry of ['**/node_modules', '**/lib', '.git']) assert.ok(ignore.split('\n').includes(entry), `.dockerignore has ${entry}`);
});

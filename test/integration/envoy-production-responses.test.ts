import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { parse } from 'yaml';
import { parseIntake } from '@mirrorplane/runtime';

// No Envoy binary runs here: this parses the variant that sends production's answers to the
// intake and cross-checks it with docker-compose.yml and with what the intake reads.
const root = fileURLToPath(new URL('../..', import.meta.url));
const envoy = parse(readFileSync(`${root}/envoy/envoy-production-responses.yaml`, 'utf8'));
const compose = parse(readFileSync(`${root}/docker-compose.yml`, 'utf8'));

type Any = Record<string, any>;

const manager: Any = envoy.static_resources.listeners[0].filter_chains[0].filters[0].typed_config;
const lua: string = manager.http_filters.find((f: Any) => f.name === 'envoy.filters.http.lua').typed_config.default_source_code.inline_string;

test('the Lua filter posts production answers asynchronously to a cluster that is the ingress admin port', () => {
  assert.match(lua, /httpCall\("mirrorplane_intake", intake, bytes, \d+, true\)/, 'asynchronous httpCall');
  const cluster: Any = envoy.static_resources.clusters.find((c: Any) => c.name === 'mirrorplane_intake');
  const address = cluster.load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.socket_address;
  assert.equal(address.address, 'ingress');
  assert.equal(String(address.port_value), compose.services.ingress.environment.ADMIN_PORT, 'the intake lives on the ingress admin port');
  assert.equal(cluster.circuit_breakers.thresholds[0].max_retries, 0);
  assert.equal(manager.http_filters.at(-1).name, 'envoy.filters.http.router', 'the router stays last');
});

test('the headers the Lua sends are the ones the intake reads', () => {
  const names = [...lua.matchAll(/\["(x-mirrorplane-[a-z-]+|content-type)"\]/g)].map((m) => m[1] as string);
  assert.deepEqual(
    new Set(names),
    new Set(['x-mirrorplane-request-id', 'x-mirrorplane-status', 'x-mirrorplane-method', 'x-mirrorplane-path', 'x-mirrorplane-headers']),
  );
  // Production's own headers travel in x-mirrorplane-headers, only those it sent.
  assert.match(lua, /ipairs\(\{ "content-type", "content-encoding", "location" \}\)/);
  const parsed = parseIntake(
    [
      'x-mirrorplane-request-id',
      'r1',
      'x-mirrorplane-status',
      '201',
      'x-mirrorplane-method',
      'POST',
      'x-mirrorplane-path',
      '/orders',
      'x-mirrorplane-headers',
      '["content-type","application/json","location","/orders/ord_1"]',
    ],
    Buffer.from('{"id":"ord_1"}'),
  );
  assert.deepEqual(
    { ...parsed, body: parsed.body.toString() },
    {
      requestId: 'r1',
      status: 201,
      method: 'POST',
      path: '/orders',
      headers: ['content-type', 'application/json', 'location', '/orders/ord_1'],
      body: '{"id":"ord_1"}',
    },
  );
});

test('only the ID routes pay for buffering production bodies', () => {
  const routes: Any[] = manager.route_config.virtual_hosts[0].routes;
  const catchAll = routes.find((r) => r.match.prefix === '/') as Any;
  assert.equal(catchAll.typed_per_filter_config['envoy.filters.http.lua'].disabled, true);
  for (const r of routes) assert.equal(r.route.request_mirror_policies[0].cluster, 'mirrorplane_ingress', `${r.match.prefix} is mirrored`);
});

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ServerResponse } from 'node:http';
import { SampleBackend } from '@mirrorplane/sample-backend';
import { RecordingServer, RedisServer, Stack, freePort, header, requestHead, sendRaw, waitFor, type Received } from '../helpers/index.js';

/**
 * Production (the sample backend, ids ord_812…) and staging (ids stg_17…, slow to create)
 * generate different IDs. The test plays the mirror proxy: each request goes to production,
 * a copy to the ingress's traffic port, and production's answer to the ingress's admin port.
 */

let redis: RedisServer;
let production: SampleBackend;
let productionPort: number;
let dir: string;

before(async () => {
  redis = await RedisServer.start();
  production = new SampleBackend({ name: 'production', idPrefix: 'ord_', firstId: 812 });
  productionPort = await production.listen(0);
  dir = mkdtempSync(join(tmpdir(), 'mp-idmap-'));
});

after(async () => {
  await production?.close();
  await redis?.close();
  rmSync(dir, { recursive: true, force: true });
});

interface StagingApp {
  server: RecordingServer;
  /** The staging ID created for each create request, by x-request-id. */
  created: Map<string, string>;
  statuses: Map<Received, number>;
  orders: Map<string, Record<string, unknown>>;
}

/** Staging: same API, its own IDs, creates answered after `createDelayMs`; PUT answers carry an extra field. */
async function startStaging(createDelayMs: number): Promise<StagingApp> {
  const app: Omit<StagingApp, 'server'> = { created: new Map(), statuses: new Map(), orders: new Map() };
  let next = 17;
  const send = (req: Received, res: ServerResponse, status: number, body: unknown) => {
    app.statuses.set(req, status);
    const text = JSON.stringify(body);
    res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) }).end(text);
  };
  const server = await RecordingServer.start((req, res) => {
    const path = req.url.split('?')[0] as string;
    const input = req.body.length > 0 ? (JSON.parse(req.body.toString()) as Record<string, unknown>) : {};
    if (req.method === 'POST' && path === '/orders') {
      setTimeout(() => {
        const id = `stg_${next++}`;
        app.orders.set(id, { ...input, id });
        app.created.set(header(req.rawHeaders, 'x-request-id') as string, id);
        send(req, res, 201, { ...input, id });
      }, createDelayMs);
      return;
    }
    const id = /^\/orders\/([^/]+)$/.exec(path)?.[1] ?? '';
    const order = app.orders.get(id);
    if (!order) return send(req, res, 404, { error: `no order ${id}` });
    if (req.method === 'GET') return send(req, res, 200, order);
    if (req.method === 'PUT') {
      app.orders.set(id, { ...input, id });
      return send(req, res, 200, { ...input, id, version: 2 });
    }
    if (req.method === 'DELETE') {
      app.orders.delete(id);
      return send(req, res, 200, { deleted: id });
    }
    send(req, res, 405, {});
  });
  return { ...app, server };
}

function writeConfig(name: string, waitLimitMs: number): string {
  const path = join(dir, name);
  writeFileSync(
    path,
    [
      'productionResponses:',
      '  ttlMs: 600000',
      'idMapping:',
      `  waitLimitMs: ${waitLimitMs}`,
      '  waitDelayMs: 100',
      '  kinds:',
      '    - name: order',
      '      learn:',
      '        - match: { methods: [POST], path: "^/orders$" }',
      '          from: { json: id }',
      '      use:',
      '        - path: "^/orders/(?<id>[^/]+)$"',
      'compare:',
      '  headers: [content-type]',
      '',
    ].join('\n'),
  );
  return path;
}

class Proxy {
  #n = 0;
  constructor(
    private readonly stack: Stack,
    private readonly adminPort: number,
    private readonly tag: string,
  ) {}

  /** One request through "the proxy": production answers; the mirror copy and production's answer go to Mirrorplane. */
  async request(method: string, path: string, body: unknown, responseFirst: boolean): Promise<{ requestId: string; json: Record<string, unknown> }> {
    const requestId = `${this.tag}-${++this.#n}`;
    const payload = body === undefined ? Buffer.alloc(0) : Buffer.from(JSON.stringify(body));
    const headers = ['Host', 'shop.example.com', 'X-Request-ID', requestId, ...(payload.length ? ['Content-Type', 'application/json'] : [])];
    const res = await fetch(`http://127.0.0.1:${productionPort}${path}`, {
      method,
      headers: { 'x-request-id': requestId, ...(payload.length ? { 'content-type': 'application/json' } : {}) },
      ...(payload.length ? { body: payload } : {}),
    });
    const text = Buffer.from(await res.arrayBuffer());
    const productionHeaders: string[] = [];
    res.headers.forEach((value, name) => productionHeaders.push(name, value));
    const mirror = async () => {
      const r = await sendRaw(this.stack.ingressPort, requestHead(method, path, headers, payload.length || undefined), payload);
      assert.equal(r.status, 200);
    };
    const intake = async () => {
      const r = await fetch(`http://127.0.0.1:${this.adminPort}/production-responses`, {
        method: 'POST',
        headers: {
          'x-mirrorplane-request-id': requestId,
          'x-mirrorplane-status': String(res.status),
          'x-mirrorplane-method': method,
          'x-mirrorplane-path': path,
          'x-mirrorplane-headers': JSON.stringify(productionHeaders),
        },
        body: text,
      });
      assert.equal(r.status, 204, await r.text());
    };
    if (responseFirst) {
      await intake();
      await mirror();
    } else {
      await mirror();
      await intake();
    }
    return { requestId, json: text.length ? (JSON.parse(text.toString()) as Record<string, unknown>) : {} };
  }
}

async function workerMetric(ports: number[], line: string): Promise<number> {
  let sum = 0;
  for (const port of ports) {
    const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
    const found = text.split('\n').find((l) => l.startsWith(line));
    sum += found ? Number(found.split(' ').pop()) : 0;
  }
  return sum;
}

test('create → read → update → delete chains reach staging with staging IDs, across three workers', async () => {
  const staging = await startStaging(400);
  const adminPort = await freePort();
  const stack = await Stack.start({
    redis,
    stagingUrl: staging.server.url,
    workers: 0,
    env: { MIRRORPLANE_CONFIG: writeConfig('chains.yaml', 30_000) },
    ingressEnv: { ADMIN_PORT: String(adminPort) },
  });
  const workerPorts = [await freePort(), await freePort(), await freePort()];
  try {
    for (const port of workerPorts) await stack.addWorker({ ADMIN_PORT: String(port) });
    const proxy = new Proxy(stack, adminPort, 'chain');
    const chains = await Promise.all(
      Array.from({ length: 6 }, async (_, i) => {
        // Half the chains send production's answer before the mirrored request, half after.
        const first = i % 2 === 0;
        const create = await proxy.request('POST', '/orders', { item: `book-${i}` }, first);
        const productionId = String(create.json.id);
        // Each follow-up is sent once the previous one reached staging: workers replay in
        // parallel, so without the pause a DELETE could overtake the PUT of the same order.
        const arrived = (requestId: string) =>
          waitFor(`${requestId} at staging`, () => staging.server.received.some((r) => header(r.rawHeaders, 'x-request-id') === requestId), 60_000);
        const read = await proxy.request('GET', `/orders/${productionId}`, undefined, !first);
        await arrived(read.requestId);
        const update = await proxy.request('PUT', `/orders/${productionId}`, { item: `book-${i}`, qty: 2 }, first);
        await arrived(update.requestId);
        const remove = await proxy.request('DELETE', `/orders/${productionId}`, undefined, !first);
        return { productionId, create, followUps: [read, update, remove] };
      }),
    );
    await waitFor('24 replays', () => staging.server.received.length >= 24, 90_000);
    for (const chain of chains) {
      const stagingId = staging.created.get(chain.create.requestId);
      assert.ok(stagingId, `staging created an order for ${chain.create.requestId}`);
      assert.notEqual(stagingId, chain.productionId);
      for (const followUp of chain.followUps) {
        const got = staging.server.received.filter((r) => header(r.rawHeaders, 'x-request-id') === followUp.requestId);
        assert.equal(got.length, 1);
        assert.equal(got[0]!.url, `/orders/${stagingId}`, `${followUp.requestId} carries the staging ID`);
      }
      const remove = staging.server.received.find((r) => header(r.rawHeaders, 'x-request-id') === chain.followUps[2]!.requestId)!;
      assert.equal(staging.statuses.get(remove), 200, 'the delete found the object staging created');
    }
    assert.equal(staging.orders.size, 0, 'every staging order was deleted');
    assert.equal(await workerMetric(workerPorts, 'mirrorplane_worker_id_mappings_total{kind="order",outcome="unmapped_after_timeout"}'), 0);
    assert.ok(
      (await workerMetric(workerPorts, 'mirrorplane_worker_id_mappings_total{kind="order",outcome="waiting"}')) > 0,
      'slow creates made follow-ups wait',
    );
    assert.equal(await workerMetric(workerPorts, 'mirrorplane_worker_id_mappings_total{kind="order",outcome="mapped"}'), 18);

    // Comparison: mapped IDs compare equal; staging's PUT answers carry a field production's do not.
    const summary = await waitFor('comparisons of all 24', async () => {
      const r = await stack.cli(['diff', 'summary', '--json']);
      const rows = JSON.parse(r.stdout) as { route: string; compared: number; mismatches: number; paths: { path: string; count: number }[] }[];
      return rows.reduce((n, row) => n + row.compared, 0) === 24 ? rows : null;
    });
    const byRoute = Object.fromEntries(summary.map((r) => [r.route, r]));
    assert.deepEqual(Object.keys(byRoute).sort(), ['DELETE /orders/:id', 'GET /orders/:id', 'POST /orders', 'PUT /orders/:id']);
    assert.equal(byRoute['PUT /orders/:id']!.mismatches, 6);
    assert.deepEqual(byRoute['PUT /orders/:id']!.paths, [{ path: '$.version', count: 6 }]);
    for (const route of ['POST /orders', 'GET /orders/:id', 'DELETE /orders/:id']) {
      assert.equal(byRoute[route]!.mismatches, 0, `${route} matches production once IDs are mapped`);
    }
    const table = await stack.cli(['diff', 'summary']);
    assert.match(table.stdout, /PUT \/orders\/:id\s+6\s+6\s+100\.0%/);
  } finally {
    await stack.close();
    await staging.server.close();
  }
});

test('past the wait limit an entry is replayed unmapped and counted; unknown IDs pass through', async () => {
  const staging = await startStaging(4000);
  const adminPort = await freePort();
  const workerPort = await freePort();
  const stack = await Stack.start({
    redis,
    stagingUrl: staging.server.url,
    workers: 0,
    env: { MIRRORPLANE_CONFIG: writeConfig('limit.yaml', 500) },
    ingressEnv: { ADMIN_PORT: String(adminPort) },
  });
  try {
    await stack.addWorker({ ADMIN_PORT: String(workerPort) });
    const proxy = new Proxy(stack, adminPort, 'limit');
    const create = await proxy.request('POST', '/orders', { item: 'slow' }, true);
    const read = await proxy.request('GET', `/orders/${String(create.json.id)}`, undefined, true);
    const legacy = await proxy.request('GET', '/orders/ord_1', undefined, true);
    await waitFor(
      'the read to be replayed unmapped',
      () => staging.server.received.some((r) => header(r.rawHeaders, 'x-request-id') === read.requestId),
      30_000,
    );
    const got = staging.server.received.find((r) => header(r.rawHeaders, 'x-request-id') === read.requestId)!;
    assert.equal(got.url, `/orders/${String(create.json.id)}`, 'sent with the production ID');
    assert.equal(await workerMetric([workerPort], 'mirrorplane_worker_id_mappings_total{kind="order",outcome="unmapped_after_timeout"}'), 1);
    const old = await waitFor('the legacy read', () => staging.server.received.find((r) => header(r.rawHeaders, 'x-request-id') === legacy.requestId));
    assert.equal(old.url, '/orders/ord_1', 'an ID never seen in a production response passes through untouched');
    await waitFor('the slow create', () => staging.created.size === 1, 30_000);
  } finally {
    await stack.close();
    await staging.server.close();
  }
});

test('the intake refuses what it cannot use, with the reason', async () => {
  const adminPort = await freePort();
  const stack = await Stack.start({
    redis,
    stagingUrl: 'http://127.0.0.1:9',
    workers: 0,
    env: { MIRRORPLANE_CONFIG: writeConfig('intake.yaml', 500) },
    ingressEnv: { ADMIN_PORT: String(adminPort) },
  });
  try {
    const url = `http://127.0.0.1:${adminPort}/production-responses`;
    const missing = await fetch(url, { method: 'POST', body: 'x' });
    assert.equal(missing.status, 400);
    assert.match(await missing.text(), /x-mirrorplane-request-id: required/);
    const status = await fetch(url, { method: 'POST', headers: { 'x-mirrorplane-request-id': 'r', 'x-mirrorplane-status': 'ok' }, body: 'x' });
    assert.equal(status.status, 400);
    assert.match(await status.text(), /x-mirrorplane-status: expected the production status/);
    const ok = await fetch(url, {
      method: 'POST',
      headers: { 'x-mirrorplane-request-id': 'r1', 'x-mirrorplane-status': '200', 'content-type': 'text/plain' },
      body: 'hello',
    });
    assert.equal(ok.status, 204);
    const client = redis.client();
    try {
      const stored = await client.hgetall(`{${stack.env.MIRRORPLANE_PREFIX}}:prod:r1`);
      assert.deepEqual({ s: stored.s, b: stored.b, h: stored.h }, { s: '200', b: 'hello', h: 'content-type\ntext/plain' });
      assert.ok((await client.pttl(`{${stack.env.MIRRORPLANE_PREFIX}}:prod:r1`)) > 0, 'stored with a TTL');
    } finally {
      client.disconnect();
    }
  } finally {
    await stack.close();
  }
});

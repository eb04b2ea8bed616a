import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import * as zlib from 'node:zlib';
import express from 'express';
import { Redis } from 'ioredis';
import { mirrorplaneResponses } from '../../examples/mirrorplane-middleware.mjs';
import { productionKeys } from '@mirrorplane/core';
import { RecordingServer, RedisServer, Stack, freePort, header, requestHead, sendRaw, waitFor, type Received, useStack } from '../helpers/index.js';
import { startNginx } from '../helpers/nginx.js';
import { formatDiffSummary } from '../../apps/cli/src/diff.js';

/**
 * The whole path as it runs for users: a client talks to production through real nginx, which
 * mirrors every request to the ingress; production is a node:http app (headers by writeHead,
 * or by setHeader) or an Express app, each posting its answers with the middleware the docs
 * ship (examples/mirrorplane-middleware.mjs); staging creates its own IDs and answers gzip,
 * deflate or br. Production's answer is forced to reach Mirrorplane before staging's replay
 * finishes, after it, or left to race.
 */

type Mode = 'before' | 'after' | 'race';
type Style = 'writehead' | 'setheader' | 'express';
const MODES: Mode[] = ['before', 'after', 'race'];
const STYLES: Style[] = ['writehead', 'setheader', 'express'];
const JSON_TYPE = 'application/json; charset=utf-8';

let redis: RedisServer;
let client: Redis;
let dir: string;

useStack({ dir: 'mp-prodresp-' }, (s) => {
  redis = s.redis;
  client = s.client();
  dir = s.dir;
});

function modeOf(requestId: string | undefined): Mode {
  return (requestId?.split('-')[0] ?? 'race') as Mode;
}

/** The order API of production, one implementation per style, sharing one store and one counter. */
function productionApp(intake: string, keys: () => ReturnType<typeof productionKeys>): { server: Server; posted: string[]; errors: unknown[] } {
  const orders = new Map<string, Record<string, unknown>>();
  let next = 812;
  const posted: string[] = [];
  const errors: unknown[] = [];
  // The middleware's fetch, wrapped so the test decides when production's answer reaches Mirrorplane.
  const timedFetch: typeof fetch = async (url, init) => {
    const requestId = (init?.headers as Record<string, string>)['x-mirrorplane-request-id']!;
    if (modeOf(requestId) === 'after') {
      // After: only once the worker kept staging's answer, waiting for production's.
      await waitFor(`staging's answer to ${requestId} kept`, async () => (await client.exists(keys().stagingAnswer(requestId))) === 1, 60_000);
    }
    const answer = await fetch(url, init);
    posted.push(requestId);
    return answer;
  };
  const capture = mirrorplaneResponses({ intake, fetch: timedFetch, onError: (e) => errors.push(e) });
  const readJson = async (req: IncomingMessage): Promise<Record<string, unknown>> => {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    return chunks.length ? (JSON.parse(Buffer.concat(chunks).toString()) as Record<string, unknown>) : {};
  };
  const route = (method: string, path: string, input: Record<string, unknown>): [number, unknown] => {
    if (method === 'POST' && path === '/orders') {
      const id = `ord_${next++}`;
      orders.set(id, { ...input, id });
      return [201, { ...input, id }];
    }
    const id = /^\/orders\/([^/]+)$/.exec(path)?.[1] ?? '';
    const order = orders.get(id);
    if (!order) return [404, { error: 'no such order' }];
    if (method === 'GET') return [200, order];
    if (method === 'PUT') {
      orders.set(id, { ...input, id });
      return [200, { ...input, id }];
    }
    if (method === 'DELETE') {
      orders.delete(id);
      return [200, { deleted: id }];
    }
    return [405, {}];
  };
  // Plain node:http, headers passed to writeHead (they never show in res.getHeaders()).
  const writeHeadStyle = async (req: IncomingMessage, res: ServerResponse) => {
    capture(req, res);
    const [status, body] = route(req.method!, req.url!.split('?')[0]!, await readJson(req));
    const text = JSON.stringify(body);
    res.writeHead(status, {
      'Content-Type': JSON_TYPE,
      'Content-Length': Buffer.byteLength(text),
      Location: status === 201 ? `/orders/${(body as { id: string }).id}` : '',
    });
    res.end(text);
  };
  // Plain node:http, headers by setHeader, body in two writes.
  const setHeaderStyle = async (req: IncomingMessage, res: ServerResponse) => {
    capture(req, res);
    const [status, body] = route(req.method!, req.url!.split('?')[0]!, await readJson(req));
    const text = JSON.stringify(body);
    res.statusCode = status;
    res.setHeader('content-type', JSON_TYPE);
    res.write(text.slice(0, 5));
    res.end(text.slice(5), 'utf8');
  };
  const app = express();
  app.use(capture);
  app.use(express.json());
  app.all(/.*/, (req, res) => {
    const [status, body] = route(req.method, req.path, (req.body as Record<string, unknown> | undefined) ?? {});
    res.status(status).json(body);
  });
  const server = createServer((req, res) => {
    const style = (req.headers['x-request-id'] as string | undefined)?.split('-')[1] as Style | undefined;
    if (style === 'express') app(req, res);
    else if (style === 'setheader') void setHeaderStyle(req, res);
    else void writeHeadStyle(req, res);
  });
  return { server, posted, errors };
}

interface StagingApp {
  server: RecordingServer;
  created: Map<string, string>;
  orders: Map<string, Record<string, unknown>>;
  codings: Map<string, number>;
  /** Request ids staging has answered. */
  answered: Set<string>;
}

/** Staging: its own IDs, slow creates, compressed answers (gzip, deflate, br in turn), PUT answers with an extra field. */
async function startStaging(keys: () => ReturnType<typeof productionKeys>): Promise<StagingApp> {
  const app: Omit<StagingApp, 'server'> = { created: new Map(), orders: new Map(), codings: new Map(), answered: new Set() };
  let next = 17;
  let turn = 0;
  const codings: [string, (b: Buffer) => Buffer][] = [
    ['gzip', (b) => zlib.gzipSync(b)],
    ['deflate', (b) => zlib.deflateSync(b)],
    ['br', (b) => zlib.brotliCompressSync(b)],
  ];
  const server = await RecordingServer.start(async (req, res) => {
    const requestId = header(req.rawHeaders, 'x-request-id');
    if (modeOf(requestId) === 'before' && requestId) {
      // Before: staging answers only once production's answer is stored.
      await waitFor(`production's answer to ${requestId}`, async () => (await client.exists(keys().response(requestId))) === 1, 60_000);
    }
    const path = req.url.split('?')[0] as string;
    const input = req.body.length > 0 ? (JSON.parse(req.body.toString()) as Record<string, unknown>) : {};
    let status = 404;
    let body: unknown = { error: 'no such order' };
    if (req.method === 'POST' && path === '/orders') {
      await new Promise((r) => setTimeout(r, 300));
      const id = `stg_${next++}`;
      app.orders.set(id, { ...input, id });
      app.created.set(requestId ?? '', id);
      [status, body] = [201, { ...input, id }];
    } else {
      const id = /^\/orders\/([^/]+)$/.exec(path)?.[1] ?? '';
      const order = app.orders.get(id);
      if (order && req.method === 'GET') [status, body] = [200, order];
      if (order && req.method === 'PUT') {
        app.orders.set(id, { ...input, id });
        [status, body] = [200, { ...input, id, version: 2 }];
      }
      if (order && req.method === 'DELETE') {
        app.orders.delete(id);
        [status, body] = [200, { deleted: id }];
      }
    }
    const [name, encode] = codings[turn++ % codings.length]!;
    app.codings.set(name, (app.codings.get(name) ?? 0) + 1);
    const coded = encode(Buffer.from(JSON.stringify(body)));
    app.answered.add(requestId ?? '');
    res.writeHead(status, { 'content-type': JSON_TYPE, 'content-encoding': name, 'content-length': coded.length }).end(coded);
  });
  return { ...app, server };
}

function writeConfig(): string {
  const path = join(dir, 'mirrorplane.yaml');
  writeFileSync(
    path,
    [
      'idMapping:',
      '  waitLimitMs: 30000',
      '  waitDelayMs: 50',
      '  kinds:',
      '    - name: order',
      '      learn:',
      '        - match: { methods: [POST], path: "^/orders$" }',
      '          from: { json: id }',
      '      use:',
      '        - path: "^/orders/(?<id>[^/]+)$"',
      '        - query: order_id',
      'compare:',
      '  headers: [content-type]',
      '',
    ].join('\n'),
  );
  return path;
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

test('chains through nginx: every order of arrival, every middleware style, compressed staging answers — all mapped, exact comparisons', async () => {
  const adminPort = await freePort();
  let keys = productionKeys('unset');
  const staging = await startStaging(() => keys);
  const stack = await Stack.start({
    redis,
    stagingUrl: staging.server.url,
    workers: 0,
    env: { MIRRORPLANE_CONFIG: writeConfig(), WORKER_CONCURRENCY: '8' },
    ingressEnv: { ADMIN_PORT: String(adminPort) },
  });
  keys = productionKeys(stack.env.MIRRORPLANE_PREFIX!);
  const production = productionApp(`http://127.0.0.1:${adminPort}/production-responses`, () => keys);
  await new Promise<void>((r) => production.server.listen(0, '127.0.0.1', r));
  const productionPort = (production.server.address() as { port: number }).port;
  const nginx = await startNginx({ productionPort, mirrorPort: stack.ingressPort });
  const workerPorts = [await freePort(), await freePort(), await freePort()];
  try {
    for (const port of workerPorts) await stack.addWorker({ ADMIN_PORT: String(port) });
    const arrived = (requestId: string) => waitFor(`${requestId} answered by staging`, () => staging.answered.has(requestId), 60_000);
    const call = async (requestId: string, method: string, path: string, body?: unknown) => {
      const res = await fetch(`${nginx.url}${path}`, {
        method,
        headers: { 'x-request-id': requestId, 'accept-encoding': 'gzip, deflate, br', ...(body !== undefined && { 'content-type': 'application/json' }) },
        ...(body !== undefined && { body: JSON.stringify(body) }),
      });
      return { status: res.status, json: (await res.json()) as Record<string, unknown> };
    };
    // Nine chains: each order of arrival with each middleware style, all at once.
    const chains = await Promise.all(
      MODES.flatMap((mode) =>
        STYLES.map(async (style) => {
          const tag = `${mode}-${style}`;
          const create = await call(`${tag}-create`, 'POST', '/orders', { item: tag });
          assert.equal(create.status, 201);
          const productionId = String(create.json.id);
          // The read follows the create at once: it reaches the worker long before staging created its twin.
          const read = await call(`${tag}-read`, 'GET', `/orders/${productionId}`);
          assert.equal(read.status, 200);
          // Update and delete wait for the previous follow-up at staging: replays run in parallel,
          // and a DELETE overtaking a PUT of the same order is a different (documented) matter.
          await arrived(`${tag}-read`);
          assert.equal((await call(`${tag}-update`, 'PUT', `/orders/${productionId}`, { item: tag, qty: 2 })).status, 200);
          await arrived(`${tag}-update`);
          assert.equal((await call(`${tag}-delete`, 'DELETE', `/orders/${productionId}`)).status, 200);
          return { tag, productionId };
        }),
      ),
    );
    await waitFor('36 replays', () => (staging.server.received.length >= 36 ? true : null), 120_000);
    for (const { tag, productionId } of chains) {
      const stagingId = staging.created.get(`${tag}-create`);
      assert.ok(stagingId, `staging created the order of ${tag}`);
      for (const step of ['read', 'update', 'delete']) {
        const got = staging.server.received.filter((r: Received) => header(r.rawHeaders, 'x-request-id') === `${tag}-${step}`);
        assert.equal(got.length, 1, `${tag}-${step} replayed once`);
        assert.equal(got[0]!.url, `/orders/${stagingId}`, `${tag}-${step} carries the staging ID, not ${productionId}`);
      }
    }
    // (A replay counts as received on arrival; a `before` one is answered once production's answer is in.)
    await waitFor('every staging order deleted', () => (staging.orders.size === 0 ? true : null), 60_000);
    for (const name of ['gzip', 'deflate', 'br']) assert.ok((staging.codings.get(name) ?? 0) >= 12, `staging answered ${name}`);
    await waitFor('36 production answers posted', () => (production.posted.length >= 36 ? true : null), 60_000);
    assert.deepEqual(production.errors, []);

    await waitFor(
      'comparisons of all 36',
      async () => {
        const rows = JSON.parse((await stack.cli(['diff', 'summary', '--json'])).stdout) as { compared: number }[];
        return rows.reduce((n, row) => n + row.compared, 0) >= 36 ? true : null;
      },
      60_000,
    );
    const output = (await stack.cli(['diff', 'summary'])).stdout;
    // Human output opens with the context line (which Redis, which prefix), then the table.
    assert.match(output, /^Redis redis:\/\/127\.0\.0\.1:\d+ {2}prefix \S+\n\n/);
    const summary = output.replace(/^Redis .*\n\n/, '');
    // Exact figures: the one real difference (staging's PUT adds `version`), nothing else —
    // not the compressed bodies, not the IDs, whichever side arrived first.
    assert.equal(
      summary,
      formatDiffSummary([
        { route: 'PUT /orders/:id', compared: 9, mismatches: 9, mismatchRate: 1, paths: [{ path: '$.version', count: 9 }] },
        { route: 'DELETE /orders/:id', compared: 9, mismatches: 0, mismatchRate: 0, paths: [] },
        { route: 'GET /orders/:id', compared: 9, mismatches: 0, mismatchRate: 0, paths: [] },
        { route: 'POST /orders', compared: 9, mismatches: 0, mismatchRate: 0, paths: [] },
      ]),
    );
    assert.equal(await workerMetric(workerPorts, 'mirrorplane_worker_id_mappings_total{kind="order",outcome="unmapped_after_timeout"}'), 0);
    assert.equal(await workerMetric(workerPorts, 'mirrorplane_worker_id_mappings_total{kind="order",outcome="unknown"}'), 0);
    assert.equal(await workerMetric(workerPorts, 'mirrorplane_worker_id_mappings_total{kind="order",outcome="mapped"}'), 27);
    assert.ok(
      (await workerMetric(workerPorts, 'mirrorplane_worker_id_mappings_total{kind="order",outcome="waiting"}')) > 0,
      'immediate reads waited for their creates',
    );
    assert.equal(await workerMetric(workerPorts, 'mirrorplane_worker_body_decodings_total{side="staging",outcome="corrupt"}'), 0);

    // Malformed escapes: replayed as sent, the ID beside them mapped; nothing fails.
    const { productionId } = chains[0]!;
    const stagingId = staging.created.get(`${chains[0]!.tag}-create`)!;
    for (const [requestId, target] of [
      ['race-x-bad1', '/orders/%E0%A4%A/items'],
      ['race-x-bad2', `/search?order_id=${productionId}&q=50%off`],
      ['race-x-bad3', '/orders/%E0%A4%A'],
    ]) {
      const r = await sendRaw(stack.ingressPort, requestHead('GET', target!, ['Host', 'shop.example.com', 'X-Request-ID', requestId!]));
      assert.equal(r.status, 200);
    }
    await waitFor(
      'the malformed requests at staging',
      () => ['race-x-bad1', 'race-x-bad2', 'race-x-bad3'].every((id) => staging.server.received.some((r) => header(r.rawHeaders, 'x-request-id') === id)),
      60_000,
    );
    const urlOf = (id: string) => staging.server.received.find((r) => header(r.rawHeaders, 'x-request-id') === id)!.url;
    assert.equal(urlOf('race-x-bad1'), '/orders/%E0%A4%A/items');
    assert.equal(urlOf('race-x-bad2'), `/search?order_id=${stagingId}&q=50%off`);
    assert.equal(urlOf('race-x-bad3'), '/orders/%E0%A4%A');
    const status = await stack.status();
    assert.equal(status.failed, 0, 'no entry failed');
    // An ID never seen, no create in flight: sent as it came, and counted where operators look.
    const counted = await waitFor('unknown IDs counted', async () => {
      const r = await stack.cli(['diff', 'summary']);
      return r.stdout.includes('ids order:') ? r.stdout : null;
    });
    assert.match(counted, /^ids order: 0 unmapped after waiting, 1 unknown \(sent as they came\)$/m);
  } finally {
    await nginx.stop();
    await stack.close();
    await new Promise((r) => production.server.close(r));
    await staging.server.close();
  }
});

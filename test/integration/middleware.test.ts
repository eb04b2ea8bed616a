import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { gzipSync } from 'node:zlib';
import express from 'express';
import { mirrorplaneResponses } from '../../examples/mirrorplane-middleware.mjs';
import { parseIntake } from '@mirrorplane/runtime';
import { waitFor } from '../helpers/index.js';

/**
 * The shipped middleware (examples/mirrorplane-middleware.mjs) in real node:http and Express
 * servers, each header style and body-writing style; what it posts is read back with the
 * intake's own parser, so the two cannot drift apart.
 */

interface Posted {
  url: string;
  headers: Record<string, string>;
  body: Buffer;
}

async function serve(handler: (req: IncomingMessage, res: ServerResponse) => void, options: Record<string, unknown> = {}) {
  const posted: Posted[] = [];
  const errors: unknown[] = [];
  const fakeFetch = (async (url: string, init: { headers: Record<string, string>; body: Buffer }) => {
    posted.push({ url, headers: init.headers, body: Buffer.from(init.body) });
    return new Response(null, { status: 204 });
  }) as unknown as typeof fetch;
  const capture = mirrorplaneResponses({ intake: 'http://intake.test/production-responses', fetch: fakeFetch, onError: (e) => errors.push(e), ...options });
  const server = createServer((req, res) => {
    capture(req, res);
    handler(req, res);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const url = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
  return { posted, errors, url, close: () => new Promise((r) => server.close(r)) };
}

function intakeView(p: Posted) {
  const raw = Object.entries(p.headers).flat();
  return parseIntake(raw, p.body);
}

const styles: [string, (req: IncomingMessage, res: ServerResponse) => void][] = [
  ['writeHead(status, object)', (_req, res) => res.writeHead(201, { 'Content-Type': 'application/json', Location: '/orders/ord_1' }).end('{"id":"ord_1"}')],
  [
    'writeHead(status, message, array)',
    (_req, res) => {
      res.writeHead(201, 'Made', ['Content-Type', 'application/json', 'Location', '/orders/ord_1']);
      res.end(Buffer.from('{"id":"ord_1"}'));
    },
  ],
  [
    'setHeader then writeHead(status)',
    (_req, res) => {
      res.setHeader('content-type', 'application/json');
      res.setHeader('location', '/orders/ord_1');
      res.writeHead(201);
      res.write('{"id":');
      res.end('"ord_1"}');
    },
  ],
  [
    'setHeader and writeHead both',
    (_req, res) => {
      res.setHeader('content-type', 'text/plain');
      res.writeHead(201, { 'content-type': 'application/json', location: '/orders/ord_1' });
      res.end('{"id":"ord_1"}', 'utf8', () => {});
    },
  ],
  [
    'statusCode and setHeader, latin1 write',
    (_req, res) => {
      res.statusCode = 201;
      res.setHeader('Content-Type', 'application/json');
      res.setHeader('Location', '/orders/ord_1');
      res.write('{"id":"ord_1"}', 'latin1');
      res.end();
    },
  ],
];

for (const [name, handler] of styles) {
  test(`node:http, ${name}: status, headers, body and content type reach the intake`, async () => {
    const app = await serve(handler);
    try {
      const res = await fetch(`${app.url}/orders?x=1`, { method: 'POST', headers: { 'x-request-id': 'r-1' }, body: '{}' });
      assert.equal(res.status, 201);
      assert.equal(await res.text(), '{"id":"ord_1"}');
      await waitFor('the post', () => (app.posted.length === 1 ? true : null));
      const got = intakeView(app.posted[0]!);
      assert.equal(got.requestId, 'r-1');
      assert.equal(got.status, 201);
      assert.equal(got.method, 'POST');
      assert.equal(got.path, '/orders?x=1');
      assert.equal(got.body.toString(), '{"id":"ord_1"}');
      assert.equal(app.posted[0]!.headers['content-type'], 'application/json');
      const h = Object.fromEntries(Array.from({ length: got.headers.length / 2 }, (_, i) => [got.headers[2 * i], got.headers[2 * i + 1]]));
      assert.equal(h['content-type'], 'application/json');
      assert.equal(h.location, '/orders/ord_1');
      assert.deepEqual(app.errors, []);
    } finally {
      await app.close();
    }
  });
}

test('Express: res.json, res.send, originalUrl under a mounted router; set-cookie never leaves', async () => {
  const posted: Posted[] = [];
  const fakeFetch = (async (url: string, init: { headers: Record<string, string>; body: Buffer }) => {
    posted.push({ url, headers: init.headers, body: Buffer.from(init.body) });
    return new Response(null, { status: 204 });
  }) as unknown as typeof fetch;
  const app = express();
  app.use(mirrorplaneResponses({ intake: 'http://intake.test/production-responses', fetch: fakeFetch }));
  const router = express.Router();
  router.post('/orders', (_req, res) => {
    res.cookie('session', 'secret');
    res.status(201).json({ id: 'ord_9' });
  });
  router.get('/text', (_req, res) => {
    res.send('plain');
  });
  app.use('/api', router);
  const server = app.listen(0, '127.0.0.1');
  await new Promise((r) => server.once('listening', r));
  const url = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
  try {
    // First, without x-request-id: its post, if any, would be issued before the next request is sent.
    await (await fetch(`${url}/api/text`)).text();
    await (await fetch(`${url}/api/orders`, { method: 'POST', headers: { 'x-request-id': 'e-1' } })).text();
    await (await fetch(`${url}/api/text`, { headers: { 'x-request-id': 'e-2' } })).text();
    await waitFor('two posts', () => (posted.length === 2 ? true : null));
    assert.deepEqual(
      posted.map((p) => p.headers['x-mirrorplane-request-id']),
      ['e-1', 'e-2'],
      'no x-request-id: nothing posted',
    );
    const [create, text] = posted.map(intakeView);
    assert.equal(create!.path, '/api/orders');
    assert.equal(create!.status, 201);
    assert.deepEqual(JSON.parse(create!.body.toString()), { id: 'ord_9' });
    assert.equal(create!.headers.includes('set-cookie'), false);
    assert.equal(posted[0]!.headers['content-type'], 'application/json; charset=utf-8');
    assert.equal(text!.body.toString(), 'plain');
    assert.equal(posted[1]!.headers['content-type'], 'text/html; charset=utf-8');
  } finally {
    await new Promise((r) => server.close(r));
  }
});

test('a compressed answer is posted as written with its content-encoding; an answer over the bound is posted cut, marked so, and reported', async () => {
  const gz = gzipSync('{"id":"ord_2"}');
  const app = await serve(
    (req, res) => {
      if (req.url === '/big') {
        res.writeHead(200, { 'content-type': 'application/octet-stream' });
        res.end(Buffer.alloc(2048));
        return;
      }
      res.writeHead(200, { 'content-type': 'application/json', 'content-encoding': 'gzip' });
      res.end(gz);
    },
    { maxBodyBytes: 1024 },
  );
  try {
    await (await fetch(`${app.url}/gz`, { headers: { 'x-request-id': 'g-1', 'accept-encoding': 'gzip' } })).arrayBuffer();
    await (await fetch(`${app.url}/big`, { headers: { 'x-request-id': 'g-2' } })).arrayBuffer();
    await waitFor('the posts and the error', () => (app.posted.length === 2 && app.errors.length === 1 ? true : null));
    const got = intakeView(app.posted[0]!);
    assert.ok(got.body.equals(gz));
    assert.ok(got.headers.includes('content-encoding') && got.headers.includes('gzip'));
    assert.equal(got.cut, undefined);
    // Posted cut to the bound, so the intake knows the request was answered (nothing learned from it).
    const big = intakeView(app.posted[1]!);
    assert.equal(big.cut, true);
    assert.equal(big.body.length, 1024);
    assert.match(String(app.errors[0]), /g-2 posted cut: body over 1024 bytes/);
  } finally {
    await app.close();
  }
});

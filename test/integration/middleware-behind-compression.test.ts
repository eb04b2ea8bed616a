import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import * as zlib from 'node:zlib';
import express from 'express';
import { IdMappingOptions, compileIdMapping, decodeBody } from '@mirrorplane/core';
import { parseIntake } from '@mirrorplane/runtime';
import { mirrorplaneResponses } from '../../examples/mirrorplane-middleware.mjs';
import { waitFor } from '../helpers/index.js';

/**
 * The shipped middleware in an Express app that compresses its answers with a response-
 * compression middleware mounted first (the usual place: `app.use(compression())` at the top).
 * The compressor below works like the `compression` package: it wraps res.write/res.end, pipes
 * what the app writes through zlib to the original write, and sets Content-Encoding when the
 * head goes out. What the middleware posts is read back with the intake's own parser and
 * learner, so nothing is simulated on the Mirrorplane side.
 */

const compressors: [string, () => zlib.Gzip | zlib.Deflate | zlib.BrotliCompress][] = [
  ['gzip', () => zlib.createGzip()],
  ['deflate', () => zlib.createDeflate()],
  ['br', () => zlib.createBrotliCompress()],
];

const compressFirst =
  (coding: string, create: () => zlib.Gzip | zlib.Deflate | zlib.BrotliCompress) =>
  (_req: IncomingMessage, res: ServerResponse, next: () => void): void => {
    const write = res.write.bind(res) as (chunk: unknown) => boolean;
    const end = res.end.bind(res) as () => ServerResponse;
    const gz = create();
    let started = false;
    const start = () => {
      if (started) return;
      started = true;
      res.setHeader('Content-Encoding', coding);
      res.removeHeader('Content-Length');
      gz.on('data', (c: Buffer) => write(c));
      gz.on('end', () => end());
    };
    res.write = ((chunk: unknown, encoding?: unknown) => {
      start();
      return gz.write(chunk as Buffer, encoding as BufferEncoding);
    }) as typeof res.write;
    res.end = ((chunk?: unknown, encoding?: unknown) => {
      start();
      if (chunk !== undefined && chunk !== null && typeof chunk !== 'function') gz.write(chunk as Buffer, encoding as BufferEncoding);
      gz.end();
      return res;
    }) as typeof res.end;
    next();
  };

for (const [coding, create] of compressors)
  test(`middleware, Express with a ${coding} compression middleware mounted before it: production's new ID is still learned`, async () => {
    const posted: { headers: Record<string, string>; body: Buffer }[] = [];
    const fakeFetch = (async (_url: string, init: { headers: Record<string, string>; body: Buffer }) => {
      posted.push({ headers: init.headers, body: Buffer.from(init.body) });
      return new Response(null, { status: 204 });
    }) as unknown as typeof fetch;
    const app = express();
    app.use(compressFirst(coding, create));
    app.use(mirrorplaneResponses({ intake: 'http://intake.test/production-responses', fetch: fakeFetch }));
    app.post('/orders', (_req, res) => void res.status(201).json({ id: 'ord_1', item: 'book' }));
    const server = createServer(app);
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    try {
      const res = await fetch(`http://127.0.0.1:${(server.address() as { port: number }).port}/orders`, {
        method: 'POST',
        headers: { 'x-request-id': 'c-1', 'accept-encoding': coding },
      });
      assert.equal(res.headers.get('content-encoding'), coding, 'the client got a compressed answer');
      assert.deepEqual(await res.json(), { id: 'ord_1', item: 'book' });
      await waitFor('the post', () => (posted.length === 1 ? true : null));
      const intake = parseIntake(Object.entries(posted[0]!.headers).flat(), posted[0]!.body);
      const decoded = decodeBody(intake.headers, intake.body);
      assert.ok(decoded.ok, `the posted body decodes as its headers say: ${decoded.ok ? '' : decoded.message}`);
      const mapping = compileIdMapping(
        IdMappingOptions.parse({
          kinds: [
            { name: 'order', learn: [{ match: { methods: ['POST'], path: '^/orders$' }, from: { json: 'id' } }], use: [{ path: '^/orders/(?<id>[^/]+)$' }] },
          ],
        }),
      );
      assert.equal(mapping.learners[0]!.extract(intake), 'ord_1', "the intake learns production's new ID");
    } finally {
      await new Promise((r) => server.close(r));
    }
  });

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { parseIntake } from '@mirrorplane/runtime';
import { mirrorplaneResponses } from '../../examples/mirrorplane-middleware.mjs';
import { waitFor } from '../helpers/index.js';

/**
 * The shipped middleware in node:http with writeHead given a flat array or an array of pairs
 * that repeats a header (Link, Vary, Cache-Control…): what reaches the intake must be every
 * header the client received, as the docs say ("every response header").
 */

async function run(handler: (req: IncomingMessage, res: ServerResponse) => void) {
  const posted: { headers: Record<string, string>; body: Buffer }[] = [];
  const fakeFetch = (async (_url: string, init: { headers: Record<string, string>; body: Buffer }) => {
    posted.push({ headers: init.headers, body: Buffer.from(init.body) });
    return new Response(null, { status: 204 });
  }) as unknown as typeof fetch;
  const capture = mirrorplaneResponses({ intake: 'http://intake.test/production-responses', fetch: fakeFetch });
  const server = createServer((req, res) => {
    capture(req, res);
    handler(req, res);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  try {
    const res = await fetch(`http://127.0.0.1:${(server.address() as { port: number }).port}/page`, { headers: { 'x-request-id': 'h-1' } });
    await res.arrayBuffer();
    await waitFor('the post', () => (posted.length === 1 ? true : null));
    const got = parseIntake(Object.entries(posted[0]!.headers).flat(), posted[0]!.body);
    return { client: res.headers.get('link'), posted: got.headers.filter((_, i, a) => i % 2 === 1 && a[i - 1] === 'link') };
  } finally {
    await new Promise((r) => server.close(r));
  }
}

const styles: [string, (req: IncomingMessage, res: ServerResponse) => void][] = [
  ['flat array', (_req, res) => res.writeHead(200, ['Content-Type', 'text/html', 'Link', '</a.css>; rel=preload', 'Link', '</b.js>; rel=preload']).end('<p>')],
  [
    'array of pairs',
    (_req, res) =>
      res
        .writeHead(200, [
          ['Content-Type', 'text/html'],
          ['Link', '</a.css>; rel=preload'],
          ['Link', '</b.js>; rel=preload'],
        ] as unknown as string[])
        .end('<p>'),
  ],
];

for (const [name, handler] of styles) {
  test(`middleware, writeHead with a ${name} repeating a header: every value reaches the intake`, async () => {
    const { client, posted } = await run(handler);
    assert.equal(client, '</a.css>; rel=preload, </b.js>; rel=preload', 'the client got both');
    assert.deepEqual(posted, ['</a.css>; rel=preload', '</b.js>; rel=preload']);
  });
}

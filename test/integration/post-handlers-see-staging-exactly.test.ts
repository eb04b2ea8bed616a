import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { Writable } from 'node:stream';
import type { Redis } from 'ioredis';
import { composePipeline, encodeEntryFields, keysFor, loadConfig, type MirroredRequest, type ReplayResponse } from '@mirrorplane/core';
import { createLogger } from '@mirrorplane/runtime';
import { ReplayWorker } from '@mirrorplane/worker';
import { RedisServer, waitFor } from '../helpers/index.js';
import { diffResponse, makeShapes, rng, ShapeServer, type Shape } from '../helpers/response-shapes.js';

// Issue #17, end to end: a real worker (concurrency, kept connections, the reused read buffer,
// fewer promises per entry) against a raw staging server that answers with generated shapes
// split at generated points. Promised: staging receives each request byte for byte; post
// handlers see staging's response byte for byte (status, headers, body up to the limit) for
// EVERY entry, and what they were handed does not change afterwards; every entry is
// acknowledged and deleted exactly once; nothing goes to the failed set.

let redis: RedisServer;
let client: Redis;
before(async () => {
  redis = await RedisServer.start();
  client = redis.client();
});
after(async () => {
  client.disconnect();
  await redis.close();
});

interface Seen {
  entryId: string;
  response: ReplayResponse;
  /** Copies made when the post handler ran. */
  body: Buffer;
  headers: string[];
  status: number;
}

async function startWorker(prefix: string, stagingUrl: string, env: Record<string, string>, posts: Seen[]) {
  const config = loadConfig({
    role: 'worker',
    env: {
      REDIS_URL: redis.url,
      MIRRORPLANE_PREFIX: prefix,
      STAGING_URL: stagingUrl,
      ADMIN_PORT: '0',
      LOG_LEVEL: 'info',
      PRESERVE_HOST: 'true',
      RETRY_STATUSES: '429',
      REPLAY_BACKOFF_MS: '50',
      ...env,
    },
  });
  const logs: Record<string, unknown>[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _e, done) {
      for (const line of chunk.toString().split('\n')) if (line) logs.push(JSON.parse(line) as Record<string, unknown>);
      done();
    },
  });
  const pipeline = composePipeline([
    {
      name: 'recorder',
      needsResponseBody: true,
      post: async (response, _request, ctx) => {
        posts.push({ entryId: ctx.entryId, response, body: Buffer.from(response.body), headers: [...response.headers], status: response.status });
        // Let other exchanges read meanwhile (a post handler that awaits, like the recorder writing out).
        await new Promise((r) => setImmediate(r));
      },
    },
  ]);
  const worker = new ReplayWorker(config, createLogger(config, 'worker', sink), { pipeline });
  await worker.start();
  return { worker, logs, config };
}

/** Entries for `shapes`, with generated request headers and bodies; returns them by target. */
async function appendFor(prefix: string, shapes: Shape[], copies: number, seed: number): Promise<Map<string, MirroredRequest>> {
  const r = rng(seed);
  const keys = keysFor(prefix);
  const byTarget = new Map<string, MirroredRequest>();
  const pipeline = client.pipeline();
  for (let c = 0; c < copies; c++) {
    for (const shape of shapes) {
      const target = `/shape/${shape.n}/c${c}?q=${Math.floor(r() * 1e9)}&x=%20caf\xe9`;
      const body = shape.method === 'POST' ? randomBytes(Math.floor(r() * 40_000)) : Buffer.alloc(0);
      const rawHeaders = ['Host', 'shop.example', 'X-Dup', 'one', 'x-dup', 'two', 'X-MiXeD-CaSe', `v ${c}\t\xe9\xff`, 'Cookie', `s=${shape.n}`];
      // A POST body framed by Content-Length, or chunked with trailers (names' case and duplicates kept).
      const chunked = shape.method === 'POST' && r() < 0.35;
      if (shape.method === 'POST')
        rawHeaders.splice(
          Math.floor(r() * 5) * 2,
          0,
          ...(chunked ? ['Transfer-Encoding', 'chunked', 'Trailer', 'X-Sum'] : [r() < 0.5 ? 'Content-Length' : 'content-length', String(body.length)]),
        );
      const request: MirroredRequest = {
        method: shape.method,
        target,
        rawHeaders,
        body,
        receivedAt: Date.now(),
        requestId: `rq-${shape.n}-${c}`,
        clientAddress: '10.0.0.1',
      };
      if (chunked) request.trailers = ['X-Sum', `s${shape.n}-${c}`, 'x-sum', 'dup \xe9'];
      byTarget.set(target, request);
      pipeline.xadd(keys.stream, '*', ...encodeEntryFields(request));
    }
  }
  await pipeline.exec();
  return byTarget;
}

function expectedHead(request: MirroredRequest, entryId: string, attempt: number): string {
  let head = `${request.method} ${request.target} HTTP/1.1`;
  for (let i = 0; i < request.rawHeaders.length; i += 2) head += `\r\n${request.rawHeaders[i]}: ${request.rawHeaders[i + 1]}`;
  return `${head}\r\nx-mirrorplane-id: ${entryId}\r\nx-mirrorplane-attempt: ${attempt}`;
}

async function drained(prefix: string): Promise<boolean> {
  const keys = keysFor(prefix);
  const [len, pending] = await Promise.all([client.xlen(keys.stream), client.xpending(keys.stream, keys.group)]);
  return len === 0 && Number((pending as [number])[0]) === 0;
}

function shapeOf(shapes: Shape[], target: string): Shape {
  return shapes[Number(/^\/shape\/(\d+)\//.exec(target)?.[1])] as Shape;
}

for (const limit of [16 * 1024, 1 << 20]) {
  test(`a worker at concurrency 16, RESPONSE_BODY_LIMIT=${limit}: staging gets each request byte for byte, post handlers see each response byte for byte, every entry acknowledged and deleted once`, async () => {
    const prefix = `a17${randomBytes(3).toString('hex')}`;
    const shapes = makeShapes(limit === 1 << 20 ? 31 : 32, 100, { allowFin: false });
    const staging = await ShapeServer.start(shapes);
    const posts: Seen[] = [];
    const byTarget = await appendFor(prefix, shapes, 3, 5);
    const { worker, logs } = await startWorker(prefix, staging.url(), { WORKER_CONCURRENCY: '16', RESPONSE_BODY_LIMIT: String(limit) }, posts);
    try {
      await waitFor('every entry replayed and acknowledged', async () => posts.length >= byTarget.size && (await drained(prefix)), 120_000);
      // Anything still settling has a moment to show up twice.
      await new Promise((r) => setTimeout(r, 300));
    } finally {
      await worker.close();
      await staging.close();
    }
    assert.equal(staging.seen.length, byTarget.size, 'each request reached staging once');
    assert.equal(posts.length, byTarget.size, 'the post handler ran once per entry');
    assert.equal(new Set(posts.map((p) => p.entryId)).size, byTarget.size, 'once per entry id');
    const bad: string[] = [];
    for (const seen of staging.seen) {
      const target = seen.line.split(' ')[1] as string;
      const request = byTarget.get(target);
      if (!request) {
        bad.push(`unknown target ${target}`);
        continue;
      }
      const id = /\r\nx-mirrorplane-id: ([^\r]*)/.exec(seen.head)?.[1] ?? '?';
      if (seen.head !== expectedHead(request, id, 1)) bad.push(`request head of ${target} differs`);
      if (!seen.body.equals(request.body)) bad.push(`request body of ${target} differs`);
      if (JSON.stringify(seen.trailers) !== JSON.stringify(request.trailers ?? []))
        bad.push(`request trailers of ${target} differ: ${JSON.stringify(seen.trailers)}`);
    }
    assert.deepEqual(bad.slice(0, 10), [], `${bad.length} requests differ`);
    const idToTarget = new Map(staging.seen.map((s) => [/\r\nx-mirrorplane-id: ([^\r]*)/.exec(s.head)?.[1], s.line.split(' ')[1] as string]));
    const wrong: string[] = [];
    for (const p of posts) {
      const target = idToTarget.get(p.entryId) as string;
      const shape = shapeOf(shapes, target);
      const now = diffResponse(shape, { status: p.status, headers: p.headers, body: p.body, truncated: p.response.truncated }, limit);
      if (now.length > 0) wrong.push(`${shape.label} as the post handler saw it: ${now.join('; ')}`);
      // What the handler was handed must not change after it ran (no view of a reused read buffer).
      const later = diffResponse(shape, p.response, limit);
      if (later.length > 0) wrong.push(`${shape.label} kept by the post handler, later: ${later.join('; ')}`);
    }
    assert.deepEqual(wrong.slice(0, 10), [], `${wrong.length} responses differ`);
    assert.ok(!logs.some((l) => String(l.msg).includes('failed set')), 'nothing went to the failed set');
  });
}

test('staging that closes idle connections at 450-550 ms (and FINs after some responses), entries paced around that: every entry replayed, post once, acknowledged and deleted once, none failed', async () => {
  const prefix = `a17i${randomBytes(3).toString('hex')}`;
  const shapes = makeShapes(606, 40, { allowFin: true });
  const staging = await ShapeServer.start(shapes);
  const posts: Seen[] = [];
  const { worker, logs } = await startWorker(prefix, staging.url(), { WORKER_CONCURRENCY: '4', RESPONSE_BODY_LIMIT: String(1 << 20) }, posts);
  const all = new Map<string, MirroredRequest>();
  try {
    let k = 0;
    for (const closeMs of [450, 490, 500, 510, 550]) {
      staging.idleCloseMs = closeMs;
      // Batches paced at about the idle close: requests meet connections closing.
      for (const pause of [closeMs - 20, closeMs - 2, closeMs, closeMs + 5, closeMs + 30]) {
        const batch = shapes.slice((k * 3) % shapes.length, ((k * 3) % shapes.length) + 3);
        k++;
        for (const [t, r] of await appendFor(prefix, batch, 1, k)) all.set(t, r);
        await waitFor('the batch replayed', () => posts.length >= all.size, 60_000);
        await new Promise((r) => setTimeout(r, pause));
      }
    }
    await waitFor('every entry acknowledged', () => drained(prefix), 60_000);
  } finally {
    await worker.close();
    await staging.close();
  }
  const ids = posts.map((p) => p.entryId);
  assert.equal(new Set(ids).size, all.size, 'every entry reached the post handler');
  assert.equal(ids.length, all.size, 'once each');
  const idToTarget = new Map(staging.seen.map((s) => [/\r\nx-mirrorplane-id: ([^\r]*)/.exec(s.head)?.[1], s.line.split(' ')[1] as string]));
  const wrong: string[] = [];
  for (const p of posts) {
    const shape = shapeOf(shapes, idToTarget.get(p.entryId) as string);
    const diff = diffResponse(shape, p.response, 1 << 20);
    if (diff.length > 0) wrong.push(`${shape.label}: ${diff.join('; ')}`);
  }
  assert.deepEqual(wrong, []);
  assert.ok(!logs.some((l) => String(l.msg).includes('failed set')), 'nothing went to the failed set');
});

test('graceful stop with replays in flight: each in-flight replay ends (post once, acknowledged), the rest is taken over; no entry lost or replayed twice', async () => {
  const prefix = `a17g${randomBytes(3).toString('hex')}`;
  const shapes = makeShapes(2024, 30, { allowFin: false });
  // Slow staging: every piece of every response a few ms apart (the shapes are cut everywhere).
  const slow = shapes.map((s) => ({ ...s, cuts: Array.from({ length: 20 }, (_, i) => Math.floor(((i + 1) * s.bytes.length) / 21)).filter((c) => c > 0) }));
  const staging = await ShapeServer.start(slow);
  const posts: Seen[] = [];
  const byTarget = await appendFor(prefix, slow, 4, 9);
  const a = await startWorker(prefix, staging.url(), { WORKER_CONCURRENCY: '8', CLAIM_IDLE_MS: '1000', SHUTDOWN_TIMEOUT_MS: '15000' }, posts);
  await waitFor('replays in flight', () => staging.seen.length >= 20, 60_000);
  await a.worker.close();
  const b = await startWorker(prefix, staging.url(), { WORKER_CONCURRENCY: '8', CLAIM_IDLE_MS: '1000' }, posts);
  try {
    await waitFor('every entry acknowledged', async () => posts.length >= byTarget.size && (await drained(prefix)), 120_000);
    await new Promise((r) => setTimeout(r, 300));
  } finally {
    await b.worker.close();
    await staging.close();
  }
  const counts = new Map<string, number>();
  for (const p of posts) counts.set(p.entryId, (counts.get(p.entryId) ?? 0) + 1);
  assert.equal(counts.size, byTarget.size, 'every entry reached the post handler');
  assert.deepEqual(
    [...counts].filter(([, n]) => n !== 1),
    [],
    'once each',
  );
  assert.equal(staging.seen.length, byTarget.size, 'each request reached staging once');
});

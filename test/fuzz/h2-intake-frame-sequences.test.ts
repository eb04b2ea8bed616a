import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { decodeEntry } from '@mirrorplane/core';
import { RecordingServer, RedisServer, Stack, sendRaw, waitFor } from '../helpers/index.js';
import { FLAG, FRAME, RawH2Connection, frame, headerBlock, rstFrame } from '../helpers/raw-h2.js';

// Issue #18, the family of "a peer's frames reach an HTTP/2 handler with a stream or session
// nghttp2 already reset or destroyed": generated sequences of HEADERS (with or without a
// content-length, END_STREAM), DATA, trailers, RST_STREAM (any code), GOAWAY and unknown frames
// on a few streams, written at once or frame by frame. Whatever the sequence, the ingress stays
// up, and what it stores for a stream is exactly that stream's DATA up to its END_STREAM, of the
// declared content-length when there is one, stored at most once.

const RUNS = Number(process.env.FUZZ_RUNS ?? 200);

let redis: RedisServer;
let staging: RecordingServer;
let stack: Stack;

before(async () => {
  redis = await RedisServer.start();
  staging = await RecordingServer.start();
  stack = await Stack.start({
    redis,
    stagingUrl: staging.url,
    workers: 0,
    env: { MAX_BODY_BYTES: '64', MAX_CONCURRENT_STREAMS: '3', BODY_TIMEOUT_MS: '2000' },
  });
});

after(async () => {
  await stack?.close();
  await staging?.close();
  await redis?.close();
});

type Op =
  | { kind: 'headers'; s: number; contentLength: number | null; end: boolean; grpc: boolean }
  | { kind: 'data'; s: number; length: number; end: boolean }
  | { kind: 'trailers'; s: number }
  | { kind: 'rst'; s: number; code: number }
  | { kind: 'goaway' }
  | { kind: 'unknown'; s: number };

const stream = fc.integer({ min: 0, max: 3 });
const op: fc.Arbitrary<Op> = fc.oneof(
  fc.record({
    kind: fc.constant('headers' as const),
    s: stream,
    contentLength: fc.option(fc.integer({ min: 0, max: 80 }), { nil: null }),
    end: fc.boolean(),
    grpc: fc.boolean(),
  }),
  fc.record({ kind: fc.constant('data' as const), s: stream, length: fc.integer({ min: 0, max: 40 }), end: fc.boolean() }),
  fc.record({ kind: fc.constant('trailers' as const), s: stream }),
  fc.record({ kind: fc.constant('rst' as const), s: stream, code: fc.integer({ min: 0, max: 13 }) }),
  fc.constant({ kind: 'goaway' as const }),
  fc.record({ kind: fc.constant('unknown' as const), s: stream }),
);

const streamKey = (): string => `{${stack.env.MIRRORPLANE_PREFIX}}:stream`;

async function storedUnder(prefix: string): Promise<ReturnType<typeof decodeEntry>[]> {
  const client = redis.client();
  try {
    const rows = (await client.xrangeBuffer(streamKey(), '-', '+')) as [Buffer, Buffer[]][];
    return rows.map(([id, fields]) => decodeEntry(id.toString(), fields)).filter((e) => e.request.target.startsWith(prefix));
  } finally {
    client.disconnect();
  }
}

function encode(run: number, ops: readonly Op[]): { frames: Buffer[]; expected: Map<string, { body: Buffer; contentLength: number | null }> } {
  const frames: Buffer[] = [];
  // What a stream may be stored as: its first HEADERS' path, the DATA it was sent before its first END_STREAM.
  const expected = new Map<string, { body: Buffer; contentLength: number | null }>();
  const open = new Map<number, { path: string; chunks: Buffer[]; ended: boolean; contentLength: number | null }>();
  ops.forEach((o, i) => {
    if (o.kind === 'goaway') {
      const payload = Buffer.alloc(8);
      frames.push(frame(FRAME.GOAWAY, 0, 0, payload));
      return;
    }
    const id = 1 + 2 * o.s;
    const state = open.get(id);
    switch (o.kind) {
      case 'headers': {
        if (state !== undefined) {
          // A second HEADERS on the stream: trailers if it ends it, else malformed.
          frames.push(frame(FRAME.HEADERS, FLAG.END_HEADERS | (o.end ? FLAG.END_STREAM : 0), id, headerBlock([['x-late', String(i)]])));
          if (o.end) state.ended = true;
          return;
        }
        const path = `/fz/${run}/${o.s}`;
        const fields: [string, string][] = [
          [':method', 'POST'],
          [':scheme', 'http'],
          [':authority', 'fuzz.test'],
          [':path', path],
        ];
        if (o.grpc) fields.push(['content-type', 'application/grpc']);
        if (o.contentLength !== null) fields.push(['content-length', String(o.contentLength)]);
        frames.push(frame(FRAME.HEADERS, FLAG.END_HEADERS | (o.end ? FLAG.END_STREAM : 0), id, headerBlock(fields)));
        const fresh = { path, chunks: [] as Buffer[], ended: o.end, contentLength: o.contentLength };
        open.set(id, fresh);
        expected.set(path, { body: Buffer.alloc(0), contentLength: o.contentLength });
        return;
      }
      case 'data': {
        const payload = Buffer.alloc(o.length, 0x61 + (i % 26));
        frames.push(frame(FRAME.DATA, o.end ? FLAG.END_STREAM : 0, id, payload));
        if (state !== undefined && !state.ended) {
          state.chunks.push(payload);
          if (o.end) state.ended = true;
          const e = expected.get(state.path);
          if (e !== undefined) e.body = Buffer.concat(state.chunks);
        }
        return;
      }
      case 'trailers':
        frames.push(frame(FRAME.HEADERS, FLAG.END_HEADERS | FLAG.END_STREAM, id, headerBlock([['x-trailer', String(i)]])));
        if (state !== undefined) state.ended = true;
        return;
      case 'rst':
        frames.push(rstFrame(id, o.code));
        return;
      case 'unknown':
        frames.push(frame(0xfa, 0, id, Buffer.from('??')));
        return;
    }
  });
  return { frames, expected };
}

const PING = 0x6;
let run = 0;

test('generated HTTP/2 frame sequences never take the ingress down nor store a malformed request', async () => {
  await fc.assert(
    fc.asyncProperty(fc.array(op, { minLength: 1, maxLength: 14 }), fc.boolean(), async (ops, oneWrite) => {
      const id = ++run;
      const { frames, expected } = encode(id, ops);
      const conn = await RawH2Connection.open(stack.ingressPort);
      try {
        const ping = frame(PING, 0, 0, Buffer.from('fuzzping'));
        if (oneWrite) conn.write(Buffer.concat([...frames, ping]));
        else for (const f of [...frames, ping]) conn.write(f);
        // nghttp2 answers the PING once it processed every frame before it, or ends the session
        // with a GOAWAY at a connection error.
        await waitFor(
          'the ingress took the sequence',
          () => conn.closed || conn.frames.some((f) => (f.type === PING && (f.flags & 0x1) !== 0) || f.type === FRAME.GOAWAY),
          20_000,
        );
      } finally {
        conn.close();
      }
      assert.equal(
        stack.ingress.child.exitCode,
        null,
        `ingress exited: ${stack.ingress.stdout
          .split('\n')
          .filter((l) => l.includes('uncaught'))
          .join('\n')}`,
      );
      const stored = await storedUnder(`/fz/${id}/`);
      const seen = new Set<string>();
      for (const entry of stored) {
        const path = entry.request.target;
        assert.ok(!seen.has(path), `${path} stored twice`);
        seen.add(path);
        const want = expected.get(path);
        assert.ok(want !== undefined, `${path} stored but never sent`);
        assert.deepEqual(Buffer.from(entry.request.body), want.body, `${path}: the stored body is the stream's DATA up to END_STREAM`);
        if (want.contentLength !== null)
          assert.equal(entry.request.body.length, want.contentLength, `${path}: stored with a body that disagrees with its content-length`);
      }
    }),
    { numRuns: RUNS },
  );
  // Still serving both protocols.
  const h1 = await sendRaw(stack.ingressPort, 'POST /fz/alive HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-length: 0\r\n\r\n');
  assert.equal(h1.status, 200);
  const conn = await RawH2Connection.open(stack.ingressPort);
  try {
    conn.write(
      frame(
        FRAME.HEADERS,
        FLAG.END_HEADERS | FLAG.END_STREAM,
        1,
        headerBlock([
          [':method', 'POST'],
          [':scheme', 'http'],
          [':authority', 'x'],
          [':path', '/fz/alive2'],
        ]),
      ),
    );
    await waitFor('answered', () => conn.frames.some((f) => f.type === FRAME.HEADERS && f.streamId === 1), 20_000);
  } finally {
    conn.close();
  }
});

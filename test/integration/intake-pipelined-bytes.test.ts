import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { decodeEntry } from '@mirrorplane/core';
import { RecordingServer, RedisServer, Stack, buildRequest, pipelinedRequest, sendParts, type SentRequest } from '../helpers/index.js';

// #13: a 200 means "stored, byte-exact". Since e645dbf a whole Content-Length body is kept by
// reference into the socket chunk it arrived in (no copy). These properties send generated
// pipelined requests (Content-Length and chunked bodies of arbitrary bytes, including bytes
// that look like HTTP heads and RESP, obs-text in targets and values, trailers), all in one
// write or split at arbitrary offsets, with a FIN after an arbitrary prefix, and compare what
// the stream holds (decoded with the core codec) with what was sent, request by request.

let redis: RedisServer;
let staging: RecordingServer;
let stack: Stack;

before(async () => {
  redis = await RedisServer.start();
  staging = await RecordingServer.start();
  stack = await Stack.start({ redis, stagingUrl: staging.url, workers: 0 });
});

after(async () => {
  await stack?.close();
  await staging?.close();
  await redis?.close();
});

async function storedEntries(): Promise<ReturnType<typeof decodeEntry>[]> {
  const c = redis.client();
  try {
    const entries = await c.xrangeBuffer(`{${stack.env.MIRRORPLANE_PREFIX}}:stream`, '-', '+');
    return entries.map(([id, fields]) => decodeEntry(id.toString(), fields));
  } finally {
    c.disconnect();
  }
}

async function clearStream(): Promise<void> {
  const c = redis.client();
  try {
    await c.xtrim(`{${stack.env.MIRRORPLANE_PREFIX}}:stream`, 'MAXLEN', 0);
  } finally {
    c.disconnect();
  }
}

function assertStored(sent: SentRequest[], answers: string, context: string): Promise<void> {
  return storedEntries().then((entries) => {
    const statuses = [...answers.matchAll(/HTTP\/1\.1 (\d{3})/g)].map((m) => m[1]);
    assert.deepEqual(statuses, Array(sent.length).fill('200'), `${context}: answers ${JSON.stringify(answers.slice(0, 400))}`);
    assert.equal(entries.length, sent.length, `${context}: ${entries.length} entries stored for ${sent.length} whole requests`);
    sent.forEach((s, i) => {
      const got = (entries[i] as ReturnType<typeof decodeEntry>).request;
      const what = `${context}: request ${i}`;
      assert.equal(got.method, s.method, `${what} method`);
      assert.equal(Buffer.from(got.target, 'latin1').toString('hex'), Buffer.from(s.target, 'latin1').toString('hex'), `${what} target`);
      assert.deepEqual(got.rawHeaders, s.rawHeaders, `${what} headers`);
      assert.equal(got.body.toString('hex'), s.body.toString('hex'), `${what} body (${s.body.length} bytes sent, ${got.body.length} stored)`);
      assert.deepEqual(got.trailers ?? [], s.trailers, `${what} trailers`);
    });
  });
}

test('pipelined requests in one write, in arbitrary pieces, FIN after an arbitrary prefix: every whole request answered 200 and stored byte-exact, nothing else', async () => {
  await fc.assert(
    fc.asyncProperty(
      fc.array(pipelinedRequest, { minLength: 1, maxLength: 12 }),
      fc.array(fc.double({ min: 0, max: 1, noNaN: true }), { maxLength: 5 }),
      fc.option(fc.double({ min: 0, max: 1, noNaN: true }), { freq: 2 }),
      async (requests, splits, cut) => {
        await clearStream();
        const sent = requests.map((r, i) => buildRequest(r, i));
        const all = Buffer.concat(sent.map((s) => s.bytes));
        const cutAt = cut === null ? all.length : Math.floor(cut * all.length);
        const prefix = all.subarray(0, cutAt);
        // The requests whose every byte is in the prefix.
        let end = 0;
        const whole = sent.filter((s) => (end += s.bytes.length) <= cutAt);
        const offsets = [...new Set(splits.map((f) => Math.floor(f * prefix.length)))].sort((a, b) => a - b);
        const parts: Buffer[] = [];
        let from = 0;
        for (const o of offsets) {
          if (o > from) parts.push(prefix.subarray(from, o));
          from = Math.max(from, o);
        }
        if (from < prefix.length) parts.push(prefix.subarray(from));
        const answers = await sendParts(stack.ingressPort, parts);
        await assertStored(whole, answers, `${sent.length} requests, cut at ${cutAt}/${all.length}, writes of ${parts.map((p) => p.length).join('+')}`);
      },
    ),
    { numRuns: 60 },
  );
});

test('a body split across two writes at every offset, with the next pipelined request behind it: stored byte-exact', async () => {
  const body = Buffer.from('0123456789\r\n\r\nGET / HTTP/1.1\r\n\r\n*1\r\n$4\r\nPING\r\n\xff\x00', 'latin1');
  const first = buildRequest({ method: 'POST', target: '/split', fields: [], body, framing: 'length', chunkSizes: [7], trailers: [] }, 0);
  const second = buildRequest(
    { method: 'PUT', target: '/next', fields: [['x-a', 'b']], body: Buffer.from('second body'), framing: 'length', chunkSizes: [7], trailers: [] },
    1,
  );
  const all = Buffer.concat([first.bytes, second.bytes]);
  for (let at = 1; at < all.length; at++) {
    await clearStream();
    const answers = await sendParts(stack.ingressPort, [all.subarray(0, at), all.subarray(at)]);
    await assertStored([first, second], answers, `split at ${at}/${all.length}`);
  }
});

test('500 requests with bodies in one write (one socket chunk holds them all): every body stored byte-exact', async () => {
  await clearStream();
  const sent = Array.from({ length: 500 }, (_, i) =>
    buildRequest(
      {
        method: 'POST',
        target: `/many/${i}`,
        fields: [],
        body: Buffer.from(`body-${i}-${'x'.repeat(i % 37)}`),
        framing: 'length',
        chunkSizes: [1],
        trailers: [],
      },
      i,
    ),
  );
  const answers = await sendParts(stack.ingressPort, [Buffer.concat(sent.map((s) => s.bytes))]);
  await assertStored(sent, answers, '500 in one write');
});

test('bodies at socket-read and copy thresholds (4 KiB, 64 KiB, 1 MiB, ±1), pipelined in one write and one byte at a time at their edges: stored byte-exact', async () => {
  const sizes = [4095, 4096, 4097, 32767, 32768, 65535, 65536, 65537, 131073, 1024 * 1024];
  const sent = sizes.map((n, i) => {
    const body = Buffer.alloc(n);
    for (let k = 0; k < n; k++) body[k] = (k * 31 + i * 7) & 0xff;
    return buildRequest(
      { method: 'PUT', target: `/size/${n}`, fields: [], body, framing: i % 2 === 0 ? 'length' : 'chunked', chunkSizes: [4093, 65536, 1], trailers: [] },
      i,
    );
  });
  await clearStream();
  await assertStored(sent, await sendParts(stack.ingressPort, [Buffer.concat(sent.map((s) => s.bytes))]), 'one write');
  // Each request's last 3 bytes and the next request's first 3 bytes in their own writes.
  await clearStream();
  const parts: Buffer[] = [];
  for (const s of sent)
    parts.push(s.bytes.subarray(0, 3), s.bytes.subarray(3, s.bytes.length - 3), ...[...s.bytes.subarray(s.bytes.length - 3)].map((b) => Buffer.from([b])));
  await assertStored(sent, await sendParts(stack.ingressPort, parts), 'edges byte by byte');
});

test('FIN at the bytes of a 3-request pipeline (every one near an edge) while Redis holds writes (CLIENT PAUSE WRITE): whole requests answered 200 in order and stored, the cut one not', async () => {
  const a = buildRequest({ method: 'POST', target: '/fin/a', fields: [], body: Buffer.from('a-body'), framing: 'length', chunkSizes: [1], trailers: [] }, 0);
  const b = buildRequest(
    {
      method: 'PATCH',
      target: '/fin/b',
      fields: [['x-b', 'é\xff']],
      body: Buffer.from('b\r\nbody'),
      framing: 'chunked',
      chunkSizes: [3],
      trailers: [['x-t', 'v']],
    },
    1,
  );
  const c = buildRequest({ method: 'BAN', target: '/fin/c', fields: [], body: Buffer.alloc(0), framing: 'none', chunkSizes: [1], trailers: [] }, 2);
  const all = Buffer.concat([a.bytes, b.bytes, c.bytes]);
  const admin = redis.client();
  try {
    // Every byte within 3 of a request's edge, and every 6th byte between (each cut costs a
    // Redis pause: all ~250 would take 30 s for the same property).
    const edges = [0, a.bytes.length, a.bytes.length + b.bytes.length, all.length];
    const cuts = Array.from({ length: all.length + 1 }, (_, cut) => cut).filter((cut) => cut % 6 === 0 || edges.some((e) => Math.abs(cut - e) <= 3));
    for (const cut of cuts) {
      await clearStream();
      await admin.call('CLIENT', 'PAUSE', '60', 'WRITE');
      let end = 0;
      const whole = [a, b, c].filter((s) => (end += s.bytes.length) <= cut);
      // The first request alone, then the rest (arriving while its append is held), then the FIN.
      const parts = cut > a.bytes.length ? [all.subarray(0, a.bytes.length), all.subarray(a.bytes.length, cut)] : [all.subarray(0, cut)];
      const answers = await sendParts(
        stack.ingressPort,
        parts.filter((p) => p.length > 0),
      );
      await assertStored(whole, answers, `FIN after byte ${cut} of ${all.length}`);
    }
  } finally {
    admin.disconnect();
  }
});

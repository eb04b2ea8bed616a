import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { connect, constants, type ClientHttp2Session, type IncomingHttpHeaders } from 'node:http2';
import { decodeEntry, partitionKeys, partitionOf } from '@mirrorplane/core';
import { RecordingServer, RedisServer, Stack, freePort, requestHead, sendRaw, waitFor } from '../helpers/index.js';
import { FLAG, FRAME, RawH2Connection, frame, headersFrame, rstFrame } from '../helpers/raw-h2.js';

// h2c with prior knowledge on the traffic port, beside HTTP/1.1: what is stored, what is
// answered, and what is refused with the protocol's own error and stores nothing.

let redis: RedisServer;
let staging: RecordingServer;
let stack: Stack;
let adminPort: number;

before(async () => {
  redis = await RedisServer.start();
  staging = await RecordingServer.start();
  adminPort = await freePort();
  stack = await Stack.start({
    redis,
    stagingUrl: staging.url,
    workers: 0,
    env: { MAX_BODY_BYTES: '5000', MAX_HEADER_BYTES: '4096', MAX_CONCURRENT_STREAMS: '3' },
    ingressEnv: { ADMIN_PORT: String(adminPort) },
  });
});

after(async () => {
  await stack?.close();
  await staging?.close();
  await redis?.close();
});

const streamKey = (): string => `{${stack.env.MIRRORPLANE_PREFIX}}:stream`;

async function entries(): Promise<ReturnType<typeof decodeEntry>[]> {
  const client = redis.client();
  try {
    const rows = (await client.xrangeBuffer(streamKey(), '-', '+')) as [Buffer, Buffer[]][];
    return rows.map(([id, fields]) => decodeEntry(id.toString(), fields));
  } finally {
    client.disconnect();
  }
}

async function dropped(reason: string): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${adminPort}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`mirrorplane_ingress_requests_dropped_total{reason="${reason}"}`));
  return line ? Number(line.split(' ').pop()) : 0;
}

interface H2Answer {
  headers: IncomingHttpHeaders;
  trailers: IncomingHttpHeaders;
  body: Buffer;
  rstCode: number;
}

/** One request on `session`: its answer (headers, trailers, body) and the stream's RST code. */
function exchange(session: ClientHttp2Session, headers: Record<string, string | string[]>, body: Buffer, trailers?: Record<string, string>): Promise<H2Answer> {
  return new Promise((resolve) => {
    const stream = session.request(headers, { waitForTrailers: trailers !== undefined });
    const out: H2Answer = { headers: {}, trailers: {}, body: Buffer.alloc(0), rstCode: 0 };
    const chunks: Buffer[] = [];
    stream.on('response', (h) => (out.headers = h));
    stream.on('trailers', (t) => (out.trailers = t));
    stream.on('data', (c: Buffer) => chunks.push(c));
    stream.on('error', () => undefined);
    stream.on('wantTrailers', () => stream.sendTrailers(trailers ?? {}));
    stream.on('close', () => {
      out.body = Buffer.concat(chunks);
      out.rstCode = stream.rstCode ?? 0;
      resolve(out);
    });
    stream.end(body);
  });
}

const grpcHeaders = (path: string): Record<string, string> => ({
  ':method': 'POST',
  ':path': path,
  'content-type': 'application/grpc',
  te: 'trailers',
  'grpc-timeout': '5S',
  'x-tenant': 'acme',
});

test('a gRPC stream is stored as one HTTP/2 entry (pseudo-headers, fields in order, every DATA frame, trailers) and answered grpc-status 0 once stored', async () => {
  const session = connect(`http://127.0.0.1:${stack.ingressPort}`);
  try {
    const message = Buffer.concat([Buffer.from([0, 0, 0, 1, 0]), Buffer.from(Array.from({ length: 256 }, (_, i) => i))]);
    const answer = await exchange(session, { ...grpcHeaders('/pkg.Svc/Call'), 'x-dup': ['1', '2'], 'trace-bin': 'AAEC' }, message, { 'x-client-sum': '9' });
    assert.equal(answer.headers[':status'], 200);
    assert.equal(answer.trailers['grpc-status'], '0');
    const [entry] = (await entries()).filter((e) => e.request.target === '/pkg.Svc/Call');
    assert.ok(entry, 'stored before the answer');
    const r = entry.request;
    assert.equal(r.protocol, 'HTTP/2');
    assert.equal(r.method, 'POST');
    assert.deepEqual(r.body, message);
    assert.deepEqual(r.trailers, ['x-client-sum', '9']);
    assert.deepEqual(r.rawHeaders.slice(0, 4), [':authority', `127.0.0.1:${stack.ingressPort}`, ':scheme', 'http']);
    assert.deepEqual(r.rawHeaders.slice(4), [
      'content-type',
      'application/grpc',
      'te',
      'trailers',
      'grpc-timeout',
      '5S',
      'x-tenant',
      'acme',
      'x-dup',
      '1',
      'x-dup',
      '2',
      'trace-bin',
      'AAEC',
    ]);
  } finally {
    session.close();
  }
});

test('HTTP/1.1 and h2c on the same port at once: every request stored, each with its protocol', async () => {
  const before = (await entries()).length;
  const session = connect(`http://127.0.0.1:${stack.ingressPort}`);
  try {
    // Once the ingress's SETTINGS are in, node's client queues streams over MAX_CONCURRENT_STREAMS.
    await new Promise((resolve) => session.once('remoteSettings', resolve));
    const h2 = Array.from({ length: 6 }, (_, i) => exchange(session, { ':method': 'PUT', ':path': `/mixed/h2/${i}` }, Buffer.from(`h2-${i}`)));
    const h1 = Array.from({ length: 6 }, (_, i) =>
      sendRaw(stack.ingressPort, requestHead('PUT', `/mixed/h1/${i}`, ['Host', 'x', 'Connection', 'close'], 4), Buffer.from(`h1-${i}`)),
    );
    // A method starting with P, as the preface does: still HTTP/1.1.
    h1.push(sendRaw(stack.ingressPort, requestHead('PRI', '/mixed/h1/pri', ['Host', 'x', 'Connection', 'close'])));
    const answers = await Promise.all(h2);
    for (const a of answers) assert.equal(a.headers[':status'], 200);
    for (const a of await Promise.all(h1)) assert.equal(a.status, 200);
    const stored = (await entries()).slice(before);
    assert.equal(stored.length, 13);
    for (const e of stored) {
      const isH2 = e.request.target.startsWith('/mixed/h2/');
      assert.equal(e.request.protocol, isH2 ? 'HTTP/2' : undefined, e.request.target);
      if (isH2) assert.equal(e.request.body.toString(), `h2-${e.request.target.slice(-1)}`);
    }
  } finally {
    session.close();
  }
});

test('an over-size header list is refused (gRPC RESOURCE_EXHAUSTED, or 431), counted, and stores nothing', async () => {
  const before = (await entries()).length;
  const counted = await dropped('headers_too_large');
  const session = connect(`http://127.0.0.1:${stack.ingressPort}`);
  try {
    const grpc = await exchange(session, { ...grpcHeaders('/big/head'), 'x-big': 'a'.repeat(5000) }, Buffer.from([0, 0, 0, 0, 0]));
    assert.equal(grpc.headers['grpc-status'], '8');
    const plain = await exchange(session, { ':method': 'GET', ':path': '/big/head', 'x-big': 'a'.repeat(5000) }, Buffer.alloc(0));
    assert.equal(plain.headers[':status'], 431);
    assert.equal(await dropped('headers_too_large'), counted + 2);
    assert.equal((await entries()).length, before);
  } finally {
    session.close();
  }
});

test('an over-size body is refused (gRPC RESOURCE_EXHAUSTED, or 413), counted, and stores nothing', async () => {
  const before = (await entries()).length;
  const counted = await dropped('too_large');
  const session = connect(`http://127.0.0.1:${stack.ingressPort}`);
  try {
    const grpc = await exchange(session, grpcHeaders('/big/body'), Buffer.alloc(6000, 7));
    assert.equal(grpc.headers['grpc-status'], '8');
    const plain = await exchange(session, { ':method': 'POST', ':path': '/big/body' }, Buffer.alloc(6000, 7));
    assert.equal(plain.headers[':status'], 413);
    assert.equal(await dropped('too_large'), counted + 2);
    assert.equal((await entries()).length, before);
  } finally {
    session.close();
  }
});

test('the bodies one connection holds are bounded by 2 × MAX_BODY_BYTES: a stream past that is refused, counted, and stores nothing; the others are stored', async () => {
  const before = (await entries()).length;
  const counted = await dropped('too_large');
  const session = connect(`http://127.0.0.1:${stack.ingressPort}`);
  try {
    await new Promise((resolve) => session.once('remoteSettings', resolve));
    // Three streams of 4000 bytes (each under MAX_BODY_BYTES 5000), held open together.
    const streams = [0, 1, 2].map((i) => {
      const stream = session.request({ ':method': 'POST', ':path': `/held/${i}`, 'content-type': 'application/grpc' });
      stream.on('error', () => undefined);
      const answer = new Promise<IncomingHttpHeaders>((resolve) => {
        let headers: IncomingHttpHeaders = {};
        stream.on('response', (h) => (headers = h));
        stream.on('trailers', (t) => (headers = { ...headers, ...t }));
        stream.on('close', () => resolve(headers));
      });
      stream.resume();
      return { stream, answer };
    });
    for (const [i, { stream }] of streams.entries()) {
      stream.write(Buffer.alloc(4000, i));
      if (i < 2) await waitFor(`stream ${i} read`, () => stream.bufferSize === 0);
    }
    const third = await streams[2]!.answer;
    assert.equal(third['grpc-status'], '8', 'over the connection budget: RESOURCE_EXHAUSTED');
    for (const { stream } of streams.slice(0, 2)) stream.end();
    for (const { answer } of streams.slice(0, 2)) assert.equal((await answer)['grpc-status'], '0');
    assert.equal(await dropped('too_large'), counted + 1);
    assert.deepEqual(
      (await entries()).slice(before).map((e) => [e.request.target, e.request.body.length]),
      [
        ['/held/0', 4000],
        ['/held/1', 4000],
      ],
    );
  } finally {
    session.close();
  }
});

test('a stream reset mid-body stores nothing and is counted as aborted; the connection goes on', async () => {
  const before = (await entries()).length;
  const counted = await dropped('aborted');
  const head = (id: number, path: string) =>
    headersFrame(id, [
      [':method', 'POST'],
      [':scheme', 'http'],
      [':path', path],
      [':authority', 'x'],
      ['content-type', 'application/grpc'],
    ]);
  const raw = await RawH2Connection.open(stack.ingressPort, Buffer.concat([head(1, '/reset/mid-body'), frame(FRAME.DATA, 0, 1, Buffer.alloc(1000, 1))]));
  try {
    await waitFor('the ingress acknowledged the settings', () => raw.frames.some((f) => f.type === FRAME.SETTINGS && (f.flags & FLAG.ACK) !== 0));
    raw.write(rstFrame(1, constants.NGHTTP2_CANCEL));
    await waitFor('the reset is counted', async () => (await dropped('aborted')) === counted + 1);
    raw.write(Buffer.concat([head(3, '/reset/after'), frame(FRAME.DATA, FLAG.END_STREAM, 3, Buffer.from([0, 0, 0, 0, 0]))]));
    await waitFor('the next stream is answered', () => raw.frames.some((f) => f.type === FRAME.HEADERS && f.streamId === 3));
    assert.deepEqual(
      (await entries()).slice(before).map((e) => e.request.target),
      ['/reset/after'],
    );
  } finally {
    raw.close();
  }
});

test('more streams than MAX_CONCURRENT_STREAMS at once: the excess is refused with REFUSED_STREAM and stores nothing', async () => {
  const before = (await entries()).length;
  const head = (id: number) =>
    headersFrame(id, [
      [':method', 'POST'],
      [':scheme', 'http'],
      [':path', `/streams/${id}`],
      [':authority', 'x'],
    ]);
  // Six streams in the first flight, before the ingress's SETTINGS (3 streams) can arrive.
  const ids = [1, 3, 5, 7, 9, 11];
  const raw = await RawH2Connection.open(
    stack.ingressPort,
    Buffer.concat(ids.map((id) => Buffer.concat([head(id), frame(FRAME.DATA, 0, id, Buffer.from('part'))]))),
  );
  try {
    await waitFor('three streams refused', () => ids.filter((id) => raw.rstCode(id) === constants.NGHTTP2_REFUSED_STREAM).length === 3);
    // The three let in are still open, waiting for the rest of their bodies: nothing stored.
    assert.deepEqual(
      ids.filter((id) => raw.rstCode(id) === null),
      [1, 3, 5],
    );
    assert.equal((await entries()).length, before);
  } finally {
    raw.close();
  }
  await waitFor('the cut streams are counted', async () => (await dropped('aborted')) >= 4);
  assert.equal((await entries()).length, before);
});

test('SIGTERM with HTTP/2 connections open: a stream in flight is answered and stored, then the ingress exits 0', async () => {
  const before = (await entries()).length;
  const idle = connect(`http://127.0.0.1:${stack.ingressPort}`);
  const busy = connect(`http://127.0.0.1:${stack.ingressPort}`);
  idle.on('error', () => undefined);
  busy.on('error', () => undefined);
  try {
    assert.equal((await exchange(idle, { ':method': 'POST', ':path': '/shutdown/first' }, Buffer.from('a'))).headers[':status'], 200);
    // A stream whose body is still coming when the signal arrives.
    const stream = busy.request({ ':method': 'POST', ':path': '/shutdown/in-flight', 'content-type': 'application/grpc' });
    const answered = new Promise<IncomingHttpHeaders>((resolve) => {
      let headers: IncomingHttpHeaders = {};
      stream.on('response', (h) => (headers = h));
      stream.on('trailers', (t) => resolve({ ...headers, ...t }));
      stream.on('close', () => resolve(headers));
    });
    stream.on('error', () => undefined);
    stream.resume();
    stream.write(Buffer.from([0, 0, 0, 0, 2]));
    await waitFor('the stream is open at the ingress', async () => (await metricValue('mirrorplane_ingress_in_flight')) === 1);
    const exited = stack.ingress.stop('SIGTERM');
    await stack.ingress.waitForLog('ingress shutting down');
    stream.end(Buffer.from([1, 2]));
    const answer = await answered;
    assert.equal(answer['grpc-status'], '0', 'the stream in flight is answered');
    assert.equal(await exited, 0);
    assert.deepEqual(
      (await entries()).slice(before).map((e) => e.request.target),
      ['/shutdown/first', '/shutdown/in-flight'],
    );
  } finally {
    idle.destroy();
    busy.destroy();
  }
});

async function metricValue(name: string): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${adminPort}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${name} `));
  return line ? Number(line.split(' ').pop()) : 0;
}

test("PARTITION_KEY=header:host reads an HTTP/2 request's :authority as its host", async () => {
  const partitioned = await Stack.start({ redis, stagingUrl: staging.url, workers: 0, env: { PARTITIONS: '3', PARTITION_KEY: 'header:host' } });
  const client = redis.client();
  try {
    const hosts = ['a.example', 'b.example', 'c.example', 'd.example'];
    for (const host of hosts) {
      const session = connect(`http://127.0.0.1:${partitioned.ingressPort}`);
      try {
        for (let i = 0; i < 2; i++)
          assert.equal((await exchange(session, { ':method': 'POST', ':path': '/p', ':authority': host }, Buffer.from('x'))).headers[':status'], 200);
      } finally {
        session.close();
      }
    }
    const keys = partitionKeys(partitioned.env.MIRRORPLANE_PREFIX as string, 3);
    for (const host of hosts) {
      const counts = await Promise.all(
        keys.map(async (k) => {
          const rows = (await client.xrangeBuffer(k.stream, '-', '+')) as [Buffer, Buffer[]][];
          return rows.map(([id, f]) => decodeEntry(id.toString(), f)).filter((e) => e.request.rawHeaders.includes(host)).length;
        }),
      );
      assert.deepEqual(
        counts.map((c, i) => (c > 0 ? i : -1)).filter((i) => i >= 0),
        [partitionOf(host, 3)],
        `${host}: one partition, by its :authority`,
      );
    }
  } finally {
    client.disconnect();
    await partitioned.close();
  }
});

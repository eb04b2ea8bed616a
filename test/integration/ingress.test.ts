import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { connect } from 'node:net';
import { RecordingServer, RedisServer, Stack, freePort, requestHead, sendRaw, waitFor, MirrorplaneProcess } from '../helpers/index.js';

let redis: RedisServer;
let staging: RecordingServer;
let stack: Stack;
let adminPort: number;

before(async () => {
  redis = await RedisServer.start();
  staging = await RecordingServer.start();
  // No worker: these tests look at what the ingress appends.
  stack = await Stack.start({ redis, stagingUrl: staging.url, workers: 0, env: { MAX_BODY_BYTES: '1000', APPEND_TIMEOUT_MS: '500' } });
  await stack.ingress.stop('SIGKILL');
  adminPort = await freePort();
  await stack.startIngress({ ADMIN_PORT: String(adminPort) });
});

after(async () => {
  await stack?.close();
  await staging?.close();
  await redis?.close();
});

async function streamLength(): Promise<number> {
  const client = redis.client();
  try {
    return await client.xlen(`{${stack.env.MIRRORPLANE_PREFIX}}:stream`);
  } finally {
    client.disconnect();
  }
}

async function metric(name: string): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${adminPort}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(name));
  return line ? Number(line.split(' ').pop()) : 0;
}

test('health and readiness answer on the admin port, not the traffic port', async () => {
  assert.equal((await fetch(`http://127.0.0.1:${adminPort}/healthz`)).status, 200);
  assert.equal((await fetch(`http://127.0.0.1:${adminPort}/readyz`)).status, 200);
  const before = await streamLength();
  const res = await sendRaw(stack.ingressPort, requestHead('GET', '/healthz', ['Host', 'x']));
  assert.equal(res.status, 200);
  assert.equal(await streamLength(), before + 1, '/healthz on the traffic port is mirrored traffic like any path');
});

test('an oversized body gets 413, is counted and appends nothing', async () => {
  const before = await streamLength();
  const declared = await sendRaw(stack.ingressPort, requestHead('POST', '/big', ['Host', 'x'], 1001), Buffer.alloc(1001, 1));
  assert.equal(declared.status, 413);
  // Chunked: the size is only known while reading.
  const chunk = Buffer.alloc(600, 2).toString('latin1');
  const chunked = await sendRaw(
    stack.ingressPort,
    `POST /big-chunked HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n258\r\n${chunk}\r\n258\r\n${chunk}\r\n0\r\n\r\n`,
  );
  assert.equal(chunked.status, 413);
  const exact = await sendRaw(stack.ingressPort, requestHead('POST', '/exact', ['Host', 'x'], 1000), Buffer.alloc(1000, 3));
  assert.equal(exact.status, 200);
  assert.equal(await streamLength(), before + 1);
  assert.equal(await metric('mirrorplane_ingress_requests_dropped_total{reason="too_large"}'), 2);
});

test('with Redis down the ingress answers 503 at once, and recovers by itself', async () => {
  await redis.stop();
  await waitFor('readiness to turn false', async () => (await fetch(`http://127.0.0.1:${adminPort}/readyz`)).status === 503);
  const statuses = await Promise.all(
    Array.from({ length: 20 }, () =>
      sendRaw(stack.ingressPort, requestHead('POST', '/during-outage', ['Host', 'x'], 2), Buffer.from('hi')).then((r) => r.status),
    ),
  );
  assert.deepEqual(new Set(statuses), new Set([503]));
  assert.ok((await metric('mirrorplane_ingress_requests_dropped_total{reason="redis_unavailable"}')) >= 20);
  await redis.start();
  await waitFor(
    'the ingress to accept again',
    async () => (await sendRaw(stack.ingressPort, requestHead('GET', '/after', ['Host', 'x']))).status === 200,
    30_000,
    100,
  );
  assert.equal((await fetch(`http://127.0.0.1:${adminPort}/readyz`)).status, 200);
});

test('SIGTERM lets a request whose body is still arriving finish, then exits 0', async () => {
  const port = await freePort();
  const admin = await freePort();
  const ingress = new MirrorplaneProcess(['ingress'], { ...stack.env, INGRESS_PORT: String(port), INGRESS_HOST: '127.0.0.1', ADMIN_PORT: String(admin) });
  await ingress.waitForLog('ingress listening');
  const before = await streamLength();
  const socket = connect(port, '127.0.0.1');
  const answer = new Promise<string>((resolve) => {
    let text = '';
    socket.on('data', (d: Buffer) => {
      text += d.toString('latin1');
    });
    socket.on('close', () => resolve(text));
  });
  socket.write('POST /slow HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nhello');
  await waitFor('the request to be in flight', async () =>
    (await (await fetch(`http://127.0.0.1:${admin}/metrics`)).text()).includes('mirrorplane_ingress_in_flight 1'),
  );
  ingress.child.kill('SIGTERM');
  await ingress.waitForLog('ingress shutting down');
  // New connections are refused once it stops accepting.
  await waitFor(
    'the port to close',
    () =>
      new Promise<boolean>((resolve) => {
        const probe = connect(port, '127.0.0.1');
        probe.on('error', () => resolve(true));
        probe.on('connect', () => {
          probe.destroy();
          resolve(false);
        });
      }),
  );
  socket.write('world');
  const text = await answer;
  assert.match(text, /^HTTP\/1\.1 200/, ingress.stdout + ingress.stderr);
  assert.equal(await ingress.exited, 0);
  assert.equal(await streamLength(), before + 1);
});

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import * as grpc from '@grpc/grpc-js';
import { RedisServer, Stack, waitFor } from '../helpers/index.js';
import { ECHO_SERVICE, EchoServer, GrpcTee, echoClient, type EchoClient, type ReceivedCall } from '../helpers/grpc.js';

// gRPC mirrored end to end with real grpc-js servers: a grpc-js client calls through a tee that
// forwards to production and copies each HTTP/2 stream to the ingress over h2c (as Envoy's
// request mirror does); the worker replays over HTTP/2 to a grpc-js staging.

let redis: RedisServer;
let production: EchoServer;
let staging: EchoServer;
let stack: Stack;
let tee: GrpcTee;
let client: EchoClient;

before(async () => {
  redis = await RedisServer.start();
  production = await EchoServer.start();
  staging = await EchoServer.start();
  stack = await Stack.start({ redis, stagingUrl: staging.url, workers: 1, env: { REPLAY_ATTEMPTS: '3', REPLAY_BACKOFF_MS: '50', RETRY_MAX_DELAY_MS: '200' } });
  tee = await GrpcTee.start(production.url, `http://127.0.0.1:${stack.ingressPort}`);
  client = echoClient(`127.0.0.1:${tee.port}`);
});

after(async () => {
  client?.close();
  await tee?.close();
  await stack?.close();
  await staging?.close();
  await production?.close();
  await redis?.close();
});

const MIRRORPLANE_KEYS = new Set(['x-mirrorplane-id', 'x-mirrorplane-attempt']);

/** Staging's metadata minus what the replay adds (its id and attempt), to compare with production's. */
function withoutReplayKeys(call: ReceivedCall): Record<string, (string | Buffer)[]> {
  return Object.fromEntries(Object.entries(call.metadata).filter(([k]) => !MIRRORPLANE_KEYS.has(k)));
}

function metadata(tag: string): grpc.Metadata {
  const m = new grpc.Metadata();
  m.set('x-tag', tag);
  m.add('x-multi', 'one');
  m.add('x-multi', 'two');
  m.set('trace-bin', Buffer.from([0x00, 0xff, 0x10, 0x80]));
  return m;
}

const callsTagged = (server: EchoServer, tag: string): ReceivedCall[] => server.calls.filter((c) => c.metadata['x-tag']?.[0] === tag);

test('unary, server-streaming, client-streaming and bidi calls reach staging with the same method, metadata and message bytes', async () => {
  const big = randomBytes(70_000); // spans several DATA frames
  const messages: Buffer[] = [Buffer.from([0x00, 0x01, 0xff]), big, Buffer.alloc(0), Buffer.from('tail\u00e9')];

  const unary = await new Promise<Buffer>((resolve, reject) =>
    client.unary(big, metadata('unary'), (error: grpc.ServiceError | null, reply: Buffer) => (error ? reject(error) : resolve(reply))),
  );
  assert.deepEqual(unary, Buffer.concat([Buffer.from('re:'), big]), 'production answered the client');

  const serverStream = client.serverStream(messages[0] as Buffer, metadata('server-stream'));
  const streamed: Buffer[] = [];
  serverStream.on('data', (m: Buffer) => streamed.push(m));
  await new Promise<void>((resolve, reject) => {
    serverStream.on('status', (s: grpc.StatusObject) => (s.code === grpc.status.OK ? resolve() : reject(new Error(s.details))));
    serverStream.on('error', reject);
  });
  assert.equal(streamed.length, 3);

  await new Promise<void>((resolve, reject) => {
    const call = client.clientStream(metadata('client-stream'), (error: grpc.ServiceError | null) => (error ? reject(error) : resolve()));
    for (const m of messages) call.write(m);
    call.end();
  });

  await new Promise<void>((resolve, reject) => {
    const call = client.bidi(metadata('bidi'));
    let replies = 0;
    call.on('data', () => {
      replies += 1;
      // Each message after the previous one's answer: a real conversation.
      if (replies < messages.length) call.write(messages[replies] as Buffer);
      else call.end();
    });
    call.on('status', (s: grpc.StatusObject) => (s.code === grpc.status.OK ? resolve() : reject(new Error(s.details))));
    call.on('error', reject);
    call.write(messages[0] as Buffer);
  });

  const expected: [string, string, Buffer[]][] = [
    ['unary', ECHO_SERVICE.unary!.path, [big]],
    ['server-stream', ECHO_SERVICE.serverStream!.path, [messages[0] as Buffer]],
    ['client-stream', ECHO_SERVICE.clientStream!.path, messages],
    ['bidi', ECHO_SERVICE.bidi!.path, messages],
  ];
  for (const [tag, path, sent] of expected) {
    const [received] = await waitFor(`staging received the ${tag} call`, () => {
      const calls = callsTagged(staging, tag);
      return calls.length > 0 ? calls : null;
    });
    const [atProduction] = callsTagged(production, tag);
    assert.ok(received && atProduction);
    assert.equal(received.path, path, tag);
    assert.deepEqual(received.messages, sent, `${tag}: message bytes`);
    assert.deepEqual(received.messages, atProduction.messages, `${tag}: the same messages production got`);
    assert.deepEqual(withoutReplayKeys(received), atProduction.metadata, `${tag}: metadata`);
    assert.deepEqual(received.metadata['trace-bin'], [Buffer.from([0x00, 0xff, 0x10, 0x80])]);
    assert.match(String(received.metadata['x-mirrorplane-id']?.[0]), /^\d+-\d+$/);
  }
  await waitFor('every replay finished', async () => (await stack.status()).replayed >= 4);
  assert.equal(callsTagged(staging, 'unary').length, 1, 'replayed once');
});

test('staging answering UNAVAILABLE is retried, then lands in the failed set; failed replay delivers once staging is fixed', async () => {
  staging.failWith = grpc.status.UNAVAILABLE;
  const failedBefore = (await stack.status()).failed;
  const message = randomBytes(512);
  await new Promise<void>((resolve, reject) =>
    client.unary(message, metadata('unavailable'), (error: grpc.ServiceError | null) => (error ? reject(error) : resolve())),
  );
  await waitFor('the entry is in the failed set', async () => (await stack.status()).failed === failedBefore + 1, 60_000, 100);
  const tries = callsTagged(staging, 'unavailable');
  assert.equal(tries.length, 3, 'REPLAY_ATTEMPTS tries');
  assert.deepEqual(
    tries.map((c) => c.metadata['x-mirrorplane-attempt']?.[0]),
    ['1', '2', '3'],
  );
  const list = await stack.cli(['failed', 'list']);
  assert.match(list.stdout, /POST \/mirror\.test\.Echo\/Unary/);
  assert.match(list.stdout, /MP_ERR_GRPC_STATUS: staging answered grpc-status 14/);

  staging.failWith = null;
  const replay = await stack.cli(['failed', 'replay', '--all']);
  assert.equal(replay.code, 0, replay.stderr);
  await waitFor('staging received the call again', () => callsTagged(staging, 'unavailable').length === 4);
  const delivered = callsTagged(staging, 'unavailable')[3] as ReceivedCall;
  assert.deepEqual(delivered.messages, [message]);
  assert.deepEqual(withoutReplayKeys(delivered), callsTagged(production, 'unavailable')[0]?.metadata);
  await waitFor('the failed set is empty again', async () => (await stack.status()).failed === failedBefore);
});

test('a non-retryable gRPC error (NOT_FOUND) completes the replay: tried once, not failed', async () => {
  staging.failWith = grpc.status.NOT_FOUND;
  try {
    const before = await stack.status();
    await new Promise<void>((resolve, reject) =>
      client.unary(Buffer.from('x'), metadata('not-found'), (error: grpc.ServiceError | null) => (error ? reject(error) : resolve())),
    );
    await waitFor('replayed', async () => (await stack.status()).replayed === before.replayed + 1);
    assert.equal(callsTagged(staging, 'not-found').length, 1);
    assert.equal((await stack.status()).failed, before.failed);
  } finally {
    staging.failWith = null;
  }
});

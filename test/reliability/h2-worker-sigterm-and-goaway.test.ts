import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { connect, createServer, type Http2Server, type IncomingHttpHeaders, type ServerHttp2Stream } from 'node:http2';
import type { AddressInfo } from 'node:net';
import { RedisServer, Stack, waitFor } from '../helpers/index.js';

// Issue #18: SIGTERM of a worker while HTTP/2 replays are in flight at a slow staging: graceful
// (exit 0), nothing lost (every entry reaches staging, by this worker or the next), and staging
// sends GOAWAY mid-run: the replays it did not take are retried, not failed.

let redis: RedisServer;
let staging: Http2Server;
let stagingUrl: string;
let stack: Stack;
const seen = new Map<string, number>();
let goawayOnce = false;

before(async () => {
  redis = await RedisServer.start();
  staging = createServer();
  staging.on('stream', (stream: ServerHttp2Stream, headers: IncomingHttpHeaders) => {
    stream.on('error', () => undefined);
    const path = headers[':path'] as string;
    stream.resume();
    stream.on('end', () => {
      seen.set(path, (seen.get(path) ?? 0) + 1);
      if (path.startsWith('/goaway/') && !goawayOnce) {
        goawayOnce = true;
        // GOAWAY naming no stream as processed, then the connection closes.
        stream.session?.goaway(0, 0);
        stream.session?.destroy();
        return;
      }
      const reply = (): void => {
        if (stream.destroyed) return;
        stream.respond({ ':status': 200, 'content-type': 'application/grpc' }, { waitForTrailers: true });
        stream.once('wantTrailers', () => stream.sendTrailers({ 'grpc-status': '0' }));
        stream.end(Buffer.from([0, 0, 0, 0, 0]));
      };
      if (path.startsWith('/slow/')) setTimeout(reply, 1500);
      else reply();
    });
  });
  await new Promise<void>((resolve) => staging.listen(0, '127.0.0.1', resolve));
  stagingUrl = `http://127.0.0.1:${(staging.address() as AddressInfo).port}`;
  stack = await Stack.start({ redis, stagingUrl, workers: 1, env: { REPLAY_ATTEMPTS: '5', CLAIM_IDLE_MS: '2000', SHUTDOWN_TIMEOUT_MS: '15000' } });
});

after(async () => {
  await stack?.close();
  await new Promise((resolve) => staging?.close(resolve));
  await redis?.close();
});

async function send(path: string): Promise<string | undefined> {
  const session = connect(`http://127.0.0.1:${stack.ingressPort}`);
  session.on('error', () => undefined);
  return new Promise((resolve) => {
    const stream = session.request({ ':method': 'POST', ':path': path, 'content-type': 'application/grpc', te: 'trailers' });
    let status: string | undefined;
    stream.on('response', (h) => (status = (h['grpc-status'] as string | undefined) ?? status));
    stream.on('trailers', (t) => (status = t['grpc-status'] as string));
    stream.on('data', () => undefined);
    stream.on('error', () => undefined);
    stream.on('close', () => {
      session.close();
      resolve(status);
    });
    stream.end(Buffer.from([0, 0, 0, 0, 1, 5]));
  });
}

test('SIGTERM with 10 HTTP/2 replays in flight at a slow staging: exit 0, every entry reaches staging, none failed', async () => {
  const paths = Array.from({ length: 10 }, (_, i) => `/slow/${i}`);
  for (const s of await Promise.all(paths.map(send))) assert.equal(s, '0');
  await waitFor('in flight at staging', () => paths.some((p) => seen.has(p)), 30_000);
  const worker = stack.workers[0];
  assert.ok(worker);
  worker.child.kill('SIGTERM');
  assert.equal(await worker.exited, 0, worker.stderr.slice(-800));
  await stack.addWorker();
  await waitFor('all delivered', () => paths.every((p) => (seen.get(p) ?? 0) >= 1), 60_000);
  await waitFor(
    'settled',
    async () => {
      const st = await stack.status();
      return st.backlog === 0 && st.pending === 0 && st.retrying === 0;
    },
    60_000,
  );
  assert.equal((await stack.status()).failed, 0);
});

test('staging sends GOAWAY (last stream 0) and drops the connection mid-replay: the replays are retried and delivered, none failed', async () => {
  const paths = Array.from({ length: 5 }, (_, i) => `/goaway/${i}`);
  for (const s of await Promise.all(paths.map(send))) assert.equal(s, '0');
  await waitFor('all delivered', () => paths.every((p) => (seen.get(p) ?? 0) >= 1), 60_000);
  await waitFor(
    'settled',
    async () => {
      const st = await stack.status();
      return st.backlog === 0 && st.pending === 0 && st.retrying === 0;
    },
    60_000,
  );
  assert.equal((await stack.status()).failed, 0);
});

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { connect } from 'node:net';
import { decodeEntry } from '@mirrorplane/core';
import { RecordingServer, RedisServer, Stack, header, waitFor } from '../helpers/index.js';

// #13/#17: a 200 only for a stored entry, stored once and byte-exact, whatever Redis does
// mid-pipeline (paused with SIGSTOP, killed and restarted, full at maxmemory); answers in order
// on each connection. Clients pipeline many requests per connection (the EncodedXadd path
// corks and batches their XADDs) while the fault happens.

let redis: RedisServer;
let staging: RecordingServer;
let stack: Stack;

before(async () => {
  // appendfsync always: a 200 before the SIGKILL is on disk (a 200 means Redis accepted it; durability is Redis's)
  redis = await RedisServer.start({ appendOnly: true, args: ['--maxmemory-policy', 'noeviction'] });
  staging = await RecordingServer.start();
  stack = await Stack.start({ redis, stagingUrl: staging.url, workers: 0, env: { APPEND_TIMEOUT_MS: '500' } });
});

after(async () => {
  redis?.signal('SIGCONT');
  await stack?.close();
  await staging?.close();
  await redis?.close();
});

function bodyFor(id: string): Buffer {
  // Distinct binary bodies of varying length, with RESP- and HTTP-looking bytes.
  const n = id.length * 37;
  return Buffer.concat([Buffer.from(`${id}\r\n*3\r\n$4\r\nxadd\r\nHTTP/1.1 200 OK\r\n\r\n`, 'latin1'), Buffer.alloc(n % 3000, n % 251)]);
}

/** One connection pipelining `count` requests in one write; resolves with the statuses answered, in order. */
function pipeline(tag: string, count: number): Promise<{ ids: string[]; statuses: number[] }> {
  const ids = Array.from({ length: count }, (_, i) => `${tag}-${i}`);
  const bytes = Buffer.concat(
    ids.flatMap((id) => {
      const body = bodyFor(id);
      return [Buffer.from(`POST /f/${id} HTTP/1.1\r\nHost: x\r\nX-Request-ID: ${id}\r\nContent-Length: ${body.length}\r\n\r\n`, 'latin1'), body];
    }),
  );
  return new Promise((resolve) => {
    const socket = connect({ port: stack.ingressPort, host: '127.0.0.1' });
    const chunks: Buffer[] = [];
    socket.on('data', (c: Buffer) => chunks.push(c));
    socket.on('error', () => undefined);
    socket.on('close', () => {
      const text = Buffer.concat(chunks).toString('latin1');
      resolve({ ids, statuses: [...text.matchAll(/HTTP\/1\.1 (\d{3})/g)].map((m) => Number(m[1])) });
    });
    socket.on('connect', () => socket.end(bytes));
  });
}

async function runWith(fault: () => Promise<void>, label: string): Promise<void> {
  const c = redis.client();
  const stream = `{${stack.env.MIRRORPLANE_PREFIX}}:stream`;
  await c.xtrim(stream, 'MAXLEN', 0);
  let stop = false;
  const results: { ids: string[]; statuses: number[] }[] = [];
  let n = 0;
  const loops = Array.from({ length: 6 }, async (_, k) => {
    while (!stop) results.push(await pipeline(`${label}${k}x${n++}`, 40));
  });
  try {
    await waitFor('traffic flowing', async () => (await c.xlen(stream).catch(() => 0)) > 300, 60_000);
    await fault();
    const after = await waitFor(
      'traffic stored again after the fault',
      async () => {
        const ok = results.slice(-6).some((r) => r.statuses.length === r.ids.length && r.statuses.every((s) => s === 200));
        return ok ? true : null;
      },
      60_000,
    );
    assert.ok(after);
  } finally {
    stop = true;
    await Promise.all(loops);
  }
  const entries = (await c.xrangeBuffer(stream, '-', '+')).map(([id, fields]) => decodeEntry(id.toString(), fields));
  c.disconnect();
  const stored = new Map<string, number>();
  for (const e of entries) {
    const id = header(e.request.rawHeaders, 'x-request-id') as string;
    stored.set(id, (stored.get(id) ?? 0) + 1);
    assert.equal(e.request.body.toString('hex'), bodyFor(id).toString('hex'), `${label}: entry of ${id} holds its body byte-exact`);
  }
  let ok = 0;
  let refused = 0;
  for (const r of results) {
    // In order: some 200s, then at most one refusal (which closes the connection).
    const firstBad = r.statuses.findIndex((s) => s !== 200);
    if (firstBad !== -1) assert.equal(firstBad, r.statuses.length - 1, `${label}: answers after a refusal on one connection: ${r.statuses.join(',')}`);
    r.statuses.forEach((s, i) => {
      const id = r.ids[i] as string;
      if (s === 200) {
        ok++;
        assert.equal(stored.get(id), 1, `${label}: ${id} was answered 200 and is stored ${stored.get(id) ?? 0} times`);
      } else refused++;
    });
  }
  const dup = [...stored].filter(([, n]) => n > 1);
  assert.deepEqual(dup, [], `${label}: entries stored more than once`);
  assert.ok(ok > 0 && refused > 0, `${label}: the fault hit the traffic (${ok} answered 200, ${refused} refused)`);
}

test('Redis paused (SIGSTOP) for 2 s mid-pipeline: every 200 is stored once, byte-exact; answers in order', async () => {
  await runWith(async () => {
    redis.signal('SIGSTOP');
    try {
      await new Promise((r) => setTimeout(r, 2000));
    } finally {
      redis.signal('SIGCONT');
    }
  }, 'stop');
});

test('Redis killed (SIGKILL) and restarted mid-pipeline: every 200 is stored once, byte-exact; answers in order', async () => {
  await runWith(async () => {
    await redis.stop('SIGKILL');
    await new Promise((r) => setTimeout(r, 500));
    await redis.start();
  }, 'kill');
});

test('Redis full (maxmemory) mid-pipeline, then freed: every 200 is stored once, byte-exact; answers in order', async () => {
  await runWith(async () => {
    const c = redis.client();
    try {
      const used = Number(/used_memory:(\d+)/.exec(await c.info('memory'))?.[1]);
      await c.config('SET', 'maxmemory', String(used + 256 * 1024));
      await waitFor('an OOM refusal', async () => Number(/used_memory:(\d+)/.exec(await c.info('memory'))?.[1]) > used + 256 * 1024, 30_000);
      await new Promise((r) => setTimeout(r, 1000));
      await c.config('SET', 'maxmemory', '0');
    } finally {
      c.disconnect();
    }
  }, 'full');
});

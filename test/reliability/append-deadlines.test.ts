import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  KeepAliveConn as Conn,
  RecordingServer,
  RedisServer,
  Stack,
  acceptedCount as accepted,
  droppedCount as dropped,
  freePort,
  requestHead,
  sendRaw,
  startIngress,
  storedIds,
  untilReady,
  waitFor,
} from '../helpers/index.js';

/**
 * Issue #17: APPEND_TIMEOUT_MS is served by the ingress's ExpiryQueue instead of ioredis's timer.
 * Redis is hung (SIGSTOP) shorter and longer than the deadline, then resumed (late replies).
 * Promises: a 200 means stored; a 503 redis_timeout comes after about APPEND_TIMEOUT_MS (never
 * much earlier, never never); nothing is answered twice; /metrics match what clients got; a
 * 503 redis_timeout means "not known to be stored" (docs/RELIABILITY.md §2): stored, and
 * replayed, at most once.
 */

test('Redis paused for less than APPEND_TIMEOUT_MS: the requests waiting get 200 once each, stored once, counted once', async () => {
  const redis = await RedisServer.start();
  const { ingress, port, adminPort, stream } = await startIngress(redis.url, { APPEND_TIMEOUT_MS: '5000' });
  const conns: Conn[] = [];
  try {
    const before = await accepted(adminPort);
    redis.signal('SIGSTOP');
    const n = 12;
    for (let i = 0; i < n; i++) {
      const c = new Conn(port);
      conns.push(c);
      c.send('POST', `/short-pause/${i}`, `short-${i}`, `body-${i}`);
    }
    // Well under the deadline (also the readiness probe's): the hang is a hiccup.
    await new Promise((r) => setTimeout(r, 1200));
    redis.signal('SIGCONT');
    await waitFor('every answer', () => conns.every((c) => c.answers.length >= 1), 30_000);
    // A late answer would come right after the first; give it a moment, then count.
    await waitFor('the counters', async () => (await accepted(adminPort)) - before >= n, 10_000);
    for (const c of conns) {
      assert.equal(c.answers.length, 1, 'one answer per request');
      assert.equal(c.answers[0]?.status, 200);
    }
    assert.equal((await accepted(adminPort)) - before, n);
    assert.equal(await dropped(adminPort, 'redis_timeout'), 0);
    const ids = await storedIds(redis, stream);
    for (let i = 0; i < n; i++) assert.equal(ids.get(`short-${i}`), 1, `short-${i} stored once: ${[...ids.keys()].join(',')}`);
  } finally {
    redis.signal('SIGCONT');
    for (const c of conns) c.close();
    await ingress.stop('SIGKILL');
    await redis.close();
  }
});

test('Redis paused for longer than APPEND_TIMEOUT_MS: 503 redis_timeout after about the deadline, once per request, counted as answered', async (t) => {
  const timeout = 1500;
  const redis = await RedisServer.start();
  const { ingress, port, adminPort } = await startIngress(redis.url, { APPEND_TIMEOUT_MS: String(timeout) });
  const conns: Conn[] = [];
  try {
    const acceptedBefore = await accepted(adminPort);
    redis.signal('SIGSTOP');
    const sentAt = Date.now();
    const n = 10;
    for (let i = 0; i < n; i++) {
      const c = new Conn(port);
      conns.push(c);
      c.send('POST', `/long-pause/${i}`, `long-${i}`, `body-${i}`);
    }
    await waitFor('every answer', () => conns.every((c) => c.answers.length >= 1), 30_000);
    const waited = conns.map((c) => (c.answers[0] as { at: number }).at - sentAt);
    t.diagnostic(`503s after ${Math.min(...waited)}–${Math.max(...waited)} ms (deadline ${timeout} ms)`);
    for (const c of conns) {
      assert.equal(c.answers[0]?.status, 503);
      assert.match(c.answers[0]?.head ?? '', /x-mirrorplane-drop: redis_timeout/i);
    }
    // Never much earlier than the deadline (a connect and a parse are a few ms; 100 ms of slack).
    assert.ok(Math.min(...waited) >= timeout - 100, `a 503 came after ${Math.min(...waited)} ms`);
    assert.ok(Math.max(...waited) <= timeout + 3000, `a 503 came after ${Math.max(...waited)} ms`);
    // Resume: the late replies must not answer anyone again or count as accepted.
    redis.signal('SIGCONT');
    await untilReady(adminPort);
    assert.equal((await sendRaw(port, requestHead('GET', '/after', ['Host', 'x', 'X-Request-ID', 'after']))).status, 200);
    for (const c of conns) assert.equal(c.answers.length, 1, 'answered once');
    assert.equal((await accepted(adminPort)) - acceptedBefore, 1, 'only /after was accepted');
    assert.equal(await dropped(adminPort, 'redis_timeout'), n, 'each 503 counted once as redis_timeout');
  } finally {
    redis.signal('SIGCONT');
    for (const c of conns) c.close();
    await ingress.stop('SIGKILL');
    await redis.close();
  }
});

// A 503 redis_timeout means "not known to be stored" (docs/RELIABILITY.md §2): the append was
// already written to the hung Redis, which runs it when it resumes. What must hold: each such
// request is stored at most once (never resent after the ingress gave up), and replayed at most once.
test('Redis paused for longer than APPEND_TIMEOUT_MS: requests answered 503 redis_timeout are stored at most once when Redis resumes, never twice', async (t) => {
  const timeout = 1000;
  const redis = await RedisServer.start();
  const { ingress, port, adminPort, stream } = await startIngress(redis.url, { APPEND_TIMEOUT_MS: String(timeout) });
  const conns: Conn[] = [];
  try {
    redis.signal('SIGSTOP');
    for (let i = 0; i < 5; i++) {
      const c = new Conn(port);
      conns.push(c);
      c.send('POST', `/refused/${i}`, `refused-${i}`, 'x');
    }
    await waitFor('every answer', () => conns.every((c) => c.answers.length >= 1), 30_000);
    for (const c of conns) assert.equal(c.answers[0]?.status, 503);
    redis.signal('SIGCONT');
    await untilReady(adminPort);
    assert.equal((await sendRaw(port, requestHead('GET', '/after', ['Host', 'x', 'X-Request-ID', 'after']))).status, 200);
    const ids = await storedIds(redis, stream);
    assert.ok(ids.has('after'));
    const refusedButStored = [...ids.keys()].filter((x) => x.startsWith('refused-'));
    t.diagnostic(`answered 503 redis_timeout, stored once Redis resumed: ${refusedButStored.join(', ') || 'none'}`);
    const storedTwice = refusedButStored.filter((x) => (ids.get(x) ?? 0) > 1);
    assert.deepEqual(storedTwice, [], `stored twice: ${storedTwice.join(', ')}`);
    assert.equal(ids.get('after'), 1);
  } finally {
    redis.signal('SIGCONT');
    for (const c of conns) c.close();
    await ingress.stop('SIGKILL');
    await redis.close();
  }
});

test('end to end: requests answered 503 redis_timeout during a hang reach staging at most once after SIGCONT', async (t) => {
  const appendTimeout = 1000;
  const redis = await RedisServer.start();
  const staging = await RecordingServer.start();
  const adminPort = await freePort();
  const stack = await Stack.start({
    redis,
    stagingUrl: staging.url,
    workers: 1,
    env: { APPEND_TIMEOUT_MS: String(appendTimeout) },
    ingressEnv: { ADMIN_PORT: String(adminPort) },
  });
  const conns: Conn[] = [];
  try {
    await untilReady(adminPort, 60_000);
    assert.equal((await sendRaw(stack.ingressPort, requestHead('GET', '/before', ['Host', 'x', 'X-Request-ID', 'before']))).status, 200);
    await waitFor('staging gets /before', () => staging.received.some((r) => r.url === '/before'));
    redis.signal('SIGSTOP');
    // Sent in the first APPEND_TIMEOUT_MS of the hang, before the ingress knows Redis is hung.
    for (let i = 0; i < 4; i++) {
      const c = new Conn(stack.ingressPort);
      conns.push(c);
      c.send('POST', `/refused-e2e/${i}`, `refused-e2e-${i}`, 'x');
    }
    await waitFor('every answer', () => conns.every((c) => c.answers.length >= 1), 30_000);
    for (const c of conns) {
      assert.equal(c.answers[0]?.status, 503);
      assert.match(c.answers[0]?.head ?? '', /x-mirrorplane-drop: redis_timeout/i);
    }
    redis.signal('SIGCONT');
    await untilReady(adminPort);
    assert.equal((await sendRaw(stack.ingressPort, requestHead('GET', '/after', ['Host', 'x', 'X-Request-ID', 'after']))).status, 200);
    await waitFor('staging gets /after', () => staging.received.some((r) => r.url === '/after'), 30_000);
    // Entries Redis took once it resumed are replayed before /after (one stream, one worker).
    const replayed = staging.received.filter((r) => r.url.startsWith('/refused-e2e/')).map((r) => r.url);
    t.diagnostic(`answered 503 redis_timeout, replayed after SIGCONT: ${replayed.join(', ') || 'none'}`);
    assert.equal(new Set(replayed).size, replayed.length, `replayed twice: ${replayed.join(', ')}`);
  } finally {
    redis.signal('SIGCONT');
    for (const c of conns) c.close();
    await stack.close();
    await staging.close();
    await redis.close();
  }
});

test('CLIENT PAUSE WRITE for 3 × APPEND_TIMEOUT_MS (probes still answered): appends answered 503 redis_timeout are stored at most once when the pause ends', async (t) => {
  const timeout = 800;
  const redis = await RedisServer.start();
  const { ingress, port, adminPort, stream } = await startIngress(redis.url, { APPEND_TIMEOUT_MS: String(timeout) });
  const admin = redis.client();
  const conns: Conn[] = [];
  try {
    await admin.call('CLIENT', 'PAUSE', String(3 * timeout), 'WRITE');
    for (let i = 0; i < 4; i++) {
      const c = new Conn(port);
      conns.push(c);
      c.send('POST', `/paused/${i}`, `paused-${i}`, 'x');
    }
    await waitFor('every answer', () => conns.every((c) => c.answers.length >= 1), 30_000);
    const statuses = conns.map((c) => c.answers[0]?.status);
    t.diagnostic(`answers during CLIENT PAUSE WRITE: ${statuses.join(',')}`);
    assert.equal(await dropped(adminPort, 'redis_timeout'), statuses.filter((s) => s === 503).length);
    await waitFor(
      'the pause to end and the ingress to accept',
      async () => (await sendRaw(port, requestHead('GET', '/after', ['Host', 'x', 'X-Request-ID', 'after']))).status === 200,
      30_000,
    );
    const ids = await storedIds(redis, stream);
    for (let i = 0; i < conns.length; i++) {
      const times = ids.get(`paused-${i}`) ?? 0;
      // A 200 is stored exactly once; a 503 redis_timeout at most once.
      if (conns[i]?.answers[0]?.status === 200) assert.equal(times, 1, `paused-${i}: 200 but stored ${times} times`);
      else assert.ok(times <= 1, `paused-${i}: 503 and stored ${times} times`);
    }
  } finally {
    await admin.call('CLIENT', 'UNPAUSE').catch(() => undefined);
    admin.disconnect();
    for (const c of conns) c.close();
    await ingress.stop('SIGKILL');
    await redis.close();
  }
});

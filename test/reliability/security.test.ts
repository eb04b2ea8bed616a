import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import {
  MirrorplaneProcess,
  RecordingServer,
  RedisServer,
  Stack,
  freePort,
  header,
  requestHead,
  runCli,
  sendRaw,
  waitFor,
  useStack,
} from '../helpers/index.js';
import { metric } from './steady-load.js';

let redis: RedisServer;
useStack({}, (s) => {
  redis = s.redis;
});

test('INGRESS_TOKEN: without the right token 401, counted; with it 200, and the token is never stored or replayed', async () => {
  const token = randomBytes(24).toString('hex');
  const staging = await RecordingServer.start();
  const adminPort = await freePort();
  const stack = await Stack.start({ redis, stagingUrl: staging.url, workers: 0, env: { INGRESS_TOKEN: token } });
  await stack.ingress.stop('SIGKILL');
  await stack.startIngress({ ADMIN_PORT: String(adminPort) });
  await stack.addWorker();
  try {
    const wrongSameLength = token.slice(0, -1) + (token.endsWith('a') ? 'b' : 'a');
    for (const headers of [[], ['X-Mirrorplane-Token', 'nope'], ['X-Mirrorplane-Token', wrongSameLength], ['Authorization', `Bearer ${token}`]]) {
      const r = await sendRaw(stack.ingressPort, requestHead('POST', '/no', ['Host', 'x', ...headers], 2), Buffer.from('no'));
      assert.equal(r.status, 401, JSON.stringify(headers));
      assert.match(r.head, /x-mirrorplane-drop: unauthorized/);
    }
    assert.equal(await metric(adminPort, 'mirrorplane_ingress_requests_dropped_total{reason="unauthorized"}'), 4);
    const ok = await sendRaw(
      stack.ingressPort,
      requestHead('POST', '/yes', ['Host', 'x', 'X-Mirrorplane-Token', token, 'X-Request-ID', 'tok-1'], 3),
      Buffer.from('yes'),
    );
    assert.equal(ok.status, 200);
    const got = await waitFor('the replay', () => staging.received.find((r) => header(r.rawHeaders, 'x-request-id') === 'tok-1'));
    assert.equal(header(got.rawHeaders, 'x-mirrorplane-token'), undefined, 'the token does not reach staging');
    assert.ok(!got.rawHeaders.includes(token));
    assert.equal(staging.received.length, 1, 'nothing refused was replayed');
    assert.ok(!stack.ingress.stdout.includes(token), 'nor is it logged');
  } finally {
    await stack.close();
    await staging.close();
  }
});

test('the admin port: loopback by default; elsewhere only with ADMIN_TOKEN, which /metrics then requires', async () => {
  const env = { REDIS_URL: redis.url, MIRRORPLANE_PREFIX: `adm${randomBytes(3).toString('hex')}`, INGRESS_HOST: '127.0.0.1' };
  const refused = new MirrorplaneProcess(['ingress'], {
    ...env,
    INGRESS_PORT: String(await freePort()),
    ADMIN_HOST: '0.0.0.0',
    ADMIN_PORT: String(await freePort()),
  });
  assert.equal(await refused.exited, 2, 'a non-loopback admin port without a token does not start');
  assert.match(refused.stderr, /ADMIN_TOKEN: required when the admin port binds "0\.0\.0\.0"/);

  const adminToken = randomBytes(20).toString('hex');
  const adminPort = await freePort();
  const ingress = new MirrorplaneProcess(['ingress'], {
    ...env,
    INGRESS_PORT: String(await freePort()),
    ADMIN_HOST: '0.0.0.0',
    ADMIN_PORT: String(adminPort),
    ADMIN_TOKEN: adminToken,
  });
  try {
    await ingress.waitForLog('ingress listening');
    const base = `http://127.0.0.1:${adminPort}`;
    assert.equal((await fetch(`${base}/healthz`)).status, 200, 'probes need no token');
    await waitFor('ready', async () => (await fetch(`${base}/readyz`)).status === 200);
    const anonymous = await fetch(`${base}/metrics`);
    assert.equal(anonymous.status, 401);
    assert.match(anonymous.headers.get('www-authenticate') ?? '', /^Bearer/);
    assert.equal((await fetch(`${base}/metrics`, { headers: { authorization: 'Bearer wrong-token-of-some-length' } })).status, 401);
    assert.equal((await fetch(`${base}/anything-else`)).status, 401, 'paths added later are covered too');
    const authorized = await fetch(`${base}/metrics`, { headers: { authorization: `Bearer ${adminToken}` } });
    assert.equal(authorized.status, 200);
    assert.match(await authorized.text(), /mirrorplane_ingress_requests_accepted_total/);
    assert.ok(!ingress.stdout.includes(adminToken));
  } finally {
    await ingress.stop('SIGKILL');
  }
});

/** Every byte Redis holds under the deployment's keys (stream and retry queue), as one buffer. */
async function everythingInRedis(prefix: string): Promise<Buffer> {
  const client = redis.client();
  try {
    const keys = await client.keys(`{${prefix}}*`);
    const parts: Buffer[] = [];
    for (const key of keys) {
      const type = await client.type(key);
      if (type === 'stream') {
        for (const [, fields] of await (client as unknown as { xrangeBuffer(...a: string[]): Promise<[Buffer, Buffer[]][]> }).xrangeBuffer(key, '-', '+'))
          parts.push(...fields);
      } else if (type === 'hash') {
        parts.push(...Object.values(await client.hgetallBuffer(key)));
      } else if (type === 'string') {
        parts.push((await client.getBuffer(key)) ?? Buffer.alloc(0));
      } else if (type === 'list') {
        parts.push(...(await client.lrangeBuffer(key, 0, -1)));
      }
    }
    return Buffer.concat(parts);
  } finally {
    client.disconnect();
  }
}

test('MIRRORPLANE_DATA_KEY: payloads are encrypted in the stream and the retry queue, replayed byte for byte, and keys rotate', async () => {
  const k1 = `k1:${randomBytes(32).toString('base64')}`;
  const k2 = `k2:${randomBytes(32).toString('base64')}`;
  const secretBody = Buffer.concat([Buffer.from('card=4111111111111111&'), randomBytes(64)]);
  const secretPath = '/patients/7f3a9c?ssn=078-05-1120';
  let firstTries = 0;
  // The first try of enc-1 gets 503, so it also waits in the retry queue.
  const staging = await RecordingServer.start((req, res) => {
    const first = header(req.rawHeaders, 'x-request-id') === 'enc-1' && header(req.rawHeaders, 'x-mirrorplane-attempt') === '1';
    if (first) firstTries += 1;
    res.writeHead(first ? 503 : 200).end();
  });
  const stack = await Stack.start({
    redis,
    stagingUrl: staging.url,
    workers: 0,
    env: { MIRRORPLANE_DATA_KEY: k1, REPLAY_BACKOFF_MS: '3000', REPLAY_ATTEMPTS: '3' },
  });
  const prefix = stack.env.MIRRORPLANE_PREFIX!;
  // Until the ingress has reached Redis it answers 503 and stores nothing, so sending again is safe.
  const send = (id: string) =>
    waitFor(
      `${id} accepted`,
      async () => {
        const r = await sendRaw(
          stack.ingressPort,
          requestHead('POST', secretPath, ['Host', 'x', 'Authorization', 'Bearer s3cr3t-t0ken', 'X-Request-ID', id], secretBody.length),
          secretBody,
        );
        return r.status === 200;
      },
      30_000,
      100,
    );
  const assertNothingInClear = async (what: string) => {
    const bytes = await everythingInRedis(prefix);
    assert.ok(bytes.length > 0);
    for (const needle of [secretBody.subarray(0, 22), Buffer.from('ssn=078-05-1120'), Buffer.from('s3cr3t-t0ken'), Buffer.from('Bearer')]) {
      assert.equal(bytes.indexOf(needle), -1, `${what}: ${needle.toString()} is not in Redis in clear`);
      assert.equal(bytes.indexOf(Buffer.from(needle.toString('base64').slice(0, 16))), -1, `${what}: nor in base64`);
    }
  };
  try {
    // Written with k1, no worker yet: the stream holds it encrypted.
    await send('enc-1');
    await assertNothingInClear('in the stream');
    // A worker holding k2 (new) and k1 (old) reads it; its first try fails and it waits for a retry.
    await stack.addWorker({ MIRRORPLANE_DATA_KEY: `${k2},${k1}` });
    await waitFor('the first try', () => firstTries === 1);
    const job = await waitFor('the retry job', async () => {
      const client = redis.client();
      try {
        const [key] = await client.keys(`{${prefix}}:retry:[0-9]*-[0-9]*`);
        return key ? await client.hget(key, 'data') : null;
      } finally {
        client.disconnect();
      }
    });
    const data = JSON.parse(job) as { entry: unknown; raw: Record<string, string> };
    assert.equal(data.entry, null, 'no entry in clear in the job');
    assert.deepEqual(Object.keys(data.raw), ['v', 'm', 't', 'k', 'e']);
    await assertNothingInClear('in the retry queue');
    const got = await waitFor(
      'the retried replay',
      () => staging.received.find((r) => header(r.rawHeaders, 'x-request-id') === 'enc-1' && header(r.rawHeaders, 'x-mirrorplane-attempt') === '2'),
      30_000,
    );
    assert.ok(got.body.equals(secretBody), 'body byte for byte');
    assert.equal(got.url, secretPath);
    assert.equal(header(got.rawHeaders, 'authorization'), 'Bearer s3cr3t-t0ken');

    // Rotation: the ingress now encrypts with k2. A worker that holds only k1 cannot read it and
    // sends it to the failed set with the reason; it never crashes or stalls.
    await stack.ingress.stop('SIGKILL');
    await stack.startIngress({ MIRRORPLANE_DATA_KEY: `${k2},${k1}` });
    await stack.workers.shift()!.stop('SIGKILL');
    await stack.addWorker({ MIRRORPLANE_DATA_KEY: k1 });
    await send('enc-2');
    await waitFor('the entry in the failed set', async () => (await stack.status()).failed === 1, 30_000);
    const rows = JSON.parse((await stack.cli(['failed', 'list', '--json'])).stdout) as { lastError: string }[];
    assert.match(rows[0]!.lastError, /encrypted with key id "k2", which MIRRORPLANE_DATA_KEY does not hold \(it holds "k1"\)/);
    await assertNothingInClear('in the failed set');
    // With the key back, `failed replay` delivers it.
    await stack.workers.shift()!.stop('SIGKILL');
    await stack.addWorker({ MIRRORPLANE_DATA_KEY: `${k2},${k1}` });
    const replay = await stack.cli(['failed', 'replay', '--all']);
    assert.equal(replay.code, 0, replay.stderr);
    const again = await waitFor(
      'the replayed entry',
      () => staging.received.find((r) => header(r.rawHeaders, 'x-request-id') === 'enc-2' && r.body.equals(secretBody)),
      30_000,
    );
    assert.equal(again.url, secretPath);
  } finally {
    await stack.close();
    await staging.close();
  }
});

test('a bad MIRRORPLANE_DATA_KEY stops the process before it takes traffic, without echoing the key', async () => {
  const short = randomBytes(16).toString('base64');
  const proc = new MirrorplaneProcess(['ingress'], {
    REDIS_URL: redis.url,
    INGRESS_PORT: String(await freePort()),
    ADMIN_PORT: '0',
    MIRRORPLANE_DATA_KEY: `k1:${short}`,
  });
  assert.equal(await proc.exited, 2);
  assert.match(proc.stderr, /MIRRORPLANE_DATA_KEY: key "k1": expected 32 bytes in base64/);
  assert.ok(!proc.stderr.includes(short) && !proc.stdout.includes(short));
});

test("an ACL user limited to the deployment's keys, with its password in REDIS_URL, runs the whole loop; a wrong password is refused clearly", async () => {
  const prefix = `acl${randomBytes(3).toString('hex')}`;
  const password = randomBytes(12).toString('hex');
  // The default user stays open for the test helpers; Mirrorplane connects as `mirrorplane`.
  const acl = await RedisServer.start({ args: ['--user', 'mirrorplane', 'on', `>${password}`, `~{${prefix}}*`, '&*', '+@all', '-@admin'] });
  const staging = await RecordingServer.start();
  const url = `redis://mirrorplane:${password}@127.0.0.1:${acl.port}`;
  const stack = await Stack.start({
    redis: acl,
    stagingUrl: staging.url,
    env: { REDIS_URL: url, MIRRORPLANE_PREFIX: prefix, MAX_BACKLOG: '1000', MAX_BACKLOG_BYTES: String(1024 ** 3) },
  });
  try {
    await waitFor(
      'accepted',
      async () => (await sendRaw(stack.ingressPort, requestHead('PUT', '/acl', ['Host', 'x', 'X-Request-ID', 'acl-1'], 2), Buffer.from('ok'))).status === 200,
      30_000,
      100,
    );
    await waitFor('the replay', () => staging.received.some((r) => header(r.rawHeaders, 'x-request-id') === 'acl-1'));
    const status = await stack.cli(['status', '--json']);
    assert.equal(status.code, 0, status.stderr);
    const client = acl.client();
    try {
      const users = ((await client.client('LIST')) as string)
        .split('\n')
        .filter(Boolean)
        .map((l) => /user=(\S+)/.exec(l)?.[1]);
      assert.ok(users.filter((u) => u === 'mirrorplane').length >= 3, `the processes connect as the ACL user: ${users.join(',')}`);
    } finally {
      client.disconnect();
    }
    for (const p of [stack.ingress, ...stack.workers]) assert.ok(!p.stdout.includes(password) && !p.stderr.includes(password));
    const wrong = await runCli(['status'], { ...stack.env, REDIS_URL: `redis://mirrorplane:not-the-password@127.0.0.1:${acl.port}` });
    assert.equal(wrong.code, 1);
    assert.match(wrong.stderr, /MP_ERR_REDIS_UNAVAILABLE: cannot reach Redis at redis:\/\/mirrorplane:\*\*\*@127\.0\.0\.1/);
    assert.ok(!wrong.stderr.includes('not-the-password'));
  } finally {
    await stack.close();
    await staging.close();
    await acl.close();
  }
});

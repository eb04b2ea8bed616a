import { test } from 'node:test';
import assert from 'node:assert/strict';
import { RecordingServer, RedisServer, Stack, freePort, header, requestHead, sendRaw, waitFor, useStack } from '../helpers/index.js';

let redis: RedisServer;
useStack({}, (s) => {
  redis = s.redis;
});

interface FailedRow {
  id: string;
  method: string;
  url: string;
  attempts: number;
  lastError: string;
  failedAt: string;
}

test('a 503 from staging is retried with the same id and a growing attempt number, then succeeds', async () => {
  let calls = 0;
  const staging = await RecordingServer.start((_req, res) => {
    calls += 1;
    res.writeHead(calls <= 2 ? 503 : 200).end();
  });
  const stack = await Stack.start({ redis, stagingUrl: staging.url, env: { REPLAY_ATTEMPTS: '5' } });
  try {
    assert.equal((await sendRaw(stack.ingressPort, requestHead('PUT', '/flaky', ['Host', 'x'], 4), Buffer.from('data'))).status, 200);
    await waitFor('three attempts', () => staging.received.length >= 3);
    const ids = staging.received.map((r) => header(r.rawHeaders, 'x-mirrorplane-id'));
    assert.equal(new Set(ids).size, 1, 'the same x-mirrorplane-id on every attempt');
    assert.deepEqual(
      staging.received.map((r) => header(r.rawHeaders, 'x-mirrorplane-attempt')),
      ['1', '2', '3'],
    );
    assert.ok(staging.received.every((r) => r.body.toString() === 'data' && r.method === 'PUT'));
    const status = await waitFor('the retry to complete', async () => {
      const s = await stack.status();
      return s.replayed === 1 && s.retrying === 0 ? s : null;
    });
    assert.equal(status.failed, 0);
  } finally {
    await stack.close();
    await staging.close();
  }
});

test('a refused connection is retried until staging comes up', async () => {
  const port = await freePort();
  const stack = await Stack.start({ redis, stagingUrl: `http://127.0.0.1:${port}`, env: { REPLAY_ATTEMPTS: '10', REPLAY_BACKOFF_MS: '200' } });
  let staging: RecordingServer | undefined;
  try {
    assert.equal((await sendRaw(stack.ingressPort, requestHead('POST', '/later', ['Host', 'x'], 5), Buffer.from('later'))).status, 200);
    await waitFor('the entry to wait in the retry queue', async () => (await stack.status()).retrying === 1);
    staging = new RecordingServer();
    await staging.listen(port);
    await waitFor('the replay to arrive', () => staging!.received.length === 1, 60_000);
    const r = staging.received[0]!;
    assert.equal(r.body.toString(), 'later');
    assert.ok(Number(header(r.rawHeaders, 'x-mirrorplane-attempt')) >= 2);
    await waitFor('status to show it replayed', async () => (await stack.status()).replayed === 1);
  } finally {
    await stack.close();
    await staging?.close();
  }
});

test('exhausted attempts land in the failed set; failed replay --all delivers them once staging is fixed', async () => {
  let healthy = false;
  const staging = await RecordingServer.start((_req, res) => void res.writeHead(healthy ? 201 : 500).end());
  const stack = await Stack.start({ redis, stagingUrl: staging.url, env: { REPLAY_ATTEMPTS: '3', REPLAY_BACKOFF_MS: '50' } });
  try {
    for (const path of ['/a', '/b']) {
      assert.equal(
        (await sendRaw(stack.ingressPort, requestHead('POST', path, ['Host', 'x', 'Authorization', 'Bearer hush'], 2), Buffer.from('zz'))).status,
        200,
      );
    }
    await waitFor('two failed entries', async () => (await stack.status()).failed === 2, 60_000);
    assert.equal(staging.received.length, 6, 'three attempts each');
    const list = await stack.cli(['failed', 'list', '--json']);
    assert.equal(list.code, 0, list.stderr);
    const rows = JSON.parse(list.stdout) as FailedRow[];
    assert.equal(rows.length, 2);
    for (const row of rows) {
      assert.equal(row.method, 'POST');
      assert.ok(row.url === '/a' || row.url === '/b');
      assert.equal(row.attempts, 3);
      assert.match(row.lastError, /staging answered 500/);
      assert.ok(!Number.isNaN(Date.parse(row.failedAt)));
      assert.ok(staging.received.some((r) => header(r.rawHeaders, 'x-mirrorplane-id') === row.id));
    }
    const table = await stack.cli(['failed', 'list']);
    assert.match(table.stdout, /staging answered 500/);
    assert.doesNotMatch(table.stdout + list.stdout, /hush/, 'no secrets in the CLI');

    healthy = true;
    const replay = await stack.cli(['failed', 'replay', '--all']);
    assert.equal(replay.code, 0, replay.stderr);
    assert.match(replay.stdout, /replayed 2 failed entries/);
    await waitFor(
      'both to be delivered',
      () => staging.received.filter((r) => header(r.rawHeaders, 'x-mirrorplane-attempt') !== undefined).length === 8 && staging.received.slice(6).length === 2,
    );
    const delivered = staging.received.slice(6);
    assert.deepEqual(delivered.map((r) => r.url).sort(), ['/a', '/b']);
    const status = await waitFor('status to settle', async () => {
      const s = await stack.status();
      return s.failed === 0 && s.retrying === 0 && s.replayed === 2 ? s : null;
    });
    assert.equal(status.backlog, 0);
  } finally {
    await stack.close();
    await staging.close();
  }
});

test('failed replay by id, unknown ids and purge', async () => {
  const staging = await RecordingServer.start((_req, res) => void res.writeHead(502).end());
  const stack = await Stack.start({ redis, stagingUrl: staging.url, env: { REPLAY_ATTEMPTS: '1' } });
  try {
    for (let i = 0; i < 3; i++) await sendRaw(stack.ingressPort, requestHead('GET', `/x${i}`, ['Host', 'x']));
    await waitFor('three failed', async () => (await stack.status()).failed === 3);
    assert.equal(staging.received.length, 3, 'REPLAY_ATTEMPTS=1 means one try');
    const rows = JSON.parse((await stack.cli(['failed', 'list', '--json', '--limit', '2'])).stdout) as FailedRow[];
    assert.equal(rows.length, 2);
    const unknown = await stack.cli(['failed', 'replay', 'nope-1']);
    assert.notEqual(unknown.code, 0);
    assert.match(unknown.stderr, /MP_ERR_NOT_FOUND.*nope-1/);
    const usage = await stack.cli(['failed', 'replay']);
    assert.equal(usage.code, 2);
    assert.match(usage.stderr, /--all/);
    const one = await stack.cli(['failed', 'replay', rows[0]!.id]);
    assert.match(one.stdout, /replayed 1 failed entry/);
    await waitFor('the replayed one to fail again', () => staging.received.length === 4);
    const purge = await stack.cli(['failed', 'purge', '--yes']);
    assert.equal(purge.code, 0);
    await waitFor('an empty failed set', async () => (await stack.status()).failed === 0);
  } finally {
    await stack.close();
    await staging.close();
  }
});

test('an undecodable entry goes straight to the failed set with the reason, and the group keeps going', async () => {
  const staging = await RecordingServer.start();
  const stack = await Stack.start({ redis, stagingUrl: staging.url });
  const client = redis.client();
  try {
    await client.xadd(`{${stack.env.MIRRORPLANE_PREFIX}}:stream`, '*', 'hello', 'world');
    await client.xadd(`{${stack.env.MIRRORPLANE_PREFIX}}:stream`, '*', 'v', '1', 'm', 'GET');
    await sendRaw(stack.ingressPort, requestHead('GET', '/good', ['Host', 'x']));
    await waitFor('the good one to arrive', () => staging.received.length === 1);
    await waitFor('two failed', async () => (await stack.status()).failed === 2);
    const rows = JSON.parse((await stack.cli(['failed', 'list', '--json'])).stdout) as FailedRow[];
    const errors = rows.map((r) => r.lastError).sort();
    assert.match(errors[0]!, /unknown field "hello"/);
    assert.match(errors[1]!, /no request-target/);
    assert.ok(rows.every((r) => r.attempts === 0 && r.method === null));
    assert.equal((await stack.status()).backlog, 0);
  } finally {
    client.disconnect();
    await stack.close();
    await staging.close();
  }
});

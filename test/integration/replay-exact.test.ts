import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { assertStagingHeaders, header, RecordingServer, requestHead, sendRaw, useStack, waitFor } from '../helpers/index.js';

const s = useStack({ staging: true, roles: {} });

interface Case {
  method: string;
  target: string;
  headers: string[];
  body: Buffer;
}

const bodies: [string, Buffer][] = [
  ['empty', Buffer.alloc(0)],
  ['utf8', Buffer.from('{"name":"Zoë","city":"Zürich","emoji":"🚀"}', 'utf8')],
  ['binary', randomBytes(64 * 1024)],
];

test('staging receives every method, body and header byte for byte', async () => {
  const cases: Case[] = [];
  let n = 0;
  for (const method of ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS']) {
    for (const [kind, body] of bodies) {
      if ((method === 'GET' || method === 'HEAD' || method === 'OPTIONS') && kind !== 'empty') continue;
      n += 1;
      cases.push({
        method,
        target: `/api/items/${n}?kind=${kind}&q=${encodeURIComponent('a b&c')}`,
        headers: [
          'Host',
          'shop.example.com',
          'X-Request-ID',
          `req-${n}`,
          'X-Dup',
          'one',
          'x-dup',
          'two',
          'X-MiXeD-CaSe',
          'Value With  Spaces',
          'Accept',
          '*/*',
          'Authorization',
          'Bearer secret-token',
          'Cookie',
          'session=abc',
        ],
        body,
      });
    }
  }
  cases.push({
    method: 'GET',
    target: `/search?${Array.from({ length: 300 }, (_, i) => `k${i}=${'v'.repeat(20)}`).join('&')}`,
    headers: ['Host', 'shop.example.com', 'X-Request-ID', 'req-long-query'],
    body: Buffer.alloc(0),
  });
  cases.push({
    method: 'POST',
    target: '/upload',
    headers: ['Host', 'shop.example.com', 'X-Request-ID', 'req-latin1', 'X-Latin', 'caf\u00e9 na\u00efve'],
    body: Buffer.from([0, 255, 13, 10, 13, 10, 0]),
  });

  for (const c of cases) {
    const res = await sendRaw(s.roles.ingressPort, requestHead(c.method, c.target, c.headers, c.body.length > 0 ? c.body.length : undefined), c.body);
    assert.equal(res.status, 200, `${c.method} ${c.target.slice(0, 40)} accepted`);
  }
  await waitFor(`staging to receive ${cases.length} requests`, () => s.staging.received.length >= cases.length, 60_000);
  assert.equal(s.staging.received.length, cases.length);
  const stagingHost = new URL(s.staging.url).host;
  for (const c of cases) {
    const id = header(c.headers, 'x-request-id') as string;
    const got = s.staging.received.filter((r) => header(r.rawHeaders, 'x-request-id') === id);
    assert.equal(got.length, 1, `one replay of ${id}`);
    const r = got[0]!;
    assert.equal(r.method, c.method);
    assert.equal(r.url, c.target);
    assert.ok(r.body.equals(c.body), `body of ${id} is byte-identical`);
    // As sent on the wire by requestHead: Content-Length (kept in place) then Connection (hop-by-hop).
    const sent = c.body.length > 0 ? [...c.headers, 'Content-Length', String(c.body.length), 'Connection', 'close'] : [...c.headers, 'Connection', 'close'];
    assertStagingHeaders(r, sent, { host: stagingHost });
  }
});

test('the stream is empty after a drained load and status agrees with what was sent', async () => {
  const before = s.staging.received.length;
  const total = 300;
  await Promise.all(
    Array.from({ length: total }, (_, i) =>
      sendRaw(s.roles.ingressPort, requestHead('POST', `/load/${i}`, ['Host', 'x'], 3), Buffer.from('abc')).then((r) => assert.equal(r.status, 200)),
    ),
  );
  await waitFor('the load to drain', () => s.staging.received.length >= before + total, 60_000);
  const status = await waitFor('status to settle', async () => {
    const st = await s.roles.status();
    return st.backlog === 0 && st.pending === 0 ? st : null;
  });
  const { backlog, pending, retrying, failed, replayed, oldestBacklogAgeMs } = status;
  assert.deepEqual(
    { backlog, pending, retrying, failed, replayed, oldestBacklogAgeMs },
    { backlog: 0, pending: 0, retrying: 0, failed: 0, replayed: s.staging.received.length, oldestBacklogAgeMs: null },
  );
  const client = s.client();
  try {
    assert.equal(await client.xlen(s.keys().stream), 0, 'finished entries leave Redis');
  } finally {
    client.disconnect();
  }
});

test('an absolute-form target or a forged Host cannot send the replay anywhere but staging', async () => {
  const elsewhere = await RecordingServer.start();
  try {
    const before = s.staging.received.length;
    const res = await sendRaw(
      s.roles.ingressPort,
      requestHead('GET', `http://127.0.0.1:${elsewhere.port}/steal?x=1`, ['Host', `127.0.0.1:${elsewhere.port}`, 'X-Request-ID', 'req-abs']),
    );
    assert.equal(res.status, 200);
    await waitFor('the replay', () => s.staging.received.length > before);
    const r = s.staging.received.find((x) => header(x.rawHeaders, 'x-request-id') === 'req-abs')!;
    assert.equal(r.url, '/steal?x=1');
    assert.equal(header(r.rawHeaders, 'host'), new URL(s.staging.url).host);
    assert.equal(elsewhere.received.length, 0);
  } finally {
    await elsewhere.close();
  }
});

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { CompareOptions, compileComparison, routeOf } from '@mirrorplane/core';

const comparison = compileComparison(CompareOptions.parse({ ignore: ['createdAt', '$.meta.requestId', 'items[*].etag'] }));
const json = (body: unknown, status = 200, type = 'application/json') => ({ status, headers: ['Content-Type', type], body: Buffer.from(JSON.stringify(body)) });

test('equal JSON with reordered keys and ignored paths compares equal', () => {
  const a = json({ id: 'ord_1', total: 5, createdAt: 'x', meta: { requestId: 'r1', v: 2 }, items: [{ sku: 'a', etag: '1' }] });
  const b = json({ items: [{ etag: '2', sku: 'a' }], meta: { v: 2, requestId: 'r2' }, createdAt: 'y', total: 5, id: 'ord_1' });
  assert.deepEqual(comparison.compare(a, b), { equal: true, differences: [] });
});

test('a real difference is reported with its precise path', () => {
  const a = json({
    items: [
      { sku: 'a', price: 5 },
      { sku: 'b', price: 7 },
    ],
    total: 12,
  });
  const b = json({
    items: [
      { sku: 'a', price: 5 },
      { sku: 'b', price: 8 },
    ],
    total: 13,
    extra: true,
  });
  assert.deepEqual(comparison.compare(a, b).differences, [
    { path: '$.extra', production: undefined, staging: true },
    { path: '$.items[1].price', production: 7, staging: 8 },
    { path: '$.total', production: 12, staging: 13 },
  ]);
});

test('mapped IDs compare as equal; unmapped different IDs do not', () => {
  const a = json({ id: 'ord_812', parent: 'ord_1' });
  const b = json({ id: 'stg_17', parent: 'stg_9' });
  const ids = new Map([['ord_812', 'stg_17']]);
  assert.deepEqual(
    comparison.compare(a, b, ids).differences.map((d) => d.path),
    ['$.parent'],
  );
});

test('status, chosen headers and non-JSON bodies by digest', () => {
  const a = { status: 200, headers: ['content-type', 'text/plain'], body: Buffer.from('hello') };
  const b = { status: 201, headers: ['content-type', 'text/html'], body: Buffer.from('hellO') };
  const d = comparison.compare(a, b).differences;
  assert.deepEqual(
    d.map((x) => x.path),
    ['status', 'headers.content-type', 'body'],
  );
  assert.match(String(d[2]!.production), /^sha256:[0-9a-f]{16} \(5 bytes\)$/);
  assert.equal(comparison.compare(a, { ...a }).equal, true);
});

test('routes group IDs', () => {
  assert.equal(routeOf('get', '/orders/ord_812?x=1'), 'GET /orders/:id');
  assert.equal(routeOf('PUT', '/users/42/orders/7'), 'PUT /users/:id/orders/:id');
  assert.equal(routeOf('GET', '/v2/health'), 'GET /v2/health');
});

/** A gRPC answer: length-prefixed messages, grpc-status among the fields (trailers merged). */
const grpcAnswer = (messages: Buffer[], grpcStatus: string) => ({
  status: 200,
  headers: ['content-type', 'application/grpc', 'grpc-status', grpcStatus],
  body: Buffer.concat(messages.map((m) => Buffer.concat([Buffer.from([0, 0, 0, m.length >> 8, m.length & 0xff]), m]))),
});

test('gRPC answers compare grpc-status and each message by its bytes, not as JSON or as one body', () => {
  const m1 = Buffer.from([0x08, 0x96, 0x01]);
  const m2 = Buffer.from('{"not":"json compared"}');
  assert.deepEqual(comparison.compare(grpcAnswer([m1, m2], '0'), grpcAnswer([m1, m2], '0')), { equal: true, differences: [] });
  const differences = comparison.compare(grpcAnswer([m1, m2], '0'), grpcAnswer([m1, Buffer.from('{"not":"json Compared"}'), m1], '14')).differences;
  assert.deepEqual(
    differences.map((d) => d.path),
    ['grpc-status', 'messages.length', 'messages[1]'],
  );
  assert.deepEqual(differences[0], { path: 'grpc-status', production: '0', staging: '14' });
  // A trailers-only answer (no body) against one with a message.
  assert.deepEqual(
    comparison.compare(grpcAnswer([], '5'), grpcAnswer([m1], '0')).differences.map((d) => d.path),
    ['grpc-status', 'messages.length'],
  );
});

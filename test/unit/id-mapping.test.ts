import { test } from 'node:test';
import assert from 'node:assert/strict';
import { IdMappingOptions, compileIdMapping, parseJsonDocument, type MappableRequest } from '@mirrorplane/core';

const mapping = compileIdMapping(
  IdMappingOptions.parse({
    kinds: [
      {
        name: 'order',
        learn: [
          { match: { methods: ['POST'], pathPrefix: '/orders' }, from: { json: 'id' } },
          { match: { methods: ['POST'], path: '^/carts$' }, from: { location: '/carts/(?<id>[^/]+)$' } },
          { match: { methods: ['PUT'], pathPrefix: '/things' }, from: { header: 'x-thing-id' } },
        ],
        use: [{ path: '^/orders/(?<id>[^/]+)' }, { query: 'order' }, { header: 'x-order-id' }, { json: 'order.id' }],
      },
    ],
  }),
);

const json = (body: unknown) => ({ status: 201, headers: ['content-type', 'application/json'], body: Buffer.from(JSON.stringify(body)) });

test('IDs are learned from a JSON path, a location regex or a header, for matching requests only', () => {
  const [byJson, byLocation, byHeader] = mapping.learners;
  assert.equal(byJson!.matches('POST', '/orders?x=1'), true);
  assert.equal(byJson!.matches('GET', '/orders'), false);
  assert.equal(byJson!.extract(json({ id: 'ord_812' })), 'ord_812');
  assert.equal(byJson!.extract(json({ id: 812 })), '812');
  assert.equal(byJson!.extract({ ...json({ id: 'x' }), status: 500 }), null, 'failed creates teach nothing');
  assert.equal(byLocation!.extract({ status: 201, headers: ['Location', '/carts/c_9'], body: Buffer.alloc(0) }), 'c_9');
  assert.equal(byHeader!.extract({ status: 200, headers: ['X-Thing-Id', 't1'], body: Buffer.alloc(0) }), 't1');
});

test('IDs are found and replaced in a path group, a query parameter, a header and a JSON body', () => {
  const body = Buffer.from('{"order":{"id":"ord_812","n":1}}');
  const request: MappableRequest = {
    method: 'PUT',
    path: '/orders/ord_812/items?order=ord_812&keep=ord_812&order=other',
    headers: ['X-Order-Id', 'ord_812', 'content-type', 'application/json'],
    body,
  };
  const parsed = parseJsonDocument(request.headers, request.body);
  assert.deepEqual(
    mapping.uses.map((u) => u.find(request, parsed)),
    [['ord_812'], ['ord_812', 'other'], ['ord_812'], ['ord_812']],
  );
  for (const use of mapping.uses) assert.equal(use.replace(request, parsed, 'ord_812', 'stg 17'), true);
  assert.equal(request.path, '/orders/stg%2017/items?order=stg%2017&keep=ord_812&order=other');
  assert.deepEqual(request.headers, ['X-Order-Id', 'stg 17', 'content-type', 'application/json']);
  assert.deepEqual(parsed?.value, { order: { id: 'stg 17', n: 1 } });
  assert.equal(parsed?.text, JSON.stringify({ order: { id: 'stg 17', n: 1 } }));
  assert.equal(mapping.uses[0]!.replace(request, parsed, 'nope', 'x'), false);
});

test('bad ID kinds are refused with the path of the problem', () => {
  const result = IdMappingOptions.safeParse({ kinds: [{ name: 'o', learn: [{ match: {}, from: { location: '/x/(.*)' } }], use: [{ path: '^/o/(.*)' }] }] });
  assert.equal(result.success, false);
  const paths = result.error!.issues.map((i) => i.path.join('.'));
  assert.ok(
    paths.some((p) => p.startsWith('kinds.0.learn.0.from')),
    paths.join(' | '),
  );
  assert.ok(
    paths.some((p) => p.startsWith('kinds.0.use.0')),
    paths.join(' | '),
  );
});

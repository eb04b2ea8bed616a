import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { IdMappingOptions, compileIdMapping, jsonValueSpan, parseJsonDocument, parseJsonPath, type MappableRequest } from '@mirrorplane/core';

/**
 * ID mapping edits only the ID: in a JSON body the ID's token is spliced in the text as sent
 * (no other value goes through JSON.parse/stringify, so large integers, precise decimals,
 * spacing and key order stay byte for byte); in a path, an ID learned from a Location (a URL)
 * is percent-decoded once and encoded once.
 */

const mapping = compileIdMapping(
  IdMappingOptions.parse({
    kinds: [
      {
        name: 'order',
        learn: [{ match: { methods: ['POST'], path: '^/orders$' }, from: { location: '/orders/(?<id>[^/?]+)' } }],
        use: [{ path: '^/orders/(?<id>[^/]+)$' }, { json: 'order.id' }],
      },
    ],
  }),
);
const [pathUse, jsonUse] = mapping.uses as [(typeof mapping.uses)[number], (typeof mapping.uses)[number]];

/** JSON text with number tokens JSON.stringify would not write back the same. */
const rawNumber = fc.oneof(
  fc.bigInt({ min: -(10n ** 30n), max: 10n ** 30n }).map(String),
  fc.constantFrom('0.10000000000000000555', '1e400', '1.0', '-0', '9007199254740993', '1E+2'),
);
const spacing = fc.constantFrom('', ' ', '\n  ', '\t');
const jsonText: fc.Arbitrary<string> = fc.letrec<{ value: string }>((tie) => ({
  value: fc.oneof(
    { depthSize: 'small' },
    rawNumber,
    fc.string().map((s) => JSON.stringify(s)),
    fc.constantFrom('true', 'false', 'null'),
    fc.tuple(fc.array(tie('value'), { maxLength: 4 }), spacing).map(([vs, sp]) => `[${sp}${vs.join(`,${sp}`)}${sp}]`),
    fc
      .tuple(fc.array(fc.tuple(fc.string(), tie('value')), { maxLength: 4 }), spacing)
      .map(([kv, sp]) => `{${sp}${kv.map(([k, v]) => `${JSON.stringify(k)}${sp}:${sp}${v}`).join(`,${sp}`)}${sp}}`),
  ),
})).value;

test('JSON bodies: replacing the ID changes its token and nothing else, whatever surrounds it', () => {
  fc.assert(
    fc.property(jsonText, jsonText, fc.string({ minLength: 1 }), fc.string({ minLength: 1 }), spacing, (before, after, productionId, stagingId, sp) => {
      const idToken = JSON.stringify(productionId);
      const head = `{${sp}"before":${sp}${before},${sp}"order"${sp}:${sp}{"x":${before},${sp}"id":${sp}`;
      const tail = `${sp}},"after":${after}${sp}}`;
      const text = head + idToken + tail;
      const request: MappableRequest = { method: 'POST', path: '/payments', headers: ['content-type', 'application/json'], body: Buffer.from(text) };
      const doc = parseJsonDocument(request.headers, request.body);
      assert.ok(doc, text);
      assert.deepEqual(jsonUse.find(request, doc), [productionId]);
      assert.equal(jsonUse.replace(request, doc, productionId, stagingId), true);
      assert.equal(doc.text, head + JSON.stringify(stagingId) + tail);
    }),
    { numRuns: 300 },
  );
});

test('JSON bodies: a key given twice is edited where JSON.parse reads it (the last one)', () => {
  const text = '{"order":{"id":"ord_1","id":"ord_2"},"n":12345678901234567890}';
  assert.deepEqual(jsonValueSpan(text, parseJsonPath('order.id')), [text.indexOf('"ord_2"'), text.indexOf('"ord_2"') + 7]);
  const request: MappableRequest = { method: 'POST', path: '/p', headers: ['content-type', 'application/json'], body: Buffer.from(text) };
  const doc = parseJsonDocument(request.headers, request.body)!;
  assert.equal(jsonUse.replace(request, doc, 'ord_2', 'stg_2'), true);
  assert.equal(doc.text, '{"order":{"id":"ord_1","id":"stg_2"},"n":12345678901234567890}');
});

test('Location IDs: decoded like path IDs, put into a path encoded exactly once', () => {
  const learner = mapping.learners[0]!;
  fc.assert(
    fc.property(fc.string({ minLength: 1 }), fc.string({ minLength: 1 }), (productionId, stagingId) => {
      const learnedProduction = learner.extract({ status: 201, headers: ['location', `/orders/${encodeURIComponent(productionId)}`], body: Buffer.alloc(0) });
      const learnedStaging = learner.extract({ status: 201, headers: ['Location', `/orders/${encodeURIComponent(stagingId)}`], body: Buffer.alloc(0) });
      assert.equal(learnedProduction, productionId);
      assert.equal(learnedStaging, stagingId);
      // The client follows production's Location; staging receives its own.
      const request: MappableRequest = { method: 'GET', path: `/orders/${encodeURIComponent(productionId)}`, headers: [], body: Buffer.alloc(0) };
      assert.deepEqual(pathUse.find(request, undefined), [productionId]);
      assert.equal(pathUse.replace(request, undefined, productionId, learnedStaging!), true);
      assert.equal(request.path, `/orders/${encodeURIComponent(stagingId)}`);
    }),
    { numRuns: 300 },
  );
});

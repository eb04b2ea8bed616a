import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { decodeEntry, deserializeEntry, encodeEntryFields, serializeEntry, EntryDecodeError, type MirroredRequest } from '@mirrorplane/core';

function toRedisReply(fields: (string | Buffer)[]): Buffer[] {
  return fields.map((f) => (typeof f === 'string' ? Buffer.from(f, 'utf8') : f));
}

const request: MirroredRequest = {
  method: 'POST',
  target: '/orders/7?q=%C3%A9&q=2',
  rawHeaders: ['Host', 'api.example.com', 'X-Dup', 'a', 'x-dup', 'b', 'X-Latin', 'caf\u00e9'],
  body: randomBytes(4096),
  receivedAt: 1764201600123,
  requestId: 'req-1',
  clientAddress: '10.0.0.7',
};

test('an entry survives encode and decode byte for byte', () => {
  const entry = decodeEntry('1-0', toRedisReply(encodeEntryFields(request)));
  assert.deepEqual(entry.request, request);
  assert.equal(entry.id, '1-0');
});

test('empty body, no request id and no client address decode as such', () => {
  const r = { ...request, body: Buffer.alloc(0), requestId: null, clientAddress: null, rawHeaders: [] };
  assert.deepEqual(decodeEntry('2-0', toRedisReply(encodeEntryFields(r))).request, r);
});

test('serialized entries (retry jobs) keep binary bodies', () => {
  const entry = { id: '3-1', request };
  assert.deepEqual(deserializeEntry(JSON.parse(JSON.stringify(serializeEntry(entry)))), entry);
});

test('entries written by something else are refused with a reason', () => {
  const cases: [Buffer[], RegExp][] = [
    [toRedisReply(['foo', 'bar']), /unknown field "foo"/],
    [toRedisReply(['m', 'GET']), /no version field/],
    [toRedisReply(['v', '9', 'm', 'GET']), /version "9"/],
    [toRedisReply(['v', '1', 'm', 'G ET', 'u', '/', 'h', '', 'b', '', 't', '1']), /no valid method/],
    [toRedisReply(['v', '1', 'm', 'GET', 'u', '/', 'h', 'a', 'b', '', 't', '1']), /name\/value pairs/],
    [toRedisReply(['v', '1', 'm', 'GET', 'u', '/', 'h', '', 'b', '', 't', 'soon']), /receive time/],
    [toRedisReply(['v', '1', 'm', 'GET', 'u', '/', 'h', '']), /no body field/],
    [toRedisReply(['v']), /odd number/],
  ];
  for (const [fields, message] of cases) {
    assert.throws(
      () => decodeEntry('9-9', fields),
      (error: unknown) => error instanceof EntryDecodeError && error.code === 'MP_ERR_ENTRY_DECODE' && message.test(error.message),
    );
  }
  assert.throws(() => deserializeEntry({ id: 1 }), EntryDecodeError);
});

test('trailers survive encode and decode and retry jobs, in order and case; none means no field at all', () => {
  const withTrailers: MirroredRequest = { ...request, trailers: ['X-Checksum', 'sha256=\u00ff', 'x-checksum', '2', 'Server-Timing', 'db;dur=53'] };
  const fields = encodeEntryFields(withTrailers);
  assert.ok(fields.includes('T'));
  assert.deepEqual(decodeEntry('4-0', toRedisReply(fields)).request, withTrailers);
  const entry = { id: '4-1', request: withTrailers };
  assert.deepEqual(deserializeEntry(JSON.parse(JSON.stringify(serializeEntry(entry)))), entry);
  assert.ok(!encodeEntryFields({ ...request, trailers: [] }).includes('T'), 'an empty trailer list costs nothing');
});

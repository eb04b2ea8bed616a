import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { EntryCipher, decodeEntry, deserializeEntry, encodeEntryFields, serializeEntry, EntryDecodeError, type MirroredRequest } from '@mirrorplane/core';

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

const http2Request: MirroredRequest = {
  method: 'POST',
  target: '/helloworld.Greeter/SayHello',
  rawHeaders: [':scheme', 'http', ':authority', 'api.example.com', 'content-type', 'application/grpc', 'te', 'trailers', 'x-bin-bin', 'AAEC'],
  body: Buffer.from([0, 0, 0, 0, 3, 0xff, 0x00, 0x80]),
  trailers: ['x-checksum', '7'],
  protocol: 'HTTP/2',
  receivedAt: 1764201600999,
  requestId: null,
  clientAddress: '10.0.0.8',
};

test('an entry written before the protocol field existed (layout 1, byte for byte as stored) decodes as HTTP/1.1', () => {
  // The exact field list an ingress of layout 1 wrote; nothing here comes from the current encoder.
  const stored = toRedisReply(['v', '1', 'm', 'PUT', 'u', '/a?b=1', 'h', 'Host\nx\nX-A\n1', 'b', 'body', 't', '1764201600000', 'r', 'req-9', 'T', 'X-Sum\n3']);
  const { request: decoded } = decodeEntry('5-0', stored);
  assert.equal(decoded.protocol, undefined, 'no protocol field: HTTP/1.1');
  assert.deepEqual(decoded, {
    method: 'PUT',
    target: '/a?b=1',
    rawHeaders: ['Host', 'x', 'X-A', '1'],
    body: Buffer.from('body'),
    trailers: ['X-Sum', '3'],
    receivedAt: 1764201600000,
    requestId: 'req-9',
    clientAddress: null,
  });
  // HTTP/1.1 entries are still written in layout 1, so workers of before read them.
  const fields = encodeEntryFields(request);
  assert.equal(fields[1], '1');
  assert.ok(!fields.includes('p'));
});

test('an HTTP/2 entry is layout 2 with its protocol, survives decode, retry jobs and sealing; pseudo-headers keep their place', () => {
  const fields = encodeEntryFields(http2Request);
  assert.equal(fields[1], '2');
  assert.deepEqual(decodeEntry('6-0', toRedisReply(fields)).request, http2Request);
  const entry = { id: '6-1', request: http2Request };
  assert.deepEqual(deserializeEntry(JSON.parse(JSON.stringify(serializeEntry(entry)))), entry);
  const cipher = new EntryCipher([{ id: 'k1', key: randomBytes(32) }]);
  for (const r of [http2Request, { ...request, trailers: ['X-Sum', '1'] }]) {
    const sealed = toRedisReply(cipher.sealFields(encodeEntryFields(r)));
    assert.deepEqual(decodeEntry('6-2', cipher.openFields('6-2', sealed)).request, r, 'sealing keeps trailers and the protocol');
  }
});

test('a protocol field that does not match its layout is refused with a reason', () => {
  const base = ['m', 'GET', 'u', '/', 'h', '', 'b', '', 't', '1'];
  const cases: [Buffer[], RegExp][] = [
    [toRedisReply(['v', '2', ...base]), /version 2 and no valid protocol/],
    [toRedisReply(['v', '2', ...base, 'p', '3']), /no valid protocol field \("3"\)/],
    [toRedisReply(['v', '1', ...base, 'p', '2']), /version 1 and a protocol field/],
  ];
  for (const [fields, message] of cases) {
    assert.throws(
      () => decodeEntry('7-0', fields),
      (error: unknown) => error instanceof EntryDecodeError && message.test(error.message),
    );
  }
  assert.equal(decodeEntry('7-1', toRedisReply(['v', '2', ...base, 'p', '1.1'])).request.protocol, undefined);
});

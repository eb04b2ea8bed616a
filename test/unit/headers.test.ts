import { test } from 'node:test';
import assert from 'node:assert/strict';
import { redactHeaders, stagingHeaders, stripShadowSuffix } from '@mirrorplane/core';

test('staging headers keep order, case, duplicates and framing fields and drop hop-by-hop headers', () => {
  const raw = [
    'Host',
    'shop.example.com-shadow',
    'Connection',
    'keep-alive, X-Hop',
    'X-Hop',
    'secret-hop',
    'Accept',
    'a',
    'Content-Length',
    '5',
    'Transfer-Encoding',
    'chunked',
    'TE',
    'trailers',
    'Keep-Alive',
    'timeout=5',
    'Proxy-Connection',
    'keep-alive',
    'Upgrade',
    'h2c',
    'Trailer',
    'x',
    'Expect',
    '100-continue',
    'x-dup',
    '1',
    'X-Dup',
    '2',
    'X-Mirrorplane-Id',
    'forged',
  ];
  assert.deepEqual(stagingHeaders(raw, { host: 'staging:8080', entryId: '5-0', attempt: 2 }), [
    'Host',
    'staging:8080',
    'Accept',
    'a',
    // Framing fields stay in place; the staging client writes them true to the body it sends.
    'Content-Length',
    '5',
    'Transfer-Encoding',
    'chunked',
    // Trailer is end-to-end (RFC 9110 §6.6.2): the trailers it announces are replayed.
    'Trailer',
    'x',
    'x-dup',
    '1',
    'X-Dup',
    '2',
    'x-mirrorplane-id',
    '5-0',
    'x-mirrorplane-attempt',
    '2',
  ]);
  assert.deepEqual(stagingHeaders(raw, { host: null, entryId: '5-0', attempt: 1 }).slice(0, 2), ['Host', 'shop.example.com']);
});

test('a request without Host gets the staging host; a second Host is dropped', () => {
  assert.deepEqual(stagingHeaders(['a', 'b'], { host: 's:1', entryId: '1-0', attempt: 1 }), [
    'a',
    'b',
    'host',
    's:1',
    'x-mirrorplane-id',
    '1-0',
    'x-mirrorplane-attempt',
    '1',
  ]);
  assert.deepEqual(stagingHeaders(['host', 'a', 'Host', 'b'], { host: null, entryId: '1-0', attempt: 1 }).slice(0, 2), ['host', 'a']);
  // PRESERVE_HOST with a request that had none (HTTP/1.0): the staging origin's, as HTTP/1.1 needs one.
  assert.deepEqual(stagingHeaders(['a', 'b'], { host: null, fallbackHost: 's:1', entryId: '1-0', attempt: 1 }).slice(0, 4), ['a', 'b', 'host', 's:1']);
});

test('the Envoy shadow suffix is removed with or without a port', () => {
  assert.equal(stripShadowSuffix('api.example.com-shadow'), 'api.example.com');
  assert.equal(stripShadowSuffix('api.example.com-shadow:8443'), 'api.example.com:8443');
  assert.equal(stripShadowSuffix('api.example.com:8443-shadow'), 'api.example.com:8443');
  assert.equal(stripShadowSuffix('[::1]:80'), '[::1]:80');
  assert.equal(stripShadowSuffix('plain'), 'plain');
});

test('redaction replaces secret values whatever their case', () => {
  assert.deepEqual(redactHeaders(['Authorization', 'Bearer x', 'COOKIE', 'a=b', 'accept', '*/*'], new Set(['authorization', 'cookie'])), [
    'Authorization',
    '[redacted]',
    'COOKIE',
    '[redacted]',
    'accept',
    '*/*',
  ]);
});

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { toHar } from '../../apps/cli/src/record.js';
import { RECORDING_VERSION, recordBody, type RecordedExchange } from '@mirrorplane/runtime';

/** HAR export of form bodies that are not UTF-8 text: a form posted in the charset it declares. */

function exchange(headers: [string, string][], body: Buffer): RecordedExchange {
  return {
    v: RECORDING_VERSION,
    entryId: '1700000000000-0',
    requestId: 'r-1',
    attempt: 1,
    receivedAt: '2026-01-01T00:00:00.000Z',
    sentAt: '2026-01-01T00:00:00.010Z',
    ms: 1,
    origin: { name: 'default', url: 'http://staging.test' },
    rules: [],
    tags: {},
    mirrored: { method: 'POST', target: '/signup', clientAddress: null, headers, body: recordBody(body, 65536) },
    sent: { method: 'POST', path: '/signup', headers, body: recordBody(body, 65536) },
    response: { status: 200, headers: [['content-type', 'text/plain']], body: recordBody(Buffer.from('ok'), 65536) },
  };
}

test('HAR form params: a url-encoded form in ISO-8859-1 (raw bytes, as a legacy page posts it) still fills postData.params', () => {
  const body = Buffer.from('name=Jos\xe9&city=K\xf6ln', 'latin1');
  const har = toHar([exchange([['content-type', 'application/x-www-form-urlencoded; charset=ISO-8859-1']], body)], '0.1.0');
  assert.deepEqual(har.log.entries[0]!.request.postData!.params, [
    { name: 'name', value: 'José' },
    { name: 'city', value: 'Köln' },
  ]);
});

test('HAR form params: percent-escapes in a form that declares ISO-8859-1 are decoded in that charset', () => {
  const body = Buffer.from('name=Jos%E9&city=K%F6ln');
  const har = toHar([exchange([['content-type', 'application/x-www-form-urlencoded; charset=ISO-8859-1']], body)], '0.1.0');
  assert.deepEqual(har.log.entries[0]!.request.postData!.params, [
    { name: 'name', value: 'José' },
    { name: 'city', value: 'Köln' },
  ]);
});

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { requestHead, sendRaw, useStack, waitFor } from '../helpers/index.js';

// The fast subset: one request through the real ingress, stream, worker and staging.
const s = useStack({ staging: true, roles: {} });

test('a mirrored request reaches staging', async () => {
  const res = await sendRaw(s.roles.ingressPort, requestHead('POST', '/smoke?x=1', ['Host', 'prod'], 5), Buffer.from('hello'));
  assert.equal(res.status, 200);
  await waitFor('the replay', () => s.staging.received.length === 1);
  assert.equal(s.staging.received[0]!.url, '/smoke?x=1');
  assert.equal(s.staging.received[0]!.body.toString(), 'hello');
});

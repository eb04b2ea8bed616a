import { test } from 'node:test';
import assert from 'node:assert/strict';
import { header, requestHead, sendRaw, useStack, waitFor } from '../helpers/index.js';

// MAX_BACKLOG caps unfinished entries (the ingress also counts its own appends since its last
// look at Redis, so the cap is set above what one 100 ms check period can append here). With STREAM_RETENTION the stream also keeps finished
// ones, which must not count: a deployment that keeps up never sheds.
const s = useStack({ staging: true, roles: { workers: 1, env: { STREAM_RETENTION: '1h', MAX_BACKLOG: '50' } } });

test('finished entries kept for retention do not count against MAX_BACKLOG', async () => {
  const send = async (i: number) => {
    const res = await sendRaw(s.roles.ingressPort, requestHead('GET', `/kept/${i}`, ['Host', 'x', 'X-Request-ID', `kept-${i}`]));
    assert.equal(res.status, 200, `request ${i}: ${res.body.toString()}`);
    await waitFor(`replay ${i}`, () => s.staging.received.some((r) => header(r.rawHeaders, 'x-request-id') === `kept-${i}`));
  };
  let i = 0;
  for (; i < 120; i++) await send(i);
  const client = s.client();
  try {
    assert.ok((await client.xlen(s.keys().stream)) >= 120, 'finished entries are retained');
  } finally {
    client.disconnect();
  }
  // Keep sending for well over the ingress's backlog check period (100 ms): with the length of
  // the stream taken as the backlog, these would be shed.
  const started = Date.now();
  while (Date.now() - started < 1000) await send(i++);
  assert.ok(i > 120);
});

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { connect as h2connect } from 'node:http2';
import { connect } from 'node:net';
import { RedisServer, metricSums, requestHead, sendRaw, startIngress, untilReady, waitFor } from '../helpers/index.js';

/**
 * Issue #17: an append's outcome reaches the ingress through `then` on the command's promise
 * (an exception there would be an unhandled rejection, which exits the CLI). Clients that leave
 * (FIN, RST, h2 RST_STREAM, session destroyed) while their appends wait on a hung Redis, then
 * the appends time out or are answered late: the ingress keeps running and serving, and every
 * request received is counted once (accepted or dropped by reason).
 */

async function totals(adminPort: number) {
  const [received = 0, accepted = 0, dropped = 0, inFlight = 0] = await metricSums(
    adminPort,
    'mirrorplane_ingress_requests_received_total',
    'mirrorplane_ingress_requests_accepted_total',
    'mirrorplane_ingress_requests_dropped_total',
    'mirrorplane_ingress_in_flight',
  );
  return { received, accepted, dropped, inFlight };
}

for (const [name, resume] of [
  ['time out', false],
  ['are answered late (SIGCONT before the deadline)', true],
] as const) {
  test(`clients leave (FIN, RST, h2 RST_STREAM, h2 session destroyed) while their appends wait; the appends ${name}: the ingress lives on, every request counted once`, async () => {
    const redis = await RedisServer.start();
    // 3 s: time for all 4n requests to be admitted on a loaded machine before the first append times out
    // (after that, Redis is known unresponsive and later requests are refused at once, never in flight).
    const { ingress, port, adminPort } = await startIngress(redis.url, { APPEND_TIMEOUT_MS: resume ? '8000' : '3000' });
    try {
      redis.signal('SIGSTOP');
      const n = 6;
      const body = 'abandoned';
      const leave: (() => void)[] = [];
      for (let i = 0; i < n; i++) {
        // HTTP/1.1: FIN after the request (half close), and RST.
        const fin = connect(port, '127.0.0.1', () => fin.end(`POST /fin/${i} HTTP/1.1\r\nHost: x\r\nContent-Length: ${body.length}\r\n\r\n${body}`));
        fin.on('error', () => undefined);
        const rst = connect(port, '127.0.0.1', () => rst.write(`POST /rst/${i} HTTP/1.1\r\nHost: x\r\nContent-Length: ${body.length}\r\n\r\n${body}`));
        rst.on('error', () => undefined);
        leave.push(() => rst.resetAndDestroy());
      }
      const sessions = Array.from({ length: 2 }, () => {
        const s = h2connect(`http://127.0.0.1:${port}`);
        s.on('error', () => undefined);
        return s;
      });
      for (let i = 0; i < n; i++) {
        const a = sessions[0]!.request({ ':method': 'POST', ':path': `/h2rst/${i}` });
        a.on('error', () => undefined);
        a.end(body);
        leave.push(() => a.close(0x8));
        const b = sessions[1]!.request({ ':method': 'POST', ':path': `/h2gone/${i}` });
        b.on('error', () => undefined);
        b.end(body);
      }
      leave.push(() => sessions[1]!.destroy());
      // The clients leave once their requests wait on Redis (a fixed delay raced the admission on a loaded machine).
      let last = { received: 0, accepted: 0, dropped: 0, inFlight: 0 };
      await waitFor(
        () => `all ${4 * n} requests in flight (last: ${JSON.stringify(last)})`,
        async () => (last = await totals(adminPort)).inFlight === 4 * n,
        30_000,
      );
      for (const go of leave) go();
      if (resume) {
        await new Promise((r) => setTimeout(r, 800));
        redis.signal('SIGCONT');
      }
      await waitFor('nothing in flight', async () => (await totals(adminPort)).inFlight === 0, 30_000);
      redis.signal('SIGCONT');
      await untilReady(adminPort);
      assert.equal((await sendRaw(port, requestHead('GET', '/after', ['Host', 'x']))).status, 200);
      assert.equal(ingress.child.exitCode, null, `the ingress exited\n${ingress.stderr.slice(-1500)}`);
      assert.doesNotMatch(ingress.stdout, /unhandled rejection|uncaught exception/);
      const t = await totals(adminPort);
      assert.equal(t.accepted + t.dropped, t.received, `received ${t.received} = accepted ${t.accepted} + dropped ${t.dropped}`);
    } finally {
      redis.signal('SIGCONT');
      await ingress.stop('SIGKILL');
      await redis.close();
    }
  });
}

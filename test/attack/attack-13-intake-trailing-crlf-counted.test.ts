import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { connect } from 'node:net';
import { RecordingServer, RedisServer, Stack, freePort } from '../helpers/index.js';

// RFC 9112 §2.2: a server SHOULD ignore at least one empty line before a request-line (some
// clients send an extra CRLF after a POST body). The parser does ignore it, but counts its bytes
// as head bytes: the connection is then "mid-request", and when the client half-closes (or
// closes) it, the ingress counts a request lost (`dropped{reason="aborted"}`, and one more
// `received`) that never existed. The metrics promise received = accepted + dropped + in
// flight, and each drop a real request.

let redis: RedisServer;
let staging: RecordingServer;
let stack: Stack;
let adminPort: number;

before(async () => {
  redis = await RedisServer.start();
  staging = await RecordingServer.start();
  adminPort = await freePort();
  stack = await Stack.start({ redis, stagingUrl: staging.url, workers: 0, ingressEnv: { ADMIN_PORT: String(adminPort), ADMIN_HOST: '127.0.0.1' } });
});

after(async () => {
  await stack?.close();
  await staging?.close();
  await redis?.close();
});

async function counters(): Promise<{ received: number; accepted: number; aborted: number }> {
  const text = await (await fetch(`http://127.0.0.1:${adminPort}/metrics`)).text();
  const value = (re: RegExp) => Number(re.exec(text)?.[1] ?? NaN);
  return {
    received: value(/^mirrorplane_ingress_requests_received_total (\d+)/m),
    accepted: value(/^mirrorplane_ingress_requests_accepted_total (\d+)/m),
    aborted: value(/^mirrorplane_ingress_requests_dropped_total\{reason="aborted"\} (\d+)/m),
  };
}

function exchange(bytes: string, how: 'fin' | 'destroy-after-answer'): Promise<string> {
  return new Promise((resolve) => {
    const socket = connect({ port: stack.ingressPort, host: '127.0.0.1', allowHalfOpen: true });
    let text = '';
    socket.on('data', (d: Buffer) => {
      text += d.toString('latin1');
      if (how === 'destroy-after-answer' && text.includes('\r\n\r\n')) socket.destroy();
    });
    socket.on('error', () => undefined);
    socket.on('close', () => resolve(text));
    socket.on('end', () => socket.destroy());
    socket.on('connect', () => (how === 'fin' ? socket.end(bytes) : socket.write(bytes)));
  });
}

for (const how of ['fin', 'destroy-after-answer'] as const) {
  test(`a POST followed by one extra CRLF, then ${how === 'fin' ? 'a FIN' : 'the client closes after its answer'}: one request received and accepted, none counted aborted`, async () => {
    const before = await counters();
    const answer = await exchange('POST /crlf HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi\r\n', how);
    assert.match(answer, /^HTTP\/1\.1 200 OK\r\n/);
    // The ingress counts a loss on close: give it a moment to have done so.
    await new Promise((r) => setTimeout(r, 300));
    const after = await counters();
    assert.deepEqual(
      { received: after.received - before.received, accepted: after.accepted - before.accepted, aborted: after.aborted - before.aborted },
      { received: 1, accepted: 1, aborted: 0 },
    );
  });
}

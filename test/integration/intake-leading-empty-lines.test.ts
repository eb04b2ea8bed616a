import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { connect } from 'node:net';
import { RecordingServer, RedisServer, Stack, freePort } from '../helpers/index.js';

// RFC 9112 §2.2: a server SHOULD ignore at least one empty line before a request-line (some
// clients send an extra CRLF after a POST body). Bytes that are not yet a request (empty lines,
// the CR of one) must not make the connection "mid-request": when the client half-closes (or
// closes) it, no request was lost, so none is counted (`dropped{reason="aborted"}` and one more
// `received`). The metrics promise received = accepted + dropped + in flight, and each drop a
// real request. Members: where the empty lines are (after a request, before the first one),
// how many, cut after their CR, and how the client ends (FIN, close after the answer).

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

const REQUEST = 'POST /crlf HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi';
const MEMBERS: [name: string, bytes: string][] = [
  ['a POST followed by one extra CRLF', `${REQUEST}\r\n`],
  ['a POST followed by three extra CRLFs', `${REQUEST}\r\n\r\n\r\n`],
  ['a POST followed by the CR of an empty line', `${REQUEST}\r`],
  ['a POST followed by a CRLF and a CR', `${REQUEST}\r\n\r`],
  ['two CRLFs before the first request, one after', `\r\n\r\n${REQUEST}\r\n`],
];

for (const [name, bytes] of MEMBERS) {
  for (const how of ['fin', 'destroy-after-answer'] as const) {
    test(`${name}, then ${how === 'fin' ? 'a FIN' : 'the client closes after its answer'}: one request received and accepted, none counted aborted`, async () => {
      const before = await counters();
      const answer = await exchange(bytes, how);
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
}

test('only empty lines, then a FIN: nothing received, nothing counted aborted; a request cut inside its request-line still is', async () => {
  const before = await counters();
  await exchange('\r\n\r\n', 'fin');
  await exchange('\r\nPO', 'fin');
  await new Promise((r) => setTimeout(r, 300));
  const after = await counters();
  assert.deepEqual({ received: after.received - before.received, aborted: after.aborted - before.aborted }, { received: 1, aborted: 1 });
});

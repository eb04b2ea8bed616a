import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { RecordingServer, RedisServer, Stack, waitFor } from '../helpers/index.js';

// Back-pressure on the answer side. A client that pipelines requests and never reads its
// answers must not make the ingress buffer answers without bound: like node:http (which stops
// parsing while a response waits on a full socket), the ingress should stop reading once its
// unsent answers fill the socket. Since e645dbf the socket is paused only while an append is
// pending, and `socket.write` of each answer ignores its return value: every answer the
// kernel cannot take is kept in the ingress's heap, and the ingress keeps reading, appending
// and answering into its own memory. (RELIABILITY "Memory": memory is bounded by the settings.)

let redis: RedisServer;
let staging: RecordingServer;
let stack: Stack;

before(async () => {
  redis = await RedisServer.start();
  staging = await RecordingServer.start();
  stack = await Stack.start({ redis, stagingUrl: staging.url, workers: 0 });
});

after(async () => {
  await stack?.close();
  await staging?.close();
  await redis?.close();
});

const REQUESTS = 150_000;

// A client with a small, fixed receive buffer (SO_RCVBUF set before connect stops autotuning),
// so the kernel on its side holds a few KiB of answers at most. It sends REQUESTS tiny pipelined
// requests and reads nothing; it prints "sent N" and then waits (never reading) until killed.
const CLIENT = `
import socket, sys, time
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
s.connect(('127.0.0.1', int(sys.argv[1])))
print('local', s.getsockname()[1], flush=True)
batch = sys.argv[3].encode().decode('unicode_escape').encode('latin1') * 1000
sent = 0
s.settimeout(60)
try:
    while sent < int(sys.argv[2]):
        s.sendall(batch); sent += 1000
except Exception as e:
    print('blocked', sent, e, flush=True)
print('sent', sent, flush=True)
time.sleep(600)
`;

/** Send-Q and Recv-Q (bytes in the kernel) of the TCP socket 127.0.0.1:local → 127.0.0.1:remote. */
function queues(local: number, remote: number): { recv: number; send: number } | null {
  const out = spawnSync('ss', ['-tnH', 'src', `127.0.0.1:${local}`, 'dst', `127.0.0.1:${remote}`], { encoding: 'utf8' }).stdout.trim();
  const m = /^\S+\s+(\d+)\s+(\d+)/.exec(out);
  return m ? { recv: Number(m[1]), send: Number(m[2]) } : null;
}

// Every kind of answer the traffic port writes while it keeps the connection (HTTP/1.1, and
// HTTP/1.0 with keep-alive); the admin port is node:http, which stops parsing on its own.
const KINDS: [name: string, request: string, answer: string][] = [
  ['HTTP/1.1', 'GET /unread HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n', 'HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n'],
  [
    'HTTP/1.0 keep-alive',
    'GET /unread10 HTTP/1.0\\r\\nConnection: keep-alive\\r\\n\\r\\n',
    'HTTP/1.1 200 OK\r\nconnection: keep-alive\r\ncontent-length: 0\r\n\r\n',
  ],
];

for (const [kind, request, answer] of KINDS)
  test(`a client that pipelines ${kind} requests and never reads its answers: answers held in the ingress (not the kernel) stay bounded`, async () => {
    const ANSWER = answer.length;
    const client = spawn('python3', ['-c', CLIENT, String(stack.ingressPort), String(REQUESTS), request], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    client.stdout.on('data', (d: Buffer) => {
      out += d.toString();
    });
    const c = redis.client();
    try {
      const stream0 = `{${stack.env.MIRRORPLANE_PREFIX}}:stream`;
      await c.xtrim(stream0, 'MAXLEN', 0);
      const local = Number((await waitFor('client connected', () => /local (\d+)/.exec(out), 30_000))[1]);
      const stream = `{${stack.env.MIRRORPLANE_PREFIX}}:stream`;
      // Wait until the ingress stopped taking requests (its stream stops growing for 3 s).
      let last = -1;
      let since = Date.now();
      const accepted = await waitFor(
        'the ingress to stop appending',
        async () => {
          const n = await c.xlen(stream);
          if (n !== last) {
            last = n;
            since = Date.now();
            return null;
          }
          return Date.now() - since > 3000 ? n : null;
        },
        240_000,
        250,
      );
      const ingressSide = queues(stack.ingressPort, local);
      const clientSide = queues(local, stack.ingressPort);
      assert.ok(ingressSide && clientSide, 'both ends of the connection are listed by ss');
      // Answer bytes in the kernel: the ingress's send queue and the client's receive queue.
      const inKernel = ingressSide.send + clientSide.recv;
      const inIngress = accepted * ANSWER - inKernel;
      assert.ok(
        inIngress <= 1024 * 1024,
        `${accepted} of ${REQUESTS} requests appended and answered while the client read none of its answers: ` +
          `${accepted * ANSWER} answer bytes, ${inKernel} in the kernel (ingress Send-Q ${ingressSide.send}, client Recv-Q ${clientSide.recv}), ` +
          `so ${(inIngress / 1048576).toFixed(1)} MiB of answers sit in the ingress's memory (client: ${out.trim().replace(/\n/g, '; ')})`,
      );
    } finally {
      client.kill('SIGKILL');
      c.disconnect();
    }
  });

// Sends N pipelined requests with 1 KiB bodies while a thread reads the answers slowly (4 KiB
// reads, 1 ms apart): it works whether or not the ingress applies back-pressure.
const SLOW_READER = `
import socket, sys, time, threading
n = int(sys.argv[2])
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
s.connect(('127.0.0.1', int(sys.argv[1])))
body = bytes(range(256)) * 4
req = b'POST /late HTTP/1.1\\r\\nHost: x\\r\\nContent-Length: 1024\\r\\n\\r\\n' + body
got = []
def read():
    while True:
        d = s.recv(4096)
        if not d: break
        got.append(d)
        time.sleep(0.001)
t = threading.Thread(target=read)
t.start()
s.sendall(req * n)
s.shutdown(socket.SHUT_WR)
t.join()
g = b''.join(got)
print('answers', g.count(b'HTTP/1.1 200 OK'), 'other', g.count(b'HTTP/1.1 ') - g.count(b'HTTP/1.1 200 OK'), flush=True)
`;

test('a client that reads its answers slowly while it pipelines 4,000 requests and its FIN: every one answered 200 and stored byte-exact, nothing dropped', async () => {
  const c = redis.client();
  const stream = `{${stack.env.MIRRORPLANE_PREFIX}}:stream`;
  await c.xtrim(stream, 'MAXLEN', 0);
  const client = spawn('python3', ['-c', SLOW_READER, String(stack.ingressPort), '4000'], { stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  client.stdout.on('data', (d: Buffer) => {
    out += d.toString();
  });
  try {
    const line = await waitFor('the client to read every answer', () => /answers (\d+) other (\d+)/.exec(out), 240_000);
    assert.equal(Number(line[1]), 4_000, out);
    assert.equal(Number(line[2]), 0, out);
    const entries = await c.xrangeBuffer(stream, '-', '+');
    assert.equal(entries.length, 4_000);
    const body = Buffer.from(Array.from({ length: 1024 }, (_, i) => i % 256));
    for (const [, fields] of entries) {
      const at = fields.findIndex((f, i) => i % 2 === 0 && f.toString() === 'b');
      assert.ok(fields[at + 1]?.equals(body), 'body stored byte-exact');
    }
  } finally {
    client.kill('SIGKILL');
    c.disconnect();
  }
});

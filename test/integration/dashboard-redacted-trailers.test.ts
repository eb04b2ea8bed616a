import { test } from 'node:test';
import assert from 'node:assert/strict';
import { request } from 'node:http';
import { MirrorplaneProcess, RecordingServer, RedisServer, Stack, freePort, waitFor, useStack } from '../helpers/index.js';
import { sendRaw } from '../helpers/raw-http.js';

/**
 * A credential sent as a trailer (chunked request, `Authorization` / `X-Api-Key` after the last
 * chunk) is stored and replayed, and redacted like a header wherever it is shown: the
 * dashboard's job answers, `failed list` and the logs.
 */

const TOKEN = 'dashboard-token-0123456789abcdef';
const M = { auth: 'MKTRAILERAUTH51', key: 'MKTRAILERKEY52' };

let redis: RedisServer;
useStack({}, (s) => {
  redis = s.redis;
});

function get(port: number, path: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path, headers: { host: `127.0.0.1:${port}`, authorization: `Bearer ${TOKEN}` } }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve(Buffer.concat(chunks).toString()));
    });
    req.on('error', reject);
    req.end();
  });
}

test('credentials in request trailers appear in no dashboard answer, failed list or log', async () => {
  const staging = await RecordingServer.start((_req, res) => void res.writeHead(503).end());
  const stack = await Stack.start({ redis, stagingUrl: staging.url, env: { REPLAY_ATTEMPTS: '1', LOG_LEVEL: 'debug' } });
  const port = await freePort();
  let dashboard: MirrorplaneProcess | null = null;
  try {
    const head = 'POST /upload HTTP/1.1\r\nHost: prod.example\r\nTransfer-Encoding: chunked\r\nTrailer: Authorization, X-Api-Key\r\nConnection: close\r\n\r\n';
    const body = Buffer.from(`5\r\nhello\r\n0\r\nAuthorization: Bearer ${M.auth}\r\nX-Api-Key: ${M.key}\r\n\r\n`);
    const res = await sendRaw(stack.ingressPort, head, body);
    assert.equal(res.status, 200, res.head);
    await waitFor('1 failed', async () => (await stack.status()).failed === 1, 60_000);
    dashboard = new MirrorplaneProcess(['dashboard', '--port', String(port)], { ...stack.env, ADMIN_TOKEN: TOKEN });
    await dashboard.waitForLog('dashboard listening');
    const list = await get(port, '/queues/api/queues?activeQueue=retry&status=failed&page=1');
    const id = (JSON.parse(list) as { queues: { name: string; jobs: { id: string }[] }[] }).queues.find((q) => q.name === 'retry')?.jobs[0]?.id;
    assert.ok(id, list.slice(0, 300));
    const places: Record<string, string> = {
      'dashboard job list': list,
      'dashboard job': await get(port, `/queues/api/queues/retry/${encodeURIComponent(id)}`),
      'failed list': (await stack.cli(['failed', 'list'])).stdout,
      'failed list --json': (await stack.cli(['failed', 'list', '--json'])).stdout,
      'process logs': [stack.ingress.stdout, stack.ingress.stderr, ...stack.workers.flatMap((w) => [w.stdout, w.stderr])].join('\n'),
    };
    const leaks: string[] = [];
    for (const [where, text] of Object.entries(places))
      for (const [what, m] of Object.entries(M)) if (text.includes(m)) leaks.push(`${what} trailer in ${where}`);
    assert.deepEqual(leaks, []);
  } finally {
    await dashboard?.stop();
    await stack.close();
    await staging.close();
  }
});

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { request } from 'node:http';
import { MirrorplaneProcess, RecordingServer, RedisServer, Stack, freePort, waitFor, useStack } from '../helpers/index.js';
import { requestHead, sendRaw } from '../helpers/raw-http.js';

/**
 * Redaction by default of what is obviously secret: basic-auth userinfo in an absolute-form
 * target and token query names (the default list and names secret by shape), carried through
 * real processes, appear in no place an operator reads: `failed list` (text and --json), the
 * dashboard's job API, logs. Staging still gets them byte for byte.
 */

const TOKEN = 'dashboard-token-0123456789abcdef';
const M = {
  userinfo: 'MKUSERINFO41', // basic-auth in an absolute-form request-target
  gitlab: 'MKPRIVTOKEN42', // ?private_token= (GitLab's personal access token parameter)
  authToken: 'MKAUTHTOKEN43', // ?auth_token=
  apiToken: 'MKAPITOKEN44', // ?api_token=
};

let redis: RedisServer;
useStack({}, (s) => {
  redis = s.redis;
});

function get(port: number, path: string, headers: Record<string, string>): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path, headers: { host: `127.0.0.1:${port}`, ...headers } }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve(Buffer.concat(chunks).toString()));
    });
    req.on('error', reject);
    req.end();
  });
}

test('basic-auth in an absolute-form target and common token query names are redacted in failed list, the dashboard and logs', async () => {
  const staging = await RecordingServer.start((_req, res) => void res.writeHead(503).end());
  const stack = await Stack.start({ redis, stagingUrl: staging.url, env: { REPLAY_ATTEMPTS: '1', LOG_LEVEL: 'debug' } });
  const port = await freePort();
  let dashboard: MirrorplaneProcess | null = null;
  try {
    const abs = await sendRaw(stack.ingressPort, requestHead('GET', `http://operator:${M.userinfo}@prod.example/account?view=1`, ['Host', 'prod.example']));
    assert.equal(abs.status, 200, abs.head);
    const q = await fetch(`http://127.0.0.1:${stack.ingressPort}/account?private_token=${M.gitlab}&auth_token=${M.authToken}&api_token=${M.apiToken}&page=2`);
    assert.equal(q.status, 200);
    await waitFor('2 failed', async () => (await stack.status()).failed === 2, 60_000);
    // Staging got every secret (replays stay byte-exact where it matters).
    const seen = staging.received.map((r) => r.url).join('\n');
    for (const m of [M.gitlab, M.authToken, M.apiToken]) assert.ok(seen.includes(m), `staging got ${m}`);

    dashboard = new MirrorplaneProcess(['dashboard', '--port', String(port)], { ...stack.env, ADMIN_TOKEN: TOKEN });
    await dashboard.waitForLog('dashboard listening');
    const places: Record<string, string> = {
      'failed list': (await stack.cli(['failed', 'list'])).stdout,
      'failed list --json': (await stack.cli(['failed', 'list', '--json'])).stdout,
      'dashboard job API': await get(port, '/queues/api/queues?activeQueue=retry&status=failed&page=1', { authorization: `Bearer ${TOKEN}` }),
      'process logs': [stack.ingress.stdout, stack.ingress.stderr, ...stack.workers.flatMap((w) => [w.stdout, w.stderr])].join('\n'),
    };
    assert.match(places['failed list'] as string, /account/, 'the failed list does show the two entries');
    const leaks: string[] = [];
    for (const [where, text] of Object.entries(places)) {
      for (const [what, marker] of Object.entries(M)) if (text.includes(marker)) leaks.push(`${what} in ${where}`);
    }
    assert.deepEqual(leaks, [], 'secrets readable by an operator');
  } finally {
    await dashboard?.stop();
    await stack.close();
    await staging.close();
  }
});

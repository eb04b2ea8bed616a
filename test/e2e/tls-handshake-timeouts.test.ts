import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { request as httpRequest } from 'node:http';
import { Socket, connect as netConnect } from 'node:net';
import { MirrorplaneProcess, Stack, TestCerts, freePort, requestHead, sendRawTls, waitFor, startTlsIngress, type TlsIngress } from '../helpers/index.js';

/**
 * Issue #20, connections that never finish their TLS handshake: closed by the listener within
 * the handshake bound and counted, so they cannot hold MAX_CONNECTIONS slots (traffic port),
 * nor keep a process from exiting on SIGTERM (dashboard; the traffic and admin ports are in
 * tls-ingress-lifecycle.test.ts).
 */

let tls: TlsIngress;
let certs: TestCerts;
let stack: Stack;
let adminPort: number;

before(async () => {
  tls = await startTlsIngress();
  ({ certs, stack, adminPort } = tls);
});

after(async () => {
  await tls?.close();
});

function adminGet(path: string, port = adminPort): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host: '127.0.0.1', port, path }, (res) => {
      let body = '';
      res.on('data', (c: Buffer) => (body += c.toString()));
      res.on('end', () => resolve(body));
    });
    req.on('error', reject);
    req.end();
  });
}

async function metric(name: string, port = adminPort): Promise<number> {
  const body = await adminGet('/metrics', port);
  const escaped = name.replace(/[{}"=]/g, (c) => `\\${c}`);
  // A counter not incremented yet may have no line: 0.
  return Number(new RegExp(`^${escaped} (\\d+)`, 'm').exec(body)?.[1] ?? '0');
}

// Both wait out the 10 s handshake bound: run side by side.
describe('handshake timeouts', { concurrency: true }, () => {
  test('connections that never finish a handshake cannot lock the proxy out for long: MAX_CONNECTIONS slots come back, refusals counted', async () => {
    const port = await freePort();
    const admin = await freePort();
    const ingress = new MirrorplaneProcess(['ingress'], {
      ...stack.env,
      INGRESS_PORT: String(port),
      INGRESS_HOST: '127.0.0.1',
      ADMIN_PORT: String(admin),
      MAX_CONNECTIONS: '8',
      INGRESS_TLS_CERT: certs.server.cert,
      INGRESS_TLS_KEY: certs.server.key,
    });
    const sockets: Socket[] = [];
    try {
      await ingress.waitForLog('ingress listening');
      const refusedBefore = await metric('mirrorplane_ingress_tls_refused_total{reason="handshake"}', admin);
      for (let i = 0; i < 8; i++) {
        const s = netConnect(port, '127.0.0.1');
        s.on('error', () => undefined);
        sockets.push(s);
        await new Promise((r) => s.once('connect', r));
      }
      // The slots come back within the documented handshake bound (10 s) plus slack.
      const started = Date.now();
      await waitFor(
        'a real client served again',
        async () => {
          const outcome = await sendRawTls(port, requestHead('GET', '/after-flood', ['Host', 'x']), undefined, { ca: certs.read(certs.ca) });
          return outcome.ok && outcome.response.status === 200;
        },
        30_000,
      );
      assert.ok(Date.now() - started < 20_000, `served after ${Date.now() - started} ms`);
      // Each silent connection is closed by the ingress (not by us) and counted.
      await waitFor('the silent connections closed by the ingress', () => sockets.every((s) => s.destroyed || s.readableEnded) || null, 10_000);
      const refused = await metric('mirrorplane_ingress_tls_refused_total{reason="handshake"}', admin);
      assert.ok(refused >= refusedBefore + 8, `8 handshake timeouts counted: ${refusedBefore} before, ${refused} after`);
    } finally {
      for (const s of sockets) s.destroy();
      await ingress.stop('SIGKILL');
    }
  });

  test('the dashboard over TLS: a silent connection is closed after the handshake timeout, and SIGTERM with one open exits promptly', async () => {
    const port = await freePort();
    const dashboard = new MirrorplaneProcess(['dashboard', '--port', String(port)], {
      REDIS_URL: stack.env.REDIS_URL!,
      MIRRORPLANE_PREFIX: stack.env.MIRRORPLANE_PREFIX!,
      ADMIN_TLS_CERT: certs.server.cert,
      ADMIN_TLS_KEY: certs.server.key,
    });
    const sockets: Socket[] = [];
    try {
      await dashboard.waitForLog('dashboard listening');
      const silent = (): Promise<Socket> =>
        new Promise((resolve) => {
          const s = netConnect(port, '127.0.0.1');
          s.on('error', () => undefined);
          sockets.push(s);
          s.once('connect', () => resolve(s));
        });
      // Closed by the dashboard within the handshake bound (10 s) plus slack.
      const first = await silent();
      const closed = new Promise<number>((r) => first.once('close', () => r(Date.now())));
      const opened = Date.now();
      let timer: NodeJS.Timeout | undefined;
      const at = await Promise.race([closed, new Promise<null>((r) => (timer = setTimeout(() => r(null), 20_000)))]);
      clearTimeout(timer);
      assert.ok(at !== null && at - opened < 15_000, 'the silent connection is closed by the dashboard');
      await silent();
      const started = Date.now();
      dashboard.child.kill('SIGTERM');
      const code = await Promise.race([dashboard.exited, new Promise<string>((r) => (timer = setTimeout(() => r('still running after 20 s'), 20_000)))]);
      clearTimeout(timer);
      assert.equal(code, 0, 'exits 0');
      assert.ok(Date.now() - started < 5000, `exits promptly, took ${Date.now() - started} ms`);
    } finally {
      for (const s of sockets) s.destroy();
      if (dashboard.child.exitCode === null) await dashboard.stop('SIGKILL');
    }
  });
});

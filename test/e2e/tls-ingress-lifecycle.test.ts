import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, mkdirSync, readFileSync, renameSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { Socket, connect as netConnect } from 'node:net';
import { join } from 'node:path';
import { connect as tlsConnect } from 'node:tls';
import {
  MirrorplaneProcess,
  Stack,
  TestCerts,
  freePort,
  requestHead,
  sendRaw,
  sendRawTls,
  waitFor,
  startTlsIngress,
  type TlsIngress,
} from '../helpers/index.js';

/**
 * Issue #20, the life of TLS connections: reloads through a Kubernetes-style symlink swap and
 * deleted files, SIGTERM with connections idle or still handshaking (traffic and admin ports),
 * TLS on the clear port (handshake timeouts: tls-handshake-timeouts.test.ts).
 */

let tls: TlsIngress;
let certs: TestCerts;
let stack: Stack;

before(async () => {
  tls = await startTlsIngress();
  ({ certs, stack } = tls);
});

after(async () => {
  await tls?.close();
});

test('Kubernetes-style ..data symlink swap, a deleted pair, a half-written cert: the old pair keeps serving, errors logged coded, the new one served', async () => {
  const base = join(certs.dir, 'k8s');
  mkdirSync(base);
  const version = (n: number, cert: string, key: string) => {
    const d = join(base, `..v${n}`);
    mkdirSync(d);
    copyFileSync(cert, join(d, 'tls.crt'));
    copyFileSync(key, join(d, 'tls.key'));
    return `..v${n}`;
  };
  symlinkSync(version(1, certs.server.cert, certs.server.key), join(base, '..data'));
  symlinkSync('..data/tls.crt', join(base, 'tls.crt'));
  symlinkSync('..data/tls.key', join(base, 'tls.key'));
  const port = await freePort();
  const ingress = new MirrorplaneProcess(['ingress'], {
    ...stack.env,
    INGRESS_PORT: String(port),
    INGRESS_HOST: '127.0.0.1',
    ADMIN_PORT: '0',
    INGRESS_TLS_CERT: join(base, 'tls.crt'),
    INGRESS_TLS_KEY: join(base, 'tls.key'),
    TLS_RELOAD_MS: '100',
  });
  const serial = async () => {
    const outcome = await sendRawTls(port, requestHead('GET', '/k8s', ['Host', 'x']), undefined, { ca: certs.read(certs.ca) });
    assert.ok(outcome.ok && outcome.response.status === 200, outcome.ok ? outcome.response.head : outcome.error);
    return outcome.peer.serialNumber;
  };
  const errors = () => ingress.logs().filter((l) => l.code === 'MP_ERR_TLS_FILE').length;
  try {
    await ingress.waitForLog('ingress listening');
    const first = await serial();
    // The atomic swap kubelet does: a new ..data symlink renamed over the old one.
    symlinkSync(version(2, certs.server2.cert, certs.server2.key), join(base, '..data_tmp'));
    renameSync(join(base, '..data_tmp'), join(base, '..data'));
    rmSync(join(base, '..v1'), { recursive: true });
    await waitFor('the swapped certificate', async () => (await serial()) !== first, 30_000);
    const second = await serial();
    // The pair deleted (a broken volume): the old pair keeps serving, the error is coded.
    const e0 = errors();
    rmSync(join(base, '..v2'), { recursive: true });
    await waitFor('the deletion logged', () => errors() > e0, 30_000);
    for (let i = 0; i < 5; i++) assert.equal(await serial(), second, 'still served after the files vanished');
    // A half-written certificate, then completed: served once complete.
    const d3 = join(base, '..v2');
    mkdirSync(d3);
    copyFileSync(certs.server.key, join(d3, 'tls.key'));
    const pem = readFileSync(certs.server.cert);
    const e1 = errors();
    writeFileSync(join(d3, 'tls.crt'), pem.subarray(0, pem.length >> 1));
    await waitFor('the half-written cert logged', () => errors() > e1, 30_000);
    assert.equal(await serial(), second, 'the half-written cert is not served');
    writeFileSync(join(d3, 'tls.crt'), pem);
    await waitFor('the completed certificate', async () => (await serial()) === first, 30_000);
    assert.ok(!ingress.stdout.includes('PRIVATE KEY') && !ingress.stderr.includes('PRIVATE KEY'), 'no key contents logged');
  } finally {
    await ingress.stop('SIGKILL');
  }
});

/**
 * Starts a TLS ingress (traffic and admin ports over TLS), opens the connections `mode` says
 * on both ports, sends SIGTERM: exit 0 within SHUTDOWN_TIMEOUT_MS (1 s) + 3 s.
 */
async function sigtermWith(mode: { midHandshake: boolean; idle: boolean }): Promise<void> {
  const port = await freePort();
  const admin = await freePort();
  const ingress = new MirrorplaneProcess(['ingress'], {
    ...stack.env,
    INGRESS_PORT: String(port),
    INGRESS_HOST: '127.0.0.1',
    ADMIN_PORT: String(admin),
    ADMIN_TLS_CERT: certs.server.cert,
    ADMIN_TLS_KEY: certs.server.key,
    INGRESS_TLS_CERT: certs.server.cert,
    INGRESS_TLS_KEY: certs.server.key,
    SHUTDOWN_TIMEOUT_MS: '1000',
  });
  const sockets: Socket[] = [];
  try {
    await ingress.waitForLog('ingress listening');
    for (const p of [port, admin]) {
      if (mode.midHandshake) {
        // Mid-handshake: TCP open, no ClientHello yet.
        const raw = netConnect(p, '127.0.0.1');
        raw.on('error', () => undefined);
        sockets.push(raw);
        await new Promise((r) => raw.once('connect', r));
      }
      if (mode.idle) {
        // Idle after a completed handshake.
        const idle = tlsConnect({ host: '127.0.0.1', port: p, servername: 'localhost', ca: certs.read(certs.ca) });
        idle.on('error', () => undefined);
        sockets.push(idle);
        await new Promise((r) => idle.once('secureConnect', r));
      }
    }
    const ok = await sendRawTls(port, requestHead('GET', '/before-term', ['Host', 'x']), undefined, { ca: certs.read(certs.ca) });
    assert.ok(ok.ok && ok.response.status === 200, ok.ok ? ok.response.head : ok.error);
    const started = Date.now();
    ingress.child.kill('SIGTERM');
    // Bounded wait: a process that never exits must fail the test, not hang it.
    let timer: NodeJS.Timeout | undefined;
    const code = await Promise.race([ingress.exited, new Promise<string>((r) => (timer = setTimeout(() => r('still running after 20 s'), 20_000)))]);
    clearTimeout(timer);
    const took = Date.now() - started;
    assert.equal(code, 0, 'exits 0');
    assert.ok(took < 1000 + 3000, `exits within SHUTDOWN_TIMEOUT_MS (+3 s slack), took ${took} ms`);
  } finally {
    for (const s of sockets) s.destroy();
    if (ingress.child.exitCode === null) await ingress.stop('SIGKILL');
  }
}

test('SIGTERM with a TLS connection idle after its handshake exits within SHUTDOWN_TIMEOUT_MS', () => sigtermWith({ midHandshake: false, idle: true }));

test('SIGTERM with a TCP connection that never sends its ClientHello exits within SHUTDOWN_TIMEOUT_MS', () => sigtermWith({ midHandshake: true, idle: false }));

test('TLS on the clear traffic port: a ClientHello gets a clear 4xx or a close, counted, never a 200 and nothing stored', async () => {
  const port = await freePort();
  const ingress = new MirrorplaneProcess(['ingress'], { ...stack.env, INGRESS_PORT: String(port), INGRESS_HOST: '127.0.0.1', ADMIN_PORT: '0' });
  try {
    await ingress.waitForLog('ingress listening');
    const outcome = await sendRawTls(port, requestHead('GET', '/tls-on-clear', ['Host', 'x', 'X-Request-ID', 'atk-tls-on-clear']), undefined, {
      ca: certs.read(certs.ca),
    });
    assert.equal(outcome.ok, false);
    const clear = await sendRaw(port, requestHead('GET', '/clear-after', ['Host', 'x']));
    assert.equal(clear.status, 200, 'the port still serves');
  } finally {
    await ingress.stop('SIGKILL');
  }
});

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { RecordingServer, RedisServer, Stack, TestCerts, freeClusterPort, freePort, header, requestHead, runCli, sendRaw, waitFor } from '../helpers/index.js';

/**
 * rediss+sentinel:// and rediss+cluster:// against real servers that speak TLS only and
 * require client certificates: a Sentinel (itself on TLS, reaching its master over TLS) in
 * front of a TLS Redis, and a three-node Cluster with TLS on its client and bus ports. The
 * same REDIS_TLS_* settings reach the sentinel, the master it names, and every cluster node.
 */

let certs: TestCerts;
const children: ChildProcess[] = [];
let master: RedisServer;
let masterTls: number;
let sentinelTls: number;
const clusterPorts: number[] = [];

// The nodes' certificate is their client certificate too (cluster bus, sentinel to master).
const tlsArgs = () => ['--tls-cert-file', certs.node.cert, '--tls-key-file', certs.node.key, '--tls-ca-cert-file', certs.ca, '--tls-auth-clients', 'yes'];
const cliTls = () => ['--tls', '--cacert', certs.ca, '--cert', certs.client.cert, '--key', certs.client.key];
const clientEnv = () => ({ REDIS_TLS_CA: certs.ca, REDIS_TLS_CERT: certs.client.cert, REDIS_TLS_KEY: certs.client.key });

function run(args: string[]): ChildProcess {
  const child = spawn('redis-server', args, { stdio: 'ignore' });
  children.push(child);
  return child;
}

function cli(port: number, ...command: string[]): string {
  return spawnSync('redis-cli', [...cliTls(), '-h', '127.0.0.1', '-p', String(port), ...command], { encoding: 'utf8', timeout: 10_000 }).stdout.trim();
}

before(async () => {
  certs = TestCerts.create();
  masterTls = await freePort();
  master = await RedisServer.start({ args: ['--tls-port', String(masterTls), ...tlsArgs()] });

  // A sentinel on TLS only, reaching its master over TLS (tls-replication).
  sentinelTls = await freePort();
  const conf = join(certs.dir, 'sentinel.conf');
  writeFileSync(
    conf,
    [
      'port 0',
      'bind 127.0.0.1',
      `tls-port ${sentinelTls}`,
      `tls-cert-file ${certs.node.cert}`,
      `tls-key-file ${certs.node.key}`,
      `tls-ca-cert-file ${certs.ca}`,
      'tls-auth-clients yes',
      'tls-replication yes',
      `dir ${certs.dir}`,
      `sentinel monitor mymaster 127.0.0.1 ${masterTls} 1`,
      '',
    ].join('\n'),
  );
  run([conf, '--sentinel']);
  await waitFor(
    'the sentinel to know its master',
    () => cli(sentinelTls, 'sentinel', 'get-master-addr-by-name', 'mymaster').includes(String(masterTls)),
    30_000,
    100,
  );

  // Three cluster nodes on TLS only; the cluster bus over TLS too.
  while (clusterPorts.length < 3) {
    const port = await freeClusterPort();
    if (!clusterPorts.includes(port)) clusterPorts.push(port);
  }
  for (const port of clusterPorts) {
    const dir = join(certs.dir, `node-${port}`);
    mkdirSync(dir);
    run([
      '--port', '0', '--tls-port', String(port), '--bind', '127.0.0.1', '--dir', dir, '--save', '', '--appendonly', 'no',
      '--cluster-enabled', 'yes', '--cluster-config-file', join(dir, 'nodes.conf'), '--cluster-node-timeout', '5000',
      '--tls-cluster', 'yes', ...tlsArgs(),
    ]); // prettier-ignore
  }
  for (const port of clusterPorts) await waitFor(`cluster node ${port}`, () => cli(port, 'ping') === 'PONG', 20_000, 50);
  const create = spawnSync(
    'redis-cli',
    [...cliTls(), '--cluster', 'create', ...clusterPorts.map((p) => `127.0.0.1:${p}`), '--cluster-replicas', '0', '--cluster-yes'],
    {
      encoding: 'utf8',
      // It waits for the nodes to join for ever: a bus that cannot shake hands must fail the test, not hang it.
      timeout: 60_000,
    },
  );
  assert.equal(create.status, 0, create.stdout + create.stderr);
  for (const port of clusterPorts) await waitFor(`cluster_state:ok on ${port}`, () => cli(port, 'cluster', 'info').includes('cluster_state:ok'), 30_000, 100);
});

after(async () => {
  await Promise.all(
    children.map(
      (c) =>
        new Promise((resolve) => {
          if (c.exitCode !== null) return resolve(null);
          c.once('exit', resolve);
          c.kill('SIGKILL');
        }),
    ),
  );
  await master?.close();
  certs?.remove();
});

test('rediss+sentinel://: the sentinel and the master it names, both over TLS with the client certificate', async () => {
  const url = `rediss+sentinel://127.0.0.1:${sentinelTls}/mymaster`;
  const ok = await runCli(['status', '--json'], { REDIS_URL: url, MIRRORPLANE_PREFIX: 'stls', REDIS_CONNECT_TIMEOUT_MS: '5000', ...clientEnv() });
  assert.equal(ok.code, 0, ok.stderr);
  const untrusted = await runCli(['status', '--json'], {
    REDIS_URL: url,
    MIRRORPLANE_PREFIX: 'stls',
    REDIS_CONNECT_TIMEOUT_MS: '5000',
    ...clientEnv(),
    REDIS_TLS_CA: certs.otherCa,
  });
  assert.equal(untrusted.code, 2, untrusted.stderr);
  assert.match(untrusted.stderr, /MP_ERR_REDIS_TLS.*REDIS_TLS_CA/);
});

test('rediss+cluster://: ingress and worker over a TLS cluster replay byte for byte', async () => {
  const staging = await RecordingServer.start();
  const stack = await Stack.start({
    redis: master,
    stagingUrl: staging.url,
    env: { REDIS_URL: `rediss+cluster://127.0.0.1:${clusterPorts[0]}`, ...clientEnv() },
  });
  try {
    const body = Buffer.from([0xde, 0xad, 0x0d, 0x0a, 0xbe, 0xef]);
    const res = await sendRaw(stack.ingressPort, requestHead('POST', '/cluster/tls', ['Host', 'h', 'X-Request-ID', 'ctls-1'], body.length), body);
    assert.equal(res.status, 200);
    const got = await waitFor('the replay', () => staging.received.find((r) => header(r.rawHeaders, 'x-request-id') === 'ctls-1'), 60_000);
    assert.ok(got.body.equals(body));
  } finally {
    await stack.close();
    await staging.close();
  }
});

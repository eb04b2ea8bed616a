import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { randomBytes } from 'node:crypto';
import { Cluster } from 'ioredis';
import { keysFor } from '@mirrorplane/core';
import { RedisCluster, sequentialLoad, startIngress, storedIds, waitFor } from '../helpers/index.js';

/**
 * Issue #17 on a Redis Cluster: the ingress's appends carry their deadline in an ExpiryQueue
 * (a command's `reject` is ioredis Cluster's redirect handler). A slot moved mid-load (ASK /
 * MOVED resends) and a node paused: every 200 is stored exactly once; a paused node that does
 * not hold the deployment's keys does not stop the ingress from accepting.
 */

const run = promisify(execFile);
const cli = async (port: number, ...args: string[]) => (await run('redis-cli', ['-p', String(port), ...args])).stdout.trim();

let cluster: RedisCluster;
const stopped = new Set<number>();

before(async () => {
  cluster = await RedisCluster.start();
});

after(async () => {
  for (const pid of stopped) process.kill(pid, 'SIGCONT');
  await cluster?.close();
});

async function pidOf(port: number): Promise<number> {
  return Number(/process_id:(\d+)/.exec(await cli(port, 'info', 'server'))?.[1]);
}

test('Cluster: the deployment slot moved to another node mid-load; every 200 stored exactly once, nothing answered 503', async (t) => {
  const prefix = `tm${randomBytes(3).toString('hex')}`;
  const stream = keysFor(prefix).stream;
  const { ingress, port } = await startIngress(cluster.url, { APPEND_TIMEOUT_MS: '3000' }, { prefix });
  try {
    const slot = Number(await cli(cluster.ports[0] as number, 'cluster', 'keyslot', stream));
    const srcPort = cluster.nodeOf(stream);
    const dstPort = cluster.ports.find((p) => p !== srcPort) as number;
    const srcId = await cli(srcPort, 'cluster', 'myid');
    const dstId = await cli(dstPort, 'cluster', 'myid');
    const l = sequentialLoad(port, 6, 'mv');
    await waitFor('some load', () => l.outcomes.size > 60);
    await cli(dstPort, 'cluster', 'setslot', String(slot), 'importing', srcId);
    await cli(srcPort, 'cluster', 'setslot', String(slot), 'migrating', dstId);
    // Requests meanwhile go to the source (the keys are still there) or get ASK.
    await waitFor('more load while migrating', () => l.outcomes.size > 150);
    for (;;) {
      const keys = (await cli(srcPort, 'cluster', 'getkeysinslot', String(slot), '100')).split('\n').filter(Boolean);
      if (keys.length === 0) break;
      await cli(srcPort, 'migrate', '127.0.0.1', String(dstPort), '', '0', '5000', 'keys', ...keys);
    }
    await waitFor('more load after the keys moved', () => l.outcomes.size > 250);
    for (const p of cluster.ports) await cli(p, 'cluster', 'setslot', String(slot), 'node', dstId);
    await waitFor('more load after the slot moved', () => l.outcomes.size > 400, 60_000);
    await l.stop();
    const statuses = [...l.outcomes.values()].map((o) => o.status);
    t.diagnostic(`${statuses.length} requests: ${statuses.filter((s) => s === 200).length} × 200, others ${JSON.stringify(statuses.filter((s) => s !== 200))}`);
    const client = new Cluster([{ host: '127.0.0.1', port: cluster.ports[0] as number }]);
    client.on('error', () => undefined);
    const counts = await storedIds(client, stream).finally(() => client.disconnect());
    const duplicated = [...counts].filter(([, n]) => n > 1).map(([id]) => id);
    assert.deepEqual(duplicated, [], 'no entry stored twice');
    const lost = [...l.outcomes].filter(([id, o]) => o.status === 200 && !counts.has(id)).map(([id]) => id);
    assert.deepEqual(lost, [], 'every 200 stored');
    assert.deepEqual(
      statuses.filter((s) => s !== 200),
      [],
      'nothing refused while the slot moved',
    );
  } finally {
    await ingress.stop('SIGKILL');
  }
});

test('Cluster: a node that does not hold the deployment keys paused (SIGSTOP) for 3.5 × APPEND_TIMEOUT_MS: the ingress keeps accepting', async (t) => {
  const appendTimeout = 1000;
  // A prefix whose keys live on the first node; the node paused is another.
  let prefix = '';
  for (let i = 0; i < 500 && prefix === ''; i++) {
    const p = `tp${i}${randomBytes(2).toString('hex')}`;
    if (cluster.nodeOf(keysFor(p).stream) === cluster.ports[0]) prefix = p;
  }
  const { ingress, port, adminPort } = await startIngress(cluster.url, { APPEND_TIMEOUT_MS: String(appendTimeout) }, { prefix });
  const otherPort = cluster.ports[2] as number;
  const pid = await pidOf(otherPort);
  try {
    const l = sequentialLoad(port, 4, 'np');
    await waitFor('some load', () => l.outcomes.size > 20);
    process.kill(pid, 'SIGSTOP');
    stopped.add(pid);
    const pausedFrom = l.outcomes.size;
    await new Promise((r) => setTimeout(r, 3 * appendTimeout + 500));
    const duringPause = [...l.outcomes.values()].slice(pausedFrom).map((o) => o.status);
    const ready = (await fetch(`http://127.0.0.1:${adminPort}/readyz`)).status;
    process.kill(pid, 'SIGCONT');
    stopped.delete(pid);
    await l.stop();
    const refused = duringPause.filter((s) => s !== 200);
    const notAccepted = [...l.outcomes.values()].filter((o) => o.status !== 200);
    const reasons = new Set(notAccepted.map((o) => o.reason));
    const refusedAfter = notAccepted.map((o) => o.ms);
    t.diagnostic(
      `during the pause: ${duringPause.length} requests, ${refused.length} not 200 (${[...new Set(refused)].join(',')}: ${[...reasons].join(',')}), ${refusedAfter.filter((ms) => ms >= appendTimeout / 2).length} of them after ≥ APPEND_TIMEOUT_MS/2 (slowest ${Math.max(0, ...refusedAfter)} ms); /readyz ${ready}`,
    );
    assert.ok(duringPause.length > 0);
    assert.deepEqual(refused, [], "a paused node that holds none of the deployment's keys made the ingress refuse requests");
  } finally {
    if (stopped.has(pid)) {
      process.kill(pid, 'SIGCONT');
      stopped.delete(pid);
    }
    await ingress.stop('SIGKILL');
  }
});

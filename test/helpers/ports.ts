import { readFileSync } from 'node:fs';
import { createServer } from 'node:net';

/**
 * Ports the tests listen on. They come from below the kernel's ephemeral range
 * (`net.ipv4.ip_local_port_range`, 32768–60999 by default), never from it: the local end of every
 * outgoing connection is an ephemeral port, and so is each of the thousands of TIME_WAIT
 * sockets the load tests leave, and a listener cannot bind a port one of them holds. An
 * ephemeral port found free a moment ago was often taken again by the time a process bound it —
 * and never checked at all when a process listens on it plus one (the second ingress process's
 * admin port): under the full suite, two cluster-mode tests waited 60 s for a process that had
 * exited with "port in use".
 */
const EPHEMERAL_LOW = (() => {
  try {
    const low = Number(readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/)[0]);
    return Number.isInteger(low) && low > 2048 ? low : 32768;
  } catch {
    return 32768;
  }
})();
/**
 * Redis Cluster nodes (redis-cluster.ts) take ports from [10000, 15000) and their cluster bus
 * the port + 10000, in [20000, 25000); every other port comes from [25000, the ephemeral range),
 * so a node's bus port, bound a moment after the check, never lands on a port another file chose.
 */
const CLUSTER_LOW = 10_000;
const CLUSTER_HIGH = 15_000;
const CLUSTER_BUS_OFFSET = 10_000;
const LOWEST = 25_000;

function bindable(port: number, host: string): Promise<boolean> {
  return new Promise((resolve) => {
    const server = createServer();
    server.once('error', () => resolve(false));
    server.listen(port, host, () => server.close(() => resolve(true)));
  });
}

async function pick(low: number, high: number, offsets: readonly number[], host: string): Promise<number[]> {
  const span = Math.max(1, high - low);
  for (let attempt = 0; attempt < 200; attempt++) {
    const base = low + Math.floor(Math.random() * span);
    const ports = offsets.map((offset) => base + offset);
    let free = true;
    for (const port of ports) if (!(free = await bindable(port, host))) break;
    if (free) return ports;
  }
  throw new Error(`no free ports ${offsets.join(', ')} apart on ${host} in [${low}, ${high})`);
}

/** `count` consecutive ports on `host`, each free a moment ago (bound and released), below the ephemeral range. */
export function freePorts(count: number, host = '127.0.0.1'): Promise<number[]> {
  return pick(
    LOWEST,
    Math.max(LOWEST + 1000, Math.min(EPHEMERAL_LOW, 32768)) - count,
    Array.from({ length: count }, (_, i) => i),
    host,
  );
}

/** A port for a Redis Cluster node whose cluster bus port (+10000) is free too (see above). */
export async function freeClusterPort(host = '127.0.0.1'): Promise<number> {
  return (await pick(CLUSTER_LOW, CLUSTER_HIGH, [0, CLUSTER_BUS_OFFSET], host))[0] as number;
}

/** A TCP port on `host` that was free a moment ago, below the ephemeral range (see above). */
export async function freePort(preferred = 0, host = '127.0.0.1'): Promise<number> {
  if (preferred !== 0 && (await bindable(preferred, host))) return preferred;
  return (await freePorts(1, host))[0] as number;
}

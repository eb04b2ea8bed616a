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
const LOWEST = 10_000;

function bindable(port: number, host: string): Promise<boolean> {
  return new Promise((resolve) => {
    const server = createServer();
    server.once('error', () => resolve(false));
    server.listen(port, host, () => server.close(() => resolve(true)));
  });
}

/** `count` consecutive ports on `host`, each free a moment ago (bound and released), below the ephemeral range. */
export async function freePorts(count: number, host = '127.0.0.1'): Promise<number[]> {
  const span = Math.max(1, Math.min(EPHEMERAL_LOW, 32768) - LOWEST - count);
  for (let attempt = 0; attempt < 200; attempt++) {
    const base = LOWEST + Math.floor(Math.random() * span);
    const ports = Array.from({ length: count }, (_, i) => base + i);
    let free = true;
    for (const port of ports) if (!(free = await bindable(port, host))) break;
    if (free) return ports;
  }
  throw new Error(`no run of ${count} free ports on ${host} below ${EPHEMERAL_LOW}`);
}

/** A TCP port on `host` that was free a moment ago, below the ephemeral range (see above). */
export async function freePort(preferred = 0, host = '127.0.0.1'): Promise<number> {
  if (preferred !== 0 && (await bindable(preferred, host))) return preferred;
  return (await freePorts(1, host))[0] as number;
}

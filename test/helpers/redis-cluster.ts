import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freeClusterPort } from './ports.js';
import { waitFor } from './wait.js';

/**
 * Three real cluster-enabled redis-servers (no replicas, no persistence, in a temporary
 * directory), joined with `redis-cli --cluster create`; `start` resolves once every node says
 * `cluster_state:ok`. `close` kills them and removes the directory.
 */
export class RedisCluster {
  readonly ports: number[];
  readonly #dir: string;
  readonly #children: ChildProcess[] = [];

  private constructor(ports: number[], dir: string) {
    this.ports = ports;
    this.#dir = dir;
  }

  static async start(): Promise<RedisCluster> {
    const ports: number[] = [];
    // Each node also listens on port + 10000 (the cluster bus): pick ports where both are free.
    while (ports.length < 3) {
      const port = await freeClusterPort();
      if (!ports.includes(port)) ports.push(port);
    }
    const cluster = new RedisCluster(ports, mkdtempSync(join(tmpdir(), 'mp-test-cluster-')));
    for (const port of ports) {
      const dir = join(cluster.#dir, String(port));
      spawnSync('mkdir', ['-p', dir]);
      cluster.#children.push(
        spawn(
          'redis-server',
          [
            '--port',
            String(port),
            '--bind',
            '127.0.0.1',
            '--dir',
            dir,
            '--save',
            '',
            '--appendonly',
            'no',
            '--cluster-enabled',
            'yes',
            '--cluster-config-file',
            join(dir, 'nodes.conf'),
            '--cluster-node-timeout',
            '5000',
          ],
          { stdio: 'ignore' },
        ),
      );
    }
    for (const port of ports) {
      await waitFor(
        `redis-server on ${port}`,
        () => spawnSync('redis-cli', ['-p', String(port), 'ping'], { encoding: 'utf8' }).stdout.trim() === 'PONG',
        20_000,
        50,
      );
    }
    const create = spawnSync('redis-cli', ['--cluster', 'create', ...ports.map((p) => `127.0.0.1:${p}`), '--cluster-replicas', '0', '--cluster-yes'], {
      encoding: 'utf8',
    });
    assert.equal(create.status, 0, create.stdout + create.stderr);
    for (const port of ports) {
      await waitFor(
        `cluster_state:ok on ${port}`,
        () => spawnSync('redis-cli', ['-p', String(port), 'cluster', 'info'], { encoding: 'utf8' }).stdout.includes('cluster_state:ok'),
        30_000,
        100,
      );
    }
    return cluster;
  }

  get url(): string {
    return `redis+cluster://127.0.0.1:${this.ports[0]}`;
  }

  /** The port of the node that serves this key's slot. */
  nodeOf(key: string): number {
    const slot = Number(spawnSync('redis-cli', ['-p', String(this.ports[0]), 'cluster', 'keyslot', key], { encoding: 'utf8' }).stdout.trim());
    const slots = spawnSync('redis-cli', ['-p', String(this.ports[0]), '--json', 'cluster', 'slots'], { encoding: 'utf8' }).stdout;
    for (const [from, to, [, port]] of JSON.parse(slots) as [number, number, [string, number]][]) if (slot >= from && slot <= to) return port;
    throw new Error(`no node for slot ${slot}`);
  }

  async close(): Promise<void> {
    await Promise.all(
      this.#children.map(
        (c) =>
          new Promise((resolve) => {
            if (c.exitCode !== null) return resolve(null);
            c.once('exit', resolve);
            c.kill('SIGKILL');
          }),
      ),
    );
    rmSync(this.#dir, { recursive: true, force: true });
  }
}

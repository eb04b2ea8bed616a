import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { Cluster, type Redis } from 'ioredis';
import fc from 'fast-check';
import { EncodedXadd } from '../../apps/ingress/src/entry-appender.js';
import { RedisCluster, RedisServer } from '../helpers/index.js';

// #17: EncodedXadd writes the XADD's RESP bytes itself. Against a real Redis and a real Redis
// Cluster, what it stores must equal what ioredis's own xadd stores for the same arguments:
// empty values, large values, non-ASCII and lone-surrogate strings, bytes that look like RESP.

let redis: RedisServer;
let cluster: RedisCluster;

before(async () => {
  redis = await RedisServer.start();
  cluster = await RedisCluster.start();
});

after(async () => {
  await redis?.close();
  await cluster?.close();
});

const resp = ['*3\r\n$4\r\nxadd\r\n', '$-1\r\n', '-ERR x\r\n', '+OK\r\n', ':1\r\n', '\r\n', ''];
const value = fc.oneof(
  fc.string({ unit: 'binary', maxLength: 50 }),
  fc.string({ unit: fc.integer({ min: 0xd800, max: 0xdfff }).map((c) => String.fromCharCode(c)), maxLength: 4 }),
  fc.constantFrom(...resp),
  fc.constantFrom(...resp).map((s) => Buffer.from(s, 'latin1')),
  fc.uint8Array({ maxLength: 200 }).map((a) => Buffer.from(a)),
);

async function both(client: Redis | Cluster, stream: string, fields: (string | Buffer)[]): Promise<[Buffer[], Buffer[]]> {
  const ours = new EncodedXadd([stream, '*', ...fields]);
  void client.sendCommand(ours);
  const oursId = (await ours.promise) as string;
  const theirsId = (await client.xadd(`${stream}:ioredis`, '*', ...fields)) as string;
  const a = (await client.xrangeBuffer(stream, oursId, oursId))[0]?.[1];
  const b = (await client.xrangeBuffer(`${stream}:ioredis`, theirsId, theirsId))[0]?.[1];
  assert.ok(a && b, 'both entries are stored');
  return [a, b];
}

const hex = (fields: Buffer[]) => fields.map((f) => f.toString('hex'));

for (const where of ['redis', 'cluster'] as const) {
  test(`EncodedXadd on a real ${where}: generated odd arguments are stored exactly as ioredis's xadd stores them`, async () => {
    const client: Redis | Cluster = where === 'redis' ? redis.client() : new Cluster([{ host: '127.0.0.1', port: cluster.ports[0] as number }]);
    try {
      let n = 0;
      await fc.assert(
        fc.asyncProperty(fc.array(fc.tuple(value, value), { minLength: 1, maxLength: 8 }), async (pairs) => {
          // Keys on every shard of the cluster: a different hash tag per run.
          const stream = `{t${n++}}:stream`;
          const [ours, theirs] = await both(client, stream, pairs.flat());
          assert.deepEqual(hex(ours), hex(theirs));
        }),
        { numRuns: 150 },
      );
    } finally {
      client.disconnect();
    }
  });

  test(`EncodedXadd on a real ${where}: empty values, a 16 MiB value and a value of 10 to 100 bytes (length digits) are stored exactly`, async () => {
    const client: Redis | Cluster = where === 'redis' ? redis.client() : new Cluster([{ host: '127.0.0.1', port: cluster.ports[0] as number }]);
    try {
      const big = Buffer.alloc(16 * 1024 * 1024, 0x2a);
      big.write('\r\n$3\r\nfoo\r\n', 1000, 'latin1');
      const fields: (string | Buffer)[] = [
        '',
        '',
        'b',
        Buffer.alloc(0),
        'big',
        big,
        'é',
        'ü'.repeat(5),
        'x'.repeat(9),
        'y'.repeat(10),
        'z'.repeat(99),
        Buffer.alloc(100, 1),
      ];
      const [ours, theirs] = await both(client, '{odd}:stream', fields);
      assert.equal(ours.length, fields.length);
      assert.deepEqual(hex(ours), hex(theirs));
      assert.ok((ours[5] as Buffer).equals(big));
    } finally {
      client.disconnect();
    }
  });
}

function cli(port: number, ...args: string[]): string {
  return spawnSync('redis-cli', ['-p', String(port), ...args], { encoding: 'utf8' }).stdout.trim();
}

test('EncodedXadd through a Cluster whose slot moved after the client learned the map (MOVED, resent): stored once, byte-exact', async () => {
  const client = new Cluster([{ host: '127.0.0.1', port: cluster.ports[0] as number }]);
  try {
    const stream = '{moved}:stream';
    // The client learns the slot map first.
    await client.xadd('{moved}:warm', '*', 'a', 'b');
    const slot = cli(cluster.ports[0] as number, 'cluster', 'keyslot', stream);
    const from = cluster.nodeOf(stream);
    const to = cluster.ports.find((p) => p !== from) as number;
    const fromId = cli(from, 'cluster', 'myid');
    const toId = cli(to, 'cluster', 'myid');
    // Moves the slot (with its one warm key) to another node behind the client's back.
    assert.equal(cli(to, 'cluster', 'setslot', slot, 'importing', fromId), 'OK');
    assert.equal(cli(from, 'cluster', 'setslot', slot, 'migrating', toId), 'OK');
    cli(from, 'migrate', '127.0.0.1', String(to), '', '0', '5000', 'keys', '{moved}:warm');
    for (const p of cluster.ports) cli(p, 'cluster', 'setslot', slot, 'node', toId);
    const body = Buffer.from('moved\r\n*1\r\n$4\r\nPING\r\n\xff', 'latin1');
    const command = new EncodedXadd([stream, '*', 'b', body, 'm', 'PUT', 'h', 'é']);
    void client.sendCommand(command);
    const id = (await command.promise) as string;
    const direct = new Cluster([{ host: '127.0.0.1', port: to }]);
    try {
      const entries = await direct.xrangeBuffer(stream, '-', '+');
      assert.equal(entries.length, 1, 'stored once');
      assert.equal(entries[0]?.[0].toString(), id);
      assert.deepEqual(
        entries[0]?.[1].map((f) => f.toString('hex')),
        [Buffer.from('b'), body, Buffer.from('m'), Buffer.from('PUT'), Buffer.from('h'), Buffer.from('é', 'utf8')].map((f) => f.toString('hex')),
      );
    } finally {
      direct.disconnect();
    }
  } finally {
    client.disconnect();
  }
});

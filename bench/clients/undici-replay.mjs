// The worker's baseline: a raw undici Pool sending N POSTs to staging, `concurrency` at a
// time, with the body and headers a worker replays (no Redis, no codec, no pipeline).
//   node bench/clients/undici-replay.mjs <staging-url> <count> <concurrency>
import { Pool } from 'undici';
import { benchBody } from '../support/request.mjs';

const [url, countArg, concurrencyArg] = process.argv.slice(2);
const count = Number(countArg);
const concurrency = Number(concurrencyArg);
const origin = new URL(url);
const pool = new Pool(origin.origin, { connections: concurrency, pipelining: 1, keepAliveTimeout: 30_000 });
const body = benchBody();
let next = 0;
let failed = 0;

async function lane() {
  while (next < count) {
    const i = next++;
    const res = await pool.request({
      method: 'POST',
      path: '/orders',
      headers: [
        'host',
        origin.host,
        'content-type',
        'application/json',
        'user-agent',
        'mirrorplane-bench',
        'x-mirrorplane-id',
        `${Date.now()}-${i}`,
        'x-mirrorplane-attempt',
        '1',
      ],
      body,
    });
    for await (const _ of res.body) void _;
    if (res.statusCode !== 200) failed += 1;
  }
}

const cpu0 = process.cpuUsage();
const started = performance.now();
await Promise.all(Array.from({ length: concurrency }, lane));
const ms = performance.now() - started;
const cpu = process.cpuUsage(cpu0);
await pool.close();
process.stdout.write(`${JSON.stringify({ count, ms, failed, cpuSeconds: (cpu.user + cpu.system) / 1e6 })}\n`);

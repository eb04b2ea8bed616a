// Sends POSTs to the ingress at a fixed rate for a while and reports when each was
// acknowledged (epoch ms, sub-millisecond). Each request carries x-request-id `e2e-<n>`, which
// staging sees on the replay. Forked by end-to-end.mjs; the result goes back over IPC.
//   node bench/clients/fixed-rate.mjs <ingress-url> <rate> <seconds>
import { Pool } from 'undici';
import { benchBody } from '../support/request.mjs';

const [url, rateArg, secondsArg] = process.argv.slice(2);
const rate = Number(rateArg);
const total = Math.round(rate * Number(secondsArg));
const origin = new URL(url);
const pool = new Pool(origin.origin, { connections: 64, pipelining: 1, keepAliveTimeout: 30_000 });
const body = benchBody();
const now = () => performance.timeOrigin + performance.now();
const acked = new Float64Array(total);
let sent = 0;
let done = 0;
let failed = 0;

function send(i) {
  pool
    .request({
      method: 'POST',
      path: '/orders',
      headers: ['host', origin.host, 'content-type', 'application/json', 'user-agent', 'mirrorplane-bench', 'x-request-id', `e2e-${i}`],
      body,
    })
    .then(
      async (res) => {
        for await (const _ of res.body) void _;
        if (res.statusCode === 200) acked[i] = now();
        else failed += 1;
      },
      () => {
        failed += 1;
      },
    )
    .finally(() => {
      done += 1;
      if (done === total) finish();
    });
}

const started = performance.now();
const timer = setInterval(() => {
  // Catch up to the schedule: the rate holds even when a tick comes late.
  const due = Math.min(total, Math.floor(((performance.now() - started) / 1000) * rate));
  while (sent < due) send(sent++);
  if (sent === total) clearInterval(timer);
}, 1);

function finish() {
  const ids = [];
  for (let i = 0; i < total; i += 1) if (acked[i] > 0) ids.push([i, acked[i]]);
  process.send({ total, failed, seconds: (performance.now() - started) / 1000, acked: ids }, () => {
    void pool.close().then(() => process.exit(0));
  });
}

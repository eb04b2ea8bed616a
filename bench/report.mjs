#!/usr/bin/env node
// Turns bench/results/*.json into the generated part of docs/BENCHMARKS.md (between the
// markers; the rest of the file is left as it is) and docs/benchmarks-ingress.svg, the
// throughput and p99 of ingress vs bare node:http against offered load.
//
//   node bench/report.mjs
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { RESULTS, fmt } from './support/report.mjs';

const DOCS = fileURLToPath(new URL('../docs/', import.meta.url));
const MD = `${DOCS}BENCHMARKS.md`;
const SVG = `${DOCS}benchmarks-ingress.svg`;
const BEGIN = '<!-- bench/report.mjs: generated results begin -->';
const END = '<!-- bench/report.mjs: generated results end -->';

const load = (name) => {
  const file = `${RESULTS}${name}.json`;
  return existsSync(file) ? JSON.parse(readFileSync(file, 'utf8')) : null;
};
const ingress = load('ingress');
const worker = load('worker');
const e2e = load('end-to-end');
const memory = load('redis-memory');
const soak = load('soak');
const scaling = load('scaling');
const chain = load('whole-chain');
const h2c = load('h2c');
const tls = load('ingress-tls');
const order = load('order-cost');

const row = (cells) => `| ${cells.map((c) => (typeof c === 'number' ? fmt(c) : c)).join(' | ')} |`;
const head = (cells) => `${row(cells)}\n|${cells.map((_, i) => (i === 0 ? ' --- ' : ' ---: ')).join('|')}|`;
const verdict = (ok) => (ok ? '**met**' : '**not met**');
const when = (r) =>
  `${r.date.slice(0, 16).replace('T', ' ')} UTC, \`${r.command}\`${r.commit ? ` at ${r.commit}` : ''}${
    r.machine.loadavgBefore ? `, load average (1/5/15 min) ${r.machine.loadavgBefore} before the run` : ''
  }${r.machine.loadavg ? `${r.machine.loadavgBefore ? ',' : ', load average (1/5/15 min)'} ${r.machine.loadavg} at the end` : ''}`;
/** The section of a scenario whose results file is missing. */
const notRun = (title, scenario) =>
  `### ${title}\n\nNot run yet: \`node bench/${scenario}.mjs --json\` (or \`--full --json\`), then \`node bench/report.mjs\`.\n`;
const reportOnly = 'report only';

function svgPlot(result) {
  const series = result.sweep.series;
  const names = result.sweep.names;
  const colors = { bare: '#4c78a8', ingress: '#f58518', cluster: '#54a24b' };
  const W = 940,
    H = 400,
    pad = { l: 70, r: 20, t: 40, b: 80 },
    gap = 70;
  const pw = (W - pad.l - pad.r - gap) / 2,
    ph = H - pad.t - pad.b;
  const rates = result.sweep.rates;
  const xMax = Math.max(...rates) * 1.05;
  const yMax =
    Math.max(
      ...Object.values(series)
        .flat()
        .map((p) => p.rps),
      xMax,
    ) * 1.05;
  const p99s = Object.values(series)
    .flat()
    .map((p) => p.p99Ms)
    .filter((v) => v > 0);
  const lMin = Math.floor(Math.log10(Math.min(...p99s)));
  const lMax = Math.ceil(Math.log10(Math.max(...p99s)));
  const x = (v, panel) => pad.l + panel * (pw + gap) + (v / xMax) * pw;
  const yR = (v) => pad.t + ph - (v / yMax) * ph;
  const yL = (v) => pad.t + ph - ((Math.log10(Math.max(v, 10 ** lMin)) - lMin) / (lMax - lMin)) * ph;
  const out = [];
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="12">`);
  out.push(`<rect width="${W}" height="${H}" fill="#fff"/>`);
  const ticks = (max, n) => Array.from({ length: n + 1 }, (_, i) => (max * i) / n);
  for (const panel of [0, 1]) {
    const x0 = pad.l + panel * (pw + gap);
    out.push(`<rect x="${x0}" y="${pad.t}" width="${pw}" height="${ph}" fill="none" stroke="#999"/>`);
    out.push(
      `<text x="${x0 + pw / 2}" y="${pad.t - 14}" text-anchor="middle" font-weight="bold">${panel === 0 ? 'Throughput (req/s)' : 'p99 latency (ms, log scale)'}</text>`,
    );
    out.push(`<text x="${x0 + pw / 2}" y="${pad.t + ph + 36}" text-anchor="middle">offered load (req/s), wrk -t1 -c${result.connections}, 1 KiB POST</text>`);
    for (const t of ticks(xMax, 5)) {
      out.push(`<line x1="${x(t, panel)}" y1="${pad.t + ph}" x2="${x(t, panel)}" y2="${pad.t + ph + 4}" stroke="#999"/>`);
      out.push(`<text x="${x(t, panel)}" y="${pad.t + ph + 18}" text-anchor="middle">${Math.round(t / 100) / 10}k</text>`);
    }
    if (panel === 0) {
      for (const t of ticks(yMax, 5)) {
        out.push(`<line x1="${x0}" y1="${yR(t)}" x2="${x0 + pw}" y2="${yR(t)}" stroke="#eee"/>`);
        out.push(`<text x="${x0 - 6}" y="${yR(t) + 4}" text-anchor="end">${Math.round(t / 100) / 10}k</text>`);
      }
      out.push(
        `<line x1="${x(0, 0)}" y1="${yR(0)}" x2="${x(Math.min(xMax, yMax), 0)}" y2="${yR(Math.min(xMax, yMax))}" stroke="#bbb" stroke-dasharray="4 4"/>`,
      );
      out.push(`<text x="${x(xMax * 0.62, 0)}" y="${yR(xMax * 0.62) - 8}" fill="#999" transform="rotate(0)">achieved = offered</text>`);
    } else {
      for (let e = lMin; e <= lMax; e += 1) {
        out.push(`<line x1="${x0}" y1="${yL(10 ** e)}" x2="${x0 + pw}" y2="${yL(10 ** e)}" stroke="#eee"/>`);
        out.push(`<text x="${x0 - 6}" y="${yL(10 ** e) + 4}" text-anchor="end">${10 ** e >= 1 ? 10 ** e : (10 ** e).toFixed(-e)}</text>`);
      }
    }
    for (const [key, points] of Object.entries(series)) {
      const color = colors[key] ?? '#e45756';
      const pts = points.map((p) => [x(p.offered, panel), panel === 0 ? yR(p.rps) : yL(p.p99Ms)]);
      out.push(`<polyline fill="none" stroke="${color}" stroke-width="2" points="${pts.map(([a, b]) => `${a.toFixed(1)},${b.toFixed(1)}`).join(' ')}"/>`);
      for (const [a, b] of pts) out.push(`<circle cx="${a.toFixed(1)}" cy="${b.toFixed(1)}" r="3" fill="${color}"/>`);
    }
  }
  Object.keys(series).forEach((key, i) => {
    const lx = pad.l + 10 + i * 200;
    out.push(`<rect x="${lx}" y="${H - 12}" width="12" height="4" fill="${colors[key] ?? '#e45756'}"/><text x="${lx + 18}" y="${H - 6}">${names[key]}</text>`);
  });
  out.push('</svg>');
  return `${out.join('\n')}\n`;
}

const parts = [];
parts.push('## Results\n');
parts.push(
  'Generated by `node bench/report.mjs` from `bench/results/*.json`. Each figure is a median over interleaved repetitions; ratios are against a baseline measured in the same invocation.\n',
);
const first = [ingress, worker, e2e, memory, soak, chain, tls, h2c, order, scaling].find(Boolean);
if (first) {
  const m = first.machine;
  parts.push(`Machine: ${m.cpu}, ${m.memoryGiB} GiB, ${m.kernel}; Node ${m.node}, Redis ${m.redis}, ${m.wrk}.\n`);
}

parts.push('### Goals\n');
parts.push(head(['goal', 'measured', 'verdict']));
if (ingress) {
  const s = ingress.summary;
  parts.push(
    row([
      'ingress ≥ 1.0 × bare node:http throughput at c=64',
      `${s.ingress.ratio.toFixed(2)} × (${fmt(s.ingress.rps)} vs ${fmt(s.bare.rps)} req/s)`,
      verdict(s.ingress.ratio >= 1),
    ]),
  );
  parts.push(
    row([
      'ingress p99 < 2 × bare p99',
      `${s.ingress.p99Ratio.toFixed(2)} × (${s.ingress.p99Ms.toFixed(1)} vs ${s.bare.p99Ms.toFixed(1)} ms)`,
      verdict(s.ingress.p99Ratio < 2),
    ]),
  );
  if (s.cluster)
    parts.push(
      row([
        `${s.cluster.name}: ≥ 0.7 × bare`,
        `${s.cluster.ratio.toFixed(2)} ×, p99 ${s.cluster.p99Ratio.toFixed(2)} ×`,
        verdict(s.cluster.ratio >= 0.7 && s.cluster.p99Ratio < 2),
      ]),
    );
}
if (worker)
  parts.push(
    row([
      'worker ≥ 0.85 × raw undici',
      `${worker.summary.ratio.toFixed(2)} × (${fmt(worker.summary.worker.rps)} vs ${fmt(worker.summary.undici.rps)} entries/s)`,
      verdict(worker.summary.ratio >= 0.85),
    ]),
  );
if (chain?.summary.relay) {
  const mp = chain.summary.mirrorplane;
  parts.push(
    row([
      'whole chain: Mirrorplane CPU per delivered request ≤ respond-then-relay',
      `${mp.cpuRatio.toFixed(2)} × (${fmt(mp.cpuUsPerDelivered)} vs ${fmt(chain.summary.relay.cpuUsPerDelivered)} µs)`,
      verdict(mp.cpuRatio <= 1),
    ]),
  );
  parts.push(
    row([
      'whole chain: Mirrorplane delivered/s ≥ respond-then-relay',
      `${mp.deliveredRatio.toFixed(2)} × (${fmt(mp.deliveredPerSecond)} vs ${fmt(chain.summary.relay.deliveredPerSecond)} /s)`,
      verdict(mp.deliveredRatio >= 1),
    ]),
  );
} else if (chain) parts.push(row(['whole chain vs respond-then-relay', `not measured: ${chain.skipped.map((x) => x.reason).join('; ')}`, '—']));
else parts.push(row(['whole chain vs respond-then-relay', 'not run yet: `node bench/whole-chain.mjs --json`', '—']));
if (tls)
  parts.push(
    row([
      'ingress with TLS vs clear text (issue 20: no goal set)',
      `${tls.summary.ingressTls.ratio.toFixed(2)} × throughput, CPU ${fmt(tls.summary.ingressTls.cpuUsPerRequest)} vs ${fmt(tls.summary.ingress.cpuUsPerRequest)} µs/request; bare node:https ${tls.bareTlsRatio.toFixed(2)} × node:http`,
      reportOnly,
    ]),
  );
else parts.push(row(['ingress with TLS vs clear text (issue 20: no goal set)', 'not run yet: `node bench/ingress-tls.mjs --json`', reportOnly]));
if (h2c)
  parts.push(
    row([
      'h2c intake and HTTP/2 replay (issue 18: no goal set)',
      `ingress h2c ${h2c.summary.ingressH2.ratio.toFixed(2)} × bare node:http2 (HTTP/1.1: ${h2c.summary.ingressH1.ratio.toFixed(2)} × node:http); HTTP/2 replay ${h2c.replay.h2.ratio.toFixed(2)} × HTTP/1.1`,
      reportOnly,
    ]),
  );
else parts.push(row(['h2c intake and HTTP/2 replay (issue 18: no goal set)', 'not run yet: `node bench/h2c.mjs --json`', reportOnly]));
if (order) {
  const keyed = order.keyCounts.map((k) => `${k.toLocaleString('en-US')} keys ${order.summary[k].ratio.toFixed(2)} ×`).join(', ');
  parts.push(row([`per-key ordering at concurrency ${order.concurrency} (issue 19: no goal set)`, `drain throughput vs no ordering: ${keyed}`, reportOnly]));
} else parts.push(row(['per-key ordering (issue 19: no goal set)', 'not run yet: `node bench/order-cost.mjs --json`', reportOnly]));
if (e2e)
  parts.push(
    row([
      'ingress ack → staging receipt p50 < 5 ms at half of peak',
      `${e2e.summary.p50Ms.toFixed(2)} ms at ${fmt(e2e.summary.offeredRps)} req/s`,
      verdict(e2e.summary.p50Ms < 5),
    ]),
  );
if (memory)
  parts.push(
    row([
      'Redis ≤ request bytes + 200 B per backlog entry',
      `${memory.summary.overhead.toFixed(0)} B over a ${memory.summary.requestBytes} B request`,
      verdict(memory.summary.overhead <= 200),
    ]),
  );
if (soak) {
  const worst = Math.max(...['ingressRss', 'workerRss'].map((k) => soak.summary[k].change));
  parts.push(
    row([
      `flat memory (${soak.summary.minutes} min at half of peak)`,
      `RSS change, last vs middle third: ingress ${(soak.summary.ingressRss.change * 100).toFixed(1)} %, worker ${(soak.summary.workerRss.change * 100).toFixed(1)} %`,
      verdict(worst < 0.1),
    ]),
  );
}
parts.push('');

if (ingress) {
  const s = ingress.summary;
  parts.push(
    `### Ingress vs bare node:http\n\n${when(ingress)}; ${ingress.reps} × ${ingress.seconds} s per server, interleaved, wrk -t1 -c${ingress.connections}, 1 KiB POST. CPU is in cores (1.00 = one core busy); CPU µs/request is the server's CPU time per request, steadier than throughput on a shared machine.\n`,
  );
  parts.push(head(['server', 'req/s', '× bare', 'p50 ms', 'p99 ms', 'p99 × bare', 'server CPU', 'CPU µs/request', 'Redis CPU', 'errors']));
  for (const v of Object.values(s))
    parts.push(row([v.name, v.rps, v.ratio, v.p50Ms, v.p99Ms, v.p99Ratio, v.serverCpu, v.cpuUsPerRequest ?? NaN, v.redisCpu, v.errors]));
  parts.push('');
  if (ingress.sweep?.rates?.length) {
    writeFileSync(SVG, svgPlot(ingress));
    parts.push(
      `Offered-load sweep (fixed rates, ${ingress.sweep.seconds} s a point, the same rates for each server, interleaved):\n\n![throughput and p99 against offered load](benchmarks-ingress.svg)\n`,
    );
    const keys = Object.keys(ingress.sweep.series);
    parts.push(head(['offered req/s', ...keys.flatMap((k) => [`${ingress.sweep.names[k]} req/s`, 'p99 ms'])]));
    ingress.sweep.rates.forEach((rate, i) =>
      parts.push(row([rate, ...keys.flatMap((k) => [ingress.sweep.series[k][i].rps, ingress.sweep.series[k][i].p99Ms])])),
    );
    parts.push('');
  }
}
if (tls) {
  parts.push(
    `### Ingress with TLS vs clear text\n\n${when(tls)}; ${tls.reps} × ${tls.seconds} s per server, interleaved, wrk -t1 -c${tls.connections}, 1 KiB POST, keep-alive (one handshake per connection, then record encryption; EC P-256 self-signed certificate). The baseline is the clear-text ingress; bare node:http and node:https show what TLS costs any Node server here. Mutual TLS is not measured (wrk presents no client certificate). CPU µs/request is the server process's CPU time per request.\n`,
  );
  parts.push(head(['server', 'req/s', '× clear ingress', 'p50 ms', 'p99 ms', 'CPU µs/request', 'errors']));
  for (const v of Object.values(tls.summary)) parts.push(row([v.name, v.rps, v.ratio, v.p50Ms, v.p99Ms, v.cpuUsPerRequest, v.errors]));
  parts.push(`\nTLS keeps ${tls.tlsRatio.toFixed(2)} of the ingress's clear-text throughput and ${tls.bareTlsRatio.toFixed(2)} of bare node:http's.\n`);
} else parts.push(notRun('Ingress with TLS vs clear text', 'ingress-tls'));
if (h2c) {
  parts.push(
    `### HTTP/2 (h2c) next to HTTP/1.1\n\n${when(h2c)}. Intake: ${h2c.reps} × ${h2c.seconds} s per server, interleaved, \`bench/clients/h2-load.mjs\` (node's own clients; wrk speaks no HTTP/2), ${h2c.sessions} connections × ${h2c.streams} streams in flight for h2c, ${h2c.sessions * h2c.streams} keep-alive connections for HTTP/1.1, 1 KiB bodies (one gRPC message over h2c). Each ingress figure is a ratio against the bare server of the same protocol; CPU µs/request is the server process's CPU time per request.\n`,
  );
  parts.push(head(['server', 'req/s', '× bare (same protocol)', 'p50 ms', 'p99 ms', 'CPU µs/request', 'errors']));
  for (const v of Object.values(h2c.summary)) parts.push(row([v.name, v.rps, v.ratio, v.p50Ms, v.p99Ms, v.cpuUsPerRequest ?? NaN, v.errors]));
  parts.push(
    `\nReplay: ${fmt(h2c.entries)} entries pre-filled through the real codec, one worker at concurrency ${h2c.concurrency}, ${h2c.reps} runs each, interleaved, timed from staging's first request to every entry acknowledged; CPU is the worker's.\n`,
  );
  parts.push(head(['replay', 'entries/s', '× HTTP/1.1', 'CPU µs/entry']));
  parts.push(row(['HTTP/1.1 entries → HTTP/1.1 staging', h2c.replay.h1.rps, 1, h2c.replay.h1.cpuUsPerEntry]));
  parts.push(
    row(['HTTP/2 entries → h2c staging', h2c.replay.h2.rps, h2c.replay.h2.ratio ?? h2c.replay.h2.rps / h2c.replay.h1.rps, h2c.replay.h2.cpuUsPerEntry]),
  );
  parts.push('');
} else parts.push(notRun('HTTP/2 (h2c) next to HTTP/1.1', 'h2c'));
if (worker) {
  const s = worker.summary;
  parts.push(
    `### Worker vs raw undici\n\n${when(worker)}; ${worker.entries} entries pre-filled through the real codec, concurrency ${worker.concurrency}, ${worker.reps} runs each, interleaved. The worker is timed from staging's first request to the moment the stream is empty and nothing is pending (every entry acknowledged and deleted).\n`,
  );
  parts.push(head(['replayer', 'entries/s', '× undici', 'CPU µs/entry']));
  parts.push(row(['raw undici Pool', s.undici.rps, 1, s.undici.cpuUsPerEntry]));
  parts.push(row(['worker', s.worker.rps, s.ratio, s.worker.cpuUsPerEntry]));
  parts.push('');
}
if (order) {
  parts.push(
    `### Per-key ordering cost\n\n${when(order)}; ${fmt(order.entries)} entries pre-filled through the real codec (1 KiB, an X-Session header spread round-robin over the keys), ${order.workers} worker(s) at concurrency ${order.concurrency}, ${order.reps} runs each, interleaved, timed from staging's first request to every entry acknowledged. Ordered runs use \`ORDER_BY=header:x-session\`; ratios are against the unordered run of the same invocation. CPU is the worker processes' (Redis's share of the ordering scripts is not counted). With fewer keys than the concurrency, at most one request per key is in flight: that row measures ordering itself, not its overhead. p99 is not measured (a drain has no per-request latency).\n`,
  );
  parts.push(head(['ordering', 'distinct keys seen', 'entries/s', '× no ordering', 'CPU µs/entry', 'CPU × no ordering']));
  for (const v of Object.values(order.summary))
    parts.push(
      row([v.name ?? String(v.keys), v.keysSeen ? v.keysSeen.toLocaleString('en-US') : '—', v.rps, v.ratio, v.cpuUsPerEntry ?? NaN, v.cpuRatio ?? NaN]),
    );
  parts.push('');
} else parts.push(notRun('Per-key ordering cost', 'order-cost'));
if (chain) {
  const s = chain.summary;
  parts.push(
    `### Whole chain vs respond-then-relay\n\n${when(chain)}; ${chain.reps} × ${chain.seconds} s per system, interleaved, wrk -t1 -c${chain.connections}, 1 KiB POST, one shared staging server (node:http). Delivered/s is staging's count over the time from wrk's start to staging's last receipt (a backlog built during the run is drained and counted); CPU per delivered request counts every process of the system (relay; ingress + worker + redis-server; nginx master and workers), not wrk or staging; lost is accepted (2xx to wrk) minus delivered, summed over the runs. The baseline (\`bench/baseline/relay.go\`, ${chain.go ?? 'Go'}) reads the body, answers 200 and relays in a goroutine over at most 64 keep-alive connections, storing nothing.\n`,
  );
  for (const x of chain.skipped) parts.push(`**Skipped:** ${x.key}: ${x.reason}.\n`);
  parts.push(head(['system', 'delivered/s', '× relay', 'accepted/s', 'CPU µs/delivered', '× relay', 'lost', 'client p99 ms']));
  for (const v of Object.values(s))
    parts.push(
      row([v.name, v.deliveredPerSecond, v.deliveredRatio ?? '—', v.acceptedPerSecond, v.cpuUsPerDelivered, v.cpuRatio ?? '—', v.lost, v.clientP99Ms]),
    );
  parts.push('');
} else parts.push(notRun('Whole chain vs respond-then-relay', 'whole-chain'));
if (e2e) {
  const s = e2e.summary;
  parts.push(
    `### End to end\n\n${when(e2e)}. Peak of the whole loop (wrk -c64 on the ingress while the worker replays): ${fmt(s.peakRps)} req/s; offered ${fmt(s.offeredRps)} req/s at a fixed rate for ${e2e.seconds} s. Latency is staging's receipt time minus the client's receipt of the ingress's 200, per request (x-request-id).\n`,
  );
  parts.push(head(['acknowledged', 'replayed', 'p50 ms', 'p90 ms', 'p99 ms', 'p99.9 ms', 'max ms']));
  parts.push(row([s.acknowledged, s.replayed, s.p50Ms, s.p90Ms, s.p99Ms, s.p999Ms, s.maxMs]));
  parts.push('');
}
if (memory) {
  const s = memory.summary;
  parts.push(
    `### Redis memory per backlog entry\n\n${when(memory)}; ${fmt(s.entries)} entries of a ${s.requestBytes} B request (1 KiB body; ${s.fieldBytes} B of stream fields), stream-node-max-bytes ${s.streamNodeConfig['stream-node-max-bytes']}, stream-node-max-entries ${s.streamNodeConfig['stream-node-max-entries']}.\n`,
  );
  parts.push(head(['measure', 'bytes/entry', 'beyond the request']));
  parts.push(row(['INFO memory, used_memory delta', s.perEntryInfo, s.overheadInfo]));
  parts.push(row(['MEMORY USAGE stream SAMPLES 0', s.perEntryUsage, s.overheadUsage]));
  parts.push('');
}
if (soak) {
  const s = soak.summary;
  parts.push(
    `### Soak\n\n${when(soak)}; ${s.minutes} min at ${fmt(s.offeredRps)} req/s (half of the loop's peak ${fmt(s.peakRps)}), achieved ${fmt(s.achievedRps)} req/s, p99 ${s.p99Ms.toFixed(1)} ms, ${s.errors} errors, backlog at most ${s.maxBacklog}. Medians of the middle and last thirds of the samples (every ${soak.everyS} s; the first third is warm-up).\n`,
  );
  parts.push(head(['series', 'middle third MiB', 'last third MiB', 'change']));
  for (const k of ['ingressRss', 'ingressHeap', 'workerRss', 'workerHeap'])
    parts.push(row([k.replace(/([A-Z])/, ' $1'), s[k].middle / 2 ** 20, s[k].last / 2 ** 20, `${(s[k].change * 100).toFixed(1)} %`]));
  parts.push('');
}
if (scaling) {
  parts.push(`### Scale-out on this machine\n\n${when(scaling)}. See docs/SCALING.md for the model.\n`);
  parts.push(head(['layout', 'ingress req/s', 'loop req/s (drained)', 'p99 ms']));
  for (const p of scaling.points) parts.push(row([p.name, p.ingressRps, p.loopRps, p.p99Ms]));
  parts.push('');
}

/** Replaces the generated block of a document (or appends one), leaving the rest as it is. */
function writeBlock(file, title, body) {
  const block = `${BEGIN}\n${body}\n${END}`;
  let text = existsSync(file) ? readFileSync(file, 'utf8') : `# ${title}\n\n`;
  const a = text.indexOf(BEGIN);
  const b = text.indexOf(END);
  text = a !== -1 && b > a ? text.slice(0, a) + block + text.slice(b + END.length) : `${text.trimEnd()}\n\n${block}\n`;
  writeFileSync(file, text);
}
writeBlock(MD, 'Benchmarks', parts.join('\n'));

// docs/SCALING.md: the measured points and the per-entry costs the model uses.
if (scaling || ingress || worker) {
  const s = [];
  s.push('## Measured points\n');
  s.push("Generated by `node bench/report.mjs`. CPU is in cores over the whole run (load and drain); per-entry costs divide it by the loop's throughput.\n");
  if (scaling) {
    s.push(`${when(scaling)}; wrk -c64 for ${scaling.seconds} s per layout, ${scaling.reps} repetitions, medians.\n`);
    s.push(head(['layout', 'ingress req/s', 'loop req/s', 'p99 ms', 'CPU ingress', 'CPU workers', 'CPU Redis', 'CPU staging']));
    for (const p of scaling.points) s.push(row([p.name, p.ingressRps, p.loopRps, p.p99Ms, p.cpu.ingress, p.cpu.workers, p.cpu.redis, p.cpu.staging]));
    s.push('');
    const one = scaling.points[0];
    s.push(
      `Per entry in the "1 ingress + 1 worker" layout: ingress ${fmt((one.cpu.ingress / one.loopRps) * 1e6)} µs, worker ${fmt((one.cpu.workers / one.loopRps) * 1e6)} µs, Redis ${fmt((one.cpu.redis / one.loopRps) * 1e6)} µs (XADD, XREADGROUP, XACK, XDEL), staging ${fmt((one.cpu.staging / one.loopRps) * 1e6)} µs.\n`,
    );
  }
  const costs = [];
  if (ingress) {
    const i = ingress.summary;
    costs.push(
      row([
        'ingress process, CPU per request',
        `${fmt(i.ingress.cpuUsPerRequest)} µs`,
        `bare node:http ${fmt(i.bare.cpuUsPerRequest)} µs`,
        `\`bench/ingress.mjs\`, ${ingress.date.slice(0, 10)}`,
      ]),
    );
    costs.push(row(['Redis, CPU per XADD', `${fmt((i.ingress.redisCpu / i.ingress.rps) * 1e6)} µs`, '', '']));
  }
  if (worker)
    costs.push(
      row([
        'worker process, CPU per entry',
        `${fmt(worker.summary.worker.cpuUsPerEntry)} µs`,
        `raw undici ${fmt(worker.summary.undici.cpuUsPerEntry)} µs`,
        `\`bench/worker.mjs\`, ${worker.date.slice(0, 10)}`,
      ]),
    );
  if (memory)
    costs.push(
      row([
        'Redis memory per backlog entry (1 KiB request)',
        `${fmt(memory.summary.perEntryUsage)} B`,
        `request ${memory.summary.requestBytes} B`,
        '`bench/redis-memory.mjs`',
      ]),
    );
  if (costs.length > 0) {
    s.push(head(['cost', 'measured', 'baseline', 'source']));
    s.push(...costs);
    s.push('');
  }
  writeBlock(`${DOCS}SCALING.md`, 'Scaling', s.join('\n'));
}
console.log(`wrote ${MD}${ingress?.sweep?.rates?.length ? ` and ${SVG}` : ''}`);

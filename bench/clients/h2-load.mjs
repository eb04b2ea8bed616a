#!/usr/bin/env node
// Closed-loop load over HTTP/2 (h2c, prior knowledge) or HTTP/1.1 with node's own clients, for
// what wrk cannot speak: `sessions` connections × `streams` requests in flight each, 1 KiB
// bodies framed as one gRPC message (HTTP/2) or a JSON POST (HTTP/1.1), for `seconds`.
// Prints one JSON line: { requests, errors, rps, p50Ms, p99Ms, cpuSeconds }.
//
//   node bench/clients/h2-load.mjs <url> <h2|h1> <seconds> <sessions> <streams>
import { connect } from 'node:http2';
import { Agent, request } from 'node:http';

const [url, protocol = 'h2', secondsText = '3', sessionsText = '4', streamsText = '16'] = process.argv.slice(2);
const seconds = Number(secondsText);
const sessions = Number(sessionsText);
const streams = Number(streamsText);
const message = Buffer.alloc(1019, 0x61);
const grpcBody = Buffer.concat([Buffer.from([0, 0, 0, (message.length >> 8) & 0xff, message.length & 0xff]), message]);
const latencies = [];
let errors = 0;
let requests = 0;
const stopAt = performance.now() + seconds * 1000;
const cpu0 = process.cpuUsage();

function h2Loop(session, path) {
  return new Promise((resolve) => {
    const one = () => {
      if (performance.now() >= stopAt) return resolve();
      const started = performance.now();
      const stream = session.request({ ':method': 'POST', ':path': path, 'content-type': 'application/grpc', te: 'trailers' });
      let ok = false;
      stream.on('response', (h) => (ok = h[':status'] === 200));
      stream.on('error', () => undefined);
      stream.on('data', () => undefined);
      stream.on('close', () => {
        if (ok && stream.rstCode === 0) {
          requests += 1;
          latencies.push(performance.now() - started);
        } else errors += 1;
        one();
      });
      stream.end(grpcBody);
    };
    one();
  });
}

function h1Loop(agent, target) {
  return new Promise((resolve) => {
    const one = () => {
      if (performance.now() >= stopAt) return resolve();
      const started = performance.now();
      const req = request(target, { method: 'POST', agent, headers: { 'content-type': 'application/json', 'content-length': grpcBody.length } }, (res) => {
        res.resume();
        res.on('end', () => {
          if (res.statusCode === 200) {
            requests += 1;
            latencies.push(performance.now() - started);
          } else errors += 1;
          one();
        });
      });
      req.on('error', () => {
        errors += 1;
        one();
      });
      req.end(grpcBody);
    };
    one();
  });
}

const loops = [];
const closers = [];
if (protocol === 'h2') {
  for (let s = 0; s < sessions; s += 1) {
    const session = connect(url);
    session.on('error', () => undefined);
    closers.push(() => session.close());
    for (let i = 0; i < streams; i += 1) loops.push(h2Loop(session, '/bench.Load/Call'));
  }
} else {
  const agent = new Agent({ keepAlive: true, maxSockets: sessions * streams });
  closers.push(() => agent.destroy());
  for (let i = 0; i < sessions * streams; i += 1) loops.push(h1Loop(agent, `${url}/orders`));
}
await Promise.all(loops);
for (const close of closers) close();
const cpu = process.cpuUsage(cpu0);
latencies.sort((a, b) => a - b);
const at = (p) => latencies[Math.min(latencies.length - 1, Math.floor(p * latencies.length))] ?? 0;
process.stdout.write(
  `${JSON.stringify({ requests, errors, rps: requests / seconds, p50Ms: at(0.5), p99Ms: at(0.99), cpuSeconds: (cpu.user + cpu.system) / 1e6 })}\n`,
);

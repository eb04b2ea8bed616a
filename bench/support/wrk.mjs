// Runs wrk (one thread, as the figures were taken) with our POST script and returns
// its JSON summary, with the CPU the measured processes used during the run.
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { cpuSeconds } from './processes.mjs';

const WRK = process.env.WRK ?? '/usr/bin/wrk';
const CLOSED = fileURLToPath(new URL('./post.lua', import.meta.url));
const RATE = fileURLToPath(new URL('./post-rate.lua', import.meta.url));

/**
 * @param {{ url: string, connections?: number, seconds?: number, rate?: number, pids?: number[] }} options
 *   `rate` (requests per second) offers a fixed schedule; `pids` are processes whose CPU is measured.
 */
export async function runWrk({ url, connections = 64, seconds = 5, rate = 0, pids = [] }) {
  const args = ['-t1', `-c${connections}`, `-d${seconds}s`, '--timeout', '10s', '-s', rate > 0 ? RATE : CLOSED, `${url}/orders`];
  if (rate > 0) args.push('--', String(rate));
  const cpuBefore = pids.map(cpuSeconds);
  const out = await new Promise((resolve, reject) => {
    const child = spawn(WRK, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let text = '';
    child.stdout.on('data', (d) => {
      text += d;
    });
    child.stderr.on('data', (d) => {
      text += d;
    });
    child.once('error', reject);
    child.once('exit', (code) => (code === 0 ? resolve(text) : reject(new Error(`wrk exited ${code}: ${text}`))));
  });
  const line = out.split('\n').find((l) => l.startsWith('MPJSON '));
  if (!line) throw new Error(`wrk printed no summary:\n${out}`);
  const s = JSON.parse(line.slice(7));
  const seconds_ = s.durationUs / 1e6;
  const errors = s.errors.connect + s.errors.read + s.errors.write + s.errors.status + s.errors.timeout;
  const result = {
    connections,
    offered: rate || null,
    rps: s.requests / seconds_,
    requests: s.requests,
    errors,
    /** wrk's error counts by kind (`status`: answers other than 2xx/3xx). */
    errorKinds: s.errors,
    p50Ms: s.latencyUs.p50 / 1000,
    p90Ms: s.latencyUs.p90 / 1000,
    p99Ms: s.latencyUs.p99 / 1000,
    p999Ms: s.latencyUs.p999 / 1000,
    maxMs: s.latencyUs.max / 1000,
    cpu: pids.map((pid, i) => (cpuSeconds(pid) - cpuBefore[i]) / seconds_),
  };
  // CPU time per request of the first process: steadier than throughput on a shared machine.
  result.cpuUsPerRequest = pids.length > 0 && result.rps > 0 ? (result.cpu[0] / result.rps) * 1e6 : NaN;
  return result;
}

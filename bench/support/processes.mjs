// Processes a benchmark starts: redis-server, our own small servers (forked, with an IPC
// channel), and the real CLI. Every one is stopped by pid when the benchmark ends.
import { fork, spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Redis } from 'ioredis';
import { freePort, LocalRedisServer } from '@mirrorplane/runtime';

export const CLI = fileURLToPath(new URL('../../apps/cli/bin/mirrorplane.js', import.meta.url));
const SERVERS = fileURLToPath(new URL('../servers/', import.meta.url));

const started = new Set();

/** Stops everything still running; called on exit and on SIGINT. */
export async function stopAll() {
  await Promise.all([...started].map((p) => p.stop()));
}
process.once('SIGINT', () => void stopAll().then(() => process.exit(130)));
for (const event of ['uncaughtException', 'unhandledRejection']) {
  process.once(event, (error) => {
    console.error(error);
    void stopAll().then(() => process.exit(1));
  });
}

export { freePort };

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export async function waitFor(what, check, timeoutMs = 30_000, everyMs = 20) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    let last;
    try {
      const value = await check();
      if (value) return value;
    } catch (error) {
      last = error;
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}${last ? `: ${last.message}` : ''}`);
    await sleep(everyMs);
  }
}

function track(child, extra = {}) {
  const exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve(code ?? signal)));
  const proc = {
    child,
    pid: child.pid,
    exited,
    ...extra,
    async stop(signal = 'SIGTERM', graceMs = 10_000) {
      started.delete(proc);
      if (child.exitCode === null && child.signalCode === null) {
        child.kill(signal);
        const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
        await exited;
        clearTimeout(timer);
      }
      await extra.cleanup?.();
    },
  };
  started.add(proc);
  return proc;
}

/** A redis-server on a free port, without persistence, in its own temporary directory. */
export async function startRedis(extraArgs = []) {
  const server = await LocalRedisServer.start({ dirPrefix: 'mp-bench-redis-', args: ['--appendonly', 'no', ...extraArgs] });
  const url = server.url;
  const proc = track(server.child, { port: server.port, url, cleanup: () => server.close() });
  proc.client = () => {
    const client = new Redis(url, { maxRetriesPerRequest: null });
    client.on('error', () => undefined);
    return client;
  };
  return proc;
}

/**
 * Forks one of bench/servers/*.mjs. It answers `{ ready: port }` once listening; `ask(cmd)`
 * sends a command over IPC and resolves with the reply.
 */
export async function startServer(name, args = [], env = {}, execArgv = []) {
  const child = fork(join(SERVERS, `${name}.mjs`), args, { env: { ...process.env, ...env }, execArgv, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  const waiting = [];
  let ready;
  const readyPromise = new Promise((resolve, reject) => {
    ready = resolve;
    child.once('exit', (code) => reject(new Error(`${name} exited with ${code} before it was ready`)));
  });
  child.on('message', (message) => {
    if (message && typeof message === 'object' && 'ready' in message) ready(message.ready);
    else waiting.shift()?.(message);
  });
  const port = await readyPromise;
  const proc = track(child, { port, url: `http://127.0.0.1:${port}` });
  proc.ask = (cmd) =>
    new Promise((resolve) => {
      waiting.push(resolve);
      child.send(cmd);
    });
  return proc;
}

/**
 * Starts the real CLI (`mirrorplane <role>`) and waits for its start-up log line. Output is
 * kept (the last 64 KiB) to explain a failure.
 */
export async function startCli(role, env, readyMsg = role === 'ingress' ? 'ingress listening' : 'worker started', nodeArgs = []) {
  const child = spawn(process.execPath, [...nodeArgs, CLI, role], {
    env: { PATH: process.env.PATH ?? '', LOG_LEVEL: 'info', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  const keep = (d) => {
    out = (out + d.toString()).slice(-65536);
  };
  child.stdout.on('data', keep);
  child.stderr.on('data', keep);
  const proc = track(child, { output: () => out });
  const count = Number(env.INGRESS_PROCESSES ?? 1);
  await waitFor(
    `${role} to log "${readyMsg}"`,
    () => {
      if (child.exitCode !== null) throw new Error(`${role} exited with ${child.exitCode}:\n${out}`);
      return out.split('\n').filter((l) => l.includes(`"msg":"${readyMsg}"`)).length >= count;
    },
    30_000,
  );
  return proc;
}

/** Resident set size of a process and its children, in bytes (from /proc). */
export function rssBytes(pid) {
  let total = 0;
  for (const p of [pid, ...childPids(pid)]) {
    try {
      const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${p}/status`, 'utf8'));
      if (m) total += Number(m[1]) * 1024;
    } catch {
      // gone
    }
  }
  return total;
}

/** CPU seconds (user + system) a process and its children used so far. */
export function cpuSeconds(pid) {
  let ticks = 0;
  for (const p of [pid, ...childPids(pid)]) {
    try {
      const stat = readFileSync(`/proc/${p}/stat`, 'utf8');
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      ticks += Number(fields[11]) + Number(fields[12]);
    } catch {
      // gone
    }
  }
  return ticks / 100;
}

export function childPids(pid) {
  try {
    const list = readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim();
    return list ? list.split(' ').map(Number) : [];
  } catch {
    return [];
  }
}

/**
 * Starts any program (a built baseline, nginx) and waits until its output matches `ready`
 * (a RegExp; its first group, if any, is returned as `match`). Stopped by pid like the rest.
 */
export async function startProgram(command, args, ready, env = {}, timeoutMs = 30_000) {
  const child = spawn(command, args, { env: { PATH: process.env.PATH ?? '', ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  const keep = (d) => {
    out = (out + d.toString()).slice(-65536);
  };
  child.stdout.on('data', keep);
  child.stderr.on('data', keep);
  const proc = track(child, { output: () => out });
  const m = await waitFor(
    `${command} to print ${ready}`,
    () => {
      if (child.exitCode !== null) throw new Error(`${command} exited with ${child.exitCode}:\n${out}`);
      return ready.exec(out);
    },
    timeoutMs,
  );
  proc.match = m[1];
  return proc;
}

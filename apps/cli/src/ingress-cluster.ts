import cluster, { type Worker } from 'node:cluster';
import { INGRESS_INDEX_ENV, type Config } from '@mirrorplane/core';
import type { Logger } from '@mirrorplane/runtime';
import { EXIT_USAGE } from './process.js';
import { releaseStartSignals } from './early-signals.js';

/** A crash loop must not spin the CPU: a replacement waits this long after an unplanned exit. */
const RESTART_DELAY_MS = 1000;
/** How long past SHUTDOWN_TIMEOUT_MS the primary waits for its processes after a failed start before SIGKILL. */
const ESCALATE_AFTER_MS = 2000;

/** Whether this process should supervise ingress processes instead of running an ingress. */
export function isIngressPrimary(config: Config): boolean {
  return config.ingressProcesses > 1 && cluster.isPrimary;
}

/**
 * The configuration one ingress process of a cluster runs with: the same settings, except
 * that process i serves its admin port at ADMIN_PORT + i (each process has its own metrics
 * and readiness; Prometheus scrapes every port and sums). The traffic port is shared.
 */
export function ingressProcessConfig(config: Config): Config {
  if (!cluster.isWorker || config.adminPort === 0) return config;
  return Object.freeze({ ...config, adminPort: config.adminPort + config.ingressProcessIndex });
}

/**
 * In a process of the cluster, signals are the primary's to escalate. SIGINT is ignored:
 * Ctrl-C reaches the whole process group and the primary passes it on as SIGTERM. A SIGTERM
 * starts the graceful shutdown once and later ones are ignored: systemd signals the whole
 * group, so each process gets the group's SIGTERM and the primary's; counting the second as
 * "exit now" would cut the shutdown short and report failure. The primary's second signal
 * sends SIGKILL. Call after the signal handlers are installed.
 */
export function leaveSignalsToPrimary(): void {
  if (!cluster.isWorker) return;
  process.removeAllListeners('SIGINT');
  process.on('SIGINT', () => undefined);
  const handlers = process.listeners('SIGTERM');
  process.removeAllListeners('SIGTERM');
  let seen = false;
  process.on('SIGTERM', (signal) => {
    if (seen) return;
    seen = true;
    for (const handler of handlers) handler(signal);
  });
}

/**
 * Runs INGRESS_PROCESSES ingress processes sharing the traffic port (node:cluster: the primary
 * accepts connections and hands them out in turn). Replaces a process that exits unplanned.
 * On SIGTERM or SIGINT every process shuts down gracefully; the primary exits when all have,
 * with 0 when every one exited cleanly.
 */
export function superviseIngressProcesses(config: Config, logger: Logger): void {
  const workers = new Map<Worker, number>();
  let stopping = false;
  let failed = false;
  const start = (index: number) => {
    const worker = cluster.fork({ [INGRESS_INDEX_ENV]: String(index) });
    workers.set(worker, index);
    worker.on('exit', (code, signal) => {
      workers.delete(worker);
      if (stopping) {
        if (code !== 0) failed = true;
        if (workers.size === 0) {
          logger.info({ failed }, 'ingress processes stopped');
          logger.flush();
          process.exit(failed ? EXIT_USAGE : 0);
        }
        return;
      }
      if (code === EXIT_USAGE) {
        // A port in use or a bad setting: a replacement would fail the same way, so stop all.
        logger.fatal({ index, code }, 'ingress process could not start (see its message); stopping');
        stopping = true;
        failed = true;
        for (const other of workers.keys()) other.process.kill('SIGTERM');
        // No second signal will come to escalate: a process still starting may not act on this
        // SIGTERM (seen under load), and the primary must not wait on it for ever.
        setTimeout(() => {
          for (const other of workers.keys()) other.process.kill('SIGKILL');
        }, config.shutdownTimeoutMs + ESCALATE_AFTER_MS).unref();
        if (workers.size === 0) {
          logger.flush();
          process.exit(EXIT_USAGE);
        }
        return;
      }
      logger.error({ index, code, signal }, 'ingress process exited; starting a replacement');
      setTimeout(() => {
        if (!stopping) start(index);
      }, RESTART_DELAY_MS).unref();
    });
  };
  for (let i = 0; i < config.ingressProcesses; i += 1) start(i);
  logger.info({ processes: config.ingressProcesses, port: config.ingressPort }, 'ingress primary started');

  const stop = (signal: NodeJS.Signals) => {
    if (stopping) {
      logger.warn({ signal }, 'second signal: stopping ingress processes now');
      for (const worker of workers.keys()) worker.process.kill('SIGKILL');
      process.exit(1);
    }
    stopping = true;
    logger.info({ signal, processes: workers.size }, 'shutting down ingress processes');
    if (workers.size === 0) process.exit(0);
    for (const worker of workers.keys()) worker.process.kill('SIGTERM');
  };
  releaseStartSignals();
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

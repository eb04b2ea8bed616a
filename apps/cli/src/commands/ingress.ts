import cluster from 'node:cluster';
import type { Command } from 'commander';
import { Ingress } from '@mirrorplane/ingress';
import { logStopsBeforeStart } from '../early-signals.js';
import { configure, createLogger, runUntilSignal } from '../process.js';
import { CONNECTION_SETTINGS, addSettingFlags, settingFlags } from '../settings-flags.js';
import { ingressProcessConfig, isIngressPrimary, leaveSignalsToPrimary, superviseIngressProcesses } from '../ingress-cluster.js';
import { preflight } from '../preflight.js';
import { listening } from '../listen-errors.js';

export function registerIngress(program: Command): void {
  const command = program.command('ingress').description('run the ingress: accept mirrored requests and append them to the stream');
  addSettingFlags(command, 'ingress', [...CONNECTION_SETTINGS, 'ingressPort', 'ingressHost', 'ingressProcesses', 'adminPort', 'adminHost']);
  command.action(async () => {
    const config = configure('ingress', settingFlags(command));
    const logger = createLogger(config, 'ingress');
    logStopsBeforeStart(logger);
    if (isIngressPrimary(config)) {
      await preflight(config, logger);
      superviseIngressProcesses(config, logger);
      return;
    }
    const processConfig = ingressProcessConfig(config);
    // The primary checked Redis and the deployment once for all its processes.
    if (!cluster.isWorker) await preflight(config, logger);
    const ingress = new Ingress(processConfig, logger);
    runUntilSignal(logger, () => ingress.close());
    leaveSignalsToPrimary();
    await listening(processConfig, () => ingress.listen());
  });
}

import type { Command } from 'commander';
import { RedisUnavailableError } from '@mirrorplane/core';
import { withOperatorConnection } from '../connection.js';
import { configure, createLogger, runUntilSignal, UsageError } from '../process.js';
import { CONNECTION_SETTINGS, addSettingFlags, settingFlags } from '../settings-flags.js';
import { Dashboard } from '../dashboard.js';
import { describeFailure } from '../failure.js';
import { listening } from '../listen-errors.js';

export function registerDashboard(program: Command): void {
  const command = program
    .command('dashboard')
    .description(
      'serve the dashboard: backlog, consumers and rates, and the retry queue and failed set (inspect, retry, remove); beyond loopback it needs ADMIN_TOKEN and a login',
    );
  addSettingFlags(command, 'cli', CONNECTION_SETTINGS)
    .option('--port <n>', 'port to listen on', '9092')
    .option('--host <addr>', 'address to bind (loopback unless told otherwise; elsewhere ADMIN_TOKEN is required)', '127.0.0.1')
    .option('--read-only', 'hide every mutating button and refuse every change (retry, remove, clean)')
    .option('--allowed-host <name...>', 'Host names the dashboard answers besides its address (the name operators type)');
  command.action(async (options: { port: string; host: string; readOnly?: boolean; allowedHost?: string[] }) => {
    const port = Number(options.port);
    if (!Number.isInteger(port) || port < 0 || port > 65535)
      throw new UsageError(`--port: expected an integer from 0 to 65535, got ${JSON.stringify(options.port)}`);
    const config = configure('cli', settingFlags(command));
    const logger = createLogger(config, 'dashboard');
    // A database that does not exist or a deployment that disagrees stops it before it serves
    // wrong figures; Redis merely down does not (the page says it cannot read, and recovers).
    // Redis down at start: each reading checks the deployment once Redis answers (exit 2 on a
    // mismatch then too), and the page shows no figure before that.
    await withOperatorConnection(config, async () => undefined).catch((error: unknown) => {
      if (!(error instanceof RedisUnavailableError)) throw error;
      logger.warn({ err: error.message }, 'Redis is not reachable; serving the dashboard, which shows it, and checking the deployment once Redis answers');
    });
    const onMisconfigured = (error: Error) => {
      const failure = describeFailure(error, config.redisUrl);
      logger.flush();
      process.stderr.write(`mirrorplane: ${failure.message}\n`);
      void dashboard.close().finally(() => process.exit(failure.exitCode));
    };
    const dashboard: Dashboard = new Dashboard({
      config,
      logger,
      host: options.host,
      port,
      readOnly: options.readOnly === true,
      allowedHosts: options.allowedHost ?? [],
      onMisconfigured,
    });
    runUntilSignal(logger, () => dashboard.close());
    const url = await listening({ ingressPort: port, ingressHost: options.host, adminPort: -1, adminHost: '' }, () => dashboard.listen()).catch(
      (error: unknown) => {
        if (error instanceof UsageError) throw new UsageError(error.message.replace('INGRESS_PORT / --port', 'dashboard --port'));
        throw error;
      },
    );
    logger.info({ url, login: dashboard.loginRequired, readOnly: options.readOnly === true }, 'dashboard listening');
  });
}

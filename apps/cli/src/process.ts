import { readFileSync } from 'node:fs';
import { ConfigError, loadConfig, type Config, type Role, type SettingKey } from '@mirrorplane/core';
import { createLogger, type Logger } from '@mirrorplane/runtime';
import { describeFailure } from './failure.js';
import { releaseStartSignals } from './early-signals.js';

export type Flags = Partial<Record<SettingKey, string>> & { config?: string };

/** Exit codes: 0 done, 1 failure at run time, 2 bad usage or configuration. */
export const EXIT_USAGE = 2;

export { UsageError } from '@mirrorplane/core';

let configured: string | undefined;

/** The Redis URL this process was configured with (the last `configure`), for error messages; undefined before. */
export function configuredRedisUrl(): string | undefined {
  return configured;
}

/** Loads the configuration once for this process; a bad value exits before anything starts. */
export function configure(role: Role, flags: Flags, env: NodeJS.ProcessEnv = process.env): Config {
  const { config: configPath, ...settings } = flags;
  const path = configPath ?? env.MIRRORPLANE_CONFIG;
  let file: { path: string; text: string } | undefined;
  if (path) {
    try {
      file = { path, text: readFileSync(path, 'utf8') };
    } catch (error) {
      throw new ConfigError([{ key: configPath ? '--config' : 'MIRRORPLANE_CONFIG', message: `cannot read ${path}: ${(error as Error).message}` }]);
    }
  }
  const clean = Object.fromEntries(Object.entries(settings).filter(([, v]) => v !== undefined)) as Partial<Record<SettingKey, string>>;
  const config = loadConfig({ role, env, flags: clean, ...(file ? { file } : {}) });
  configured = config.redisUrl;
  return config;
}

/**
 * Runs a long-lived role until SIGTERM or SIGINT, then closes it gracefully and exits 0.
 * A second signal exits at once. An uncaught exception is logged and ends the process:
 * continuing in an unknown state could lose entries. Takes the signals over from the
 * pre-start handler (`early-signals.ts`) in the same tick.
 */
export function runUntilSignal(logger: Logger, close: () => Promise<void>): void {
  releaseStartSignals();
  let closing = false;
  const onSignal = (signal: NodeJS.Signals) => {
    if (closing) {
      logger.warn({ signal }, 'second signal: exiting now');
      process.exit(1);
    }
    closing = true;
    logger.info({ signal }, 'shutting down');
    close().then(
      () => {
        logger.flush();
        process.exit(0);
      },
      (error: unknown) => {
        logger.error({ err: String(error) }, 'shutdown failed');
        logger.flush();
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
  process.on('uncaughtException', (error) => {
    const failure = describeFailure(error);
    if (failure.known) process.stderr.write(`mirrorplane: ${failure.message}\n`);
    logger.fatal({ err: failure.message }, 'uncaught exception; exiting');
    logger.flush();
    process.exit(1);
  });
  process.on('unhandledRejection', (error) => {
    const failure = describeFailure(error);
    if (failure.known) process.stderr.write(`mirrorplane: ${failure.message}\n`);
    logger.fatal({ err: failure.message }, 'unhandled rejection; exiting');
    logger.flush();
    process.exit(1);
  });
}

export { createLogger, type Logger };

/**
 * The CLI's one layer of SIGTERM/SIGINT handling before a command owns the signals.
 *
 * Until a role runs, a stop signal has nothing to finish: nothing was accepted yet. Without a
 * handler the default action would kill the process (exit 143) while its modules load or while
 * it checks a slow Redis, and a supervisor would read that as a crash. So the executable calls
 * `exitOnSignalUntilStarted` before it loads anything else, and the handler stays until one of:
 * - a role's own handling takes over (`runUntilSignal`, the ingress primary's supervisor), which
 *   calls `releaseStartSignals` and installs its handlers in the same tick, so no signal falls
 *   between the two;
 * - any other command starts (`main`'s pre-action hook): from then on the command decides
 *   (`status --watch` stops its loop, a short command dies by the signal as usual).
 *
 * No imports: the executable loads this module before anything else.
 */

/** What the handler needs of a logger: the role's, once it has one (pino's shape). */
export interface StopLog {
  info(fields: Record<string, unknown>, message: string): void;
  flush(): void;
}

let installed = false;
let log: StopLog | undefined;

function onSignal(signal: NodeJS.Signals): void {
  log?.info({ signal }, 'stopped before starting');
  log?.flush();
  process.exit(0);
}

/** Installs the pre-start handler: SIGTERM and SIGINT exit 0. Idempotent. */
export function exitOnSignalUntilStarted(): void {
  if (installed) return;
  installed = true;
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
}

/** A stop before the start is logged to `logger` (roles call this once their logger exists). */
export function logStopsBeforeStart(logger: StopLog): void {
  log = logger;
}

/** Removes the pre-start handler; the caller installs its own in the same tick. A no-op when none is installed. */
export function releaseStartSignals(): void {
  log = undefined;
  if (!installed) return;
  installed = false;
  process.off('SIGTERM', onSignal);
  process.off('SIGINT', onSignal);
}

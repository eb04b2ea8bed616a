import { pino, type Logger } from 'pino';
import { DEFAULT_REDACTED_HEADERS, type Config } from '@mirrorplane/core';

/**
 * The process logger: JSON lines on stdout, bound to the role. Header objects under
 * `headers` or `req.headers` have their secrets censored; flat header arrays are redacted
 * by the caller with `redactHeaders` before they are logged.
 */
export function createLogger(config: Pick<Config, 'logLevel'>, role: string, destination?: pino.DestinationStream): Logger {
  const paths = DEFAULT_REDACTED_HEADERS.flatMap((h) => [`headers.${h}`, `req.headers.${h}`, `request.headers.${h}`]);
  return pino(
    {
      level: config.logLevel,
      base: { role, pid: process.pid },
      redact: { paths, censor: '[redacted]' },
      timestamp: pino.stdTimeFunctions.isoTime,
    },
    destination ?? pino.destination({ dest: 1, sync: false }),
  );
}

export type { Logger };

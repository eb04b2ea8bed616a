import { pino, type Logger } from 'pino';
import { Redactor, redactionSettings, type Config } from '@mirrorplane/core';

/** Log fields that hold a request-target or URL: their secret query values are hidden. */
const TARGET_KEYS = ['target', 'url', 'path', 'route'] as const;
/** Log fields that hold free text which may quote a request (errors, reasons). */
const TEXT_KEYS = ['err', 'error', 'reason', 'lastError', 'failedReason'] as const;

/**
 * The process logger: JSON lines on stdout, bound to the role. Redaction is applied here, in
 * one place, with the configured lists (`redact:`; the defaults without a config): header
 * objects under `headers`, `req.headers` or `request.headers` lose their secret values;
 * `target`/`url`/`path`/`route` fields lose secret query values; `err`/`reason`-like fields
 * and the message are passed through the text redaction. Flat header arrays are redacted by
 * the caller (`Redactor.headers`) before they are logged.
 */
export function createLogger(
  config: Pick<Config, 'logLevel'> & Partial<Pick<Config, 'redaction'>>,
  role: string,
  destination?: pino.DestinationStream,
): Logger {
  const settings = config.redaction ?? redactionSettings(undefined);
  const redactor = new Redactor(settings);
  // pino's own redaction (fast-redact) for header objects: compiled once, cheap per line.
  const paths = settings.headers.flatMap((h) => [`headers["${h}"]`, `req.headers["${h}"]`, `request.headers["${h}"]`]);
  return pino(
    {
      level: config.logLevel,
      base: { role, pid: process.pid },
      redact: { paths, censor: '[redacted]' },
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: {
        log(object) {
          let out: Record<string, unknown> | null = null;
          for (const k of TARGET_KEYS) {
            const v = object[k];
            if (typeof v === 'string' && v.includes('?')) {
              const safe = redactor.target(v);
              if (safe !== v) (out ??= { ...object })[k] = safe;
            }
          }
          for (const k of TEXT_KEYS) {
            const v = object[k];
            if (typeof v === 'string') {
              const safe = redactor.text(v);
              if (safe !== v) (out ??= { ...object })[k] = safe;
            }
          }
          return out ?? object;
        },
      },
      hooks: {
        logMethod(args, method) {
          // The message (last string argument) may quote a request too.
          const last = args.length - 1;
          if (typeof args[last] === 'string') args[last] = redactor.text(args[last] as string);
          return method.apply(this, args);
        },
      },
    },
    destination ?? pino.destination({ dest: 1, sync: false }),
  );
}

export type { Logger };

import { InvalidValueError } from './errors.js';
/**
 * Stream retention: how long accepted traffic stays in the stream after it was replayed, so
 * that a window of it can be replayed again (`mirrorplane replay --from … --to …`).
 *
 * `STREAM_RETENTION` is a comma-separated list of limits, each optional:
 * - an age: `90s`, `15m`, `1h`, `7d` — finished entries older than this are trimmed;
 * - an entry count: `500000` — finished entries beyond the newest this many are trimmed.
 * With both (`1h,500000`), whichever keeps less applies. `off` (the default) keeps nothing:
 * a finished entry is deleted at once. Entries not yet finished are never trimmed.
 */
export interface StreamRetention {
  /** Finished entries older than this many milliseconds are trimmed; null: no age limit. */
  readonly maxAgeMs: number | null;
  /** Finished entries beyond the newest this many are trimmed; null: no count limit. */
  readonly maxEntries: number | null;
}

const UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** Parses a duration like `90s`, `15m`, `1h`, `7d` (also `1.5h`) to milliseconds, or null. */
export function parseDuration(text: string): number | null {
  const m = /^(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)$/i.exec(text.trim());
  if (!m) return null;
  const ms = Number(m[1]) * (UNITS[(m[2] as string).toLowerCase()] as number);
  return Number.isFinite(ms) && ms > 0 ? Math.round(ms) : null;
}

/** Parses STREAM_RETENTION; throws an Error whose message says what was wrong. */
export function parseStreamRetention(text: string): StreamRetention | null {
  const trimmed = text.trim().toLowerCase();
  if (trimmed === '' || trimmed === 'off' || trimmed === 'none' || trimmed === '0') return null;
  let maxAgeMs: number | null = null;
  let maxEntries: number | null = null;
  for (const part of trimmed.split(',').map((p) => p.trim())) {
    if (/^\d+$/.test(part)) {
      if (maxEntries !== null) throw new InvalidValueError(`two entry counts (${maxEntries} and ${part})`);
      const n = Number(part);
      if (!Number.isSafeInteger(n) || n < 1) throw new InvalidValueError(`expected a positive entry count, got ${JSON.stringify(part)}`);
      maxEntries = n;
      continue;
    }
    const ms = parseDuration(part);
    if (ms === null) {
      throw new InvalidValueError(`expected an age like 1h or 30m, an entry count like 500000, or both separated by a comma; got ${JSON.stringify(part)}`);
    }
    if (maxAgeMs !== null) throw new InvalidValueError(`two ages (${part} and another)`);
    maxAgeMs = ms;
  }
  return Object.freeze({ maxAgeMs, maxEntries });
}

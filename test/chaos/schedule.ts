/**
 * The chaos schedule: a pure function of a seed and a duration, so that a failing run can be
 * replayed exactly (`npm run chaos -- --seed N --minutes M` prints it first). Two timelines
 * run side by side: process and Redis faults, one at a time; and staging's behaviour, which
 * changes phase by phase. Times are milliseconds from the start of the load.
 */

/** A small, fast, seedable PRNG (mulberry32): the same seed gives the same sequence everywhere. */
export function createRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** A fault against a process or Redis. `ms` is how long it lasts (a pause, a restart's downtime). */
export type FaultKind = 'worker-kill' | 'worker-term' | 'ingress-kill' | 'redis-pause' | 'redis-restart' | 'redis-maxmemory';

export interface Fault {
  at: number;
  kind: FaultKind;
  /** How long the fault lasts: the process stays down, Redis stays paused or full, this long. */
  ms: number;
  /**
   * Which worker (index into the live workers, modulo their number) for worker faults. For
   * `redis-maxmemory`, an even target also replaces a worker while Redis is full (a worker
   * that starts against a full Redis).
   */
  target: number;
}

/**
 * What staging does in a phase:
 * - `fast`: answers 200 at once;
 * - `slow`: answers 200 after `slowMs` (longer than CLAIM_IDLE_MS, shorter than REPLAY_TIMEOUT_MS);
 * - `hang`: reads the request and never answers (the worker's REPLAY_TIMEOUT_MS cuts it);
 * - `5xx`: answers 500, 502 or 503; `429`: answers 429 (both retried);
 * - `refuse`: stops listening, so connections are refused;
 * - `cut`: sends a 200 head and part of the body, then closes the connection.
 */
export type StagingMode = 'fast' | 'slow' | 'hang' | '5xx' | '429' | 'refuse' | 'cut';

export interface StagingPhase {
  at: number;
  mode: StagingMode;
  ms: number;
}

export interface Schedule {
  seed: number;
  durationMs: number;
  faults: Fault[];
  staging: StagingPhase[];
}

const FAULTS: readonly [FaultKind, number][] = [
  ['worker-kill', 3],
  ['worker-term', 2],
  ['ingress-kill', 2],
  ['redis-pause', 2],
  ['redis-restart', 1.5],
  ['redis-maxmemory', 1.5],
];

const MODES: readonly [StagingMode, number][] = [
  ['fast', 4],
  ['slow', 1.5],
  ['hang', 1],
  ['5xx', 1.5],
  ['429', 1],
  ['refuse', 1],
  ['cut', 1],
];

function pick<T>(random: () => number, weighted: readonly [T, number][]): T {
  const total = weighted.reduce((n, [, w]) => n + w, 0);
  let x = random() * total;
  for (const [value, w] of weighted) {
    x -= w;
    if (x < 0) return value;
  }
  return (weighted[weighted.length - 1] as [T, number])[0];
}

const between = (random: () => number, lo: number, hi: number) => Math.round(lo + random() * (hi - lo));

/** How long each kind of fault lasts, in ms (drawn uniformly). */
const FAULT_MS: Record<FaultKind, [number, number]> = {
  'worker-kill': [300, 3000],
  'worker-term': [300, 3000],
  'ingress-kill': [300, 2000],
  'redis-pause': [1000, 6000],
  'redis-restart': [300, 3000],
  'redis-maxmemory': [2000, 6000],
};

/**
 * Plans a schedule. Every kind of fault appears at least once when the duration allows
 * (the first six faults are a shuffled round of all kinds); the rest are drawn by weight.
 * Gaps between faults are 1–5 s; staging phases last 2–10 s and the last one is cut at
 * `durationMs`. Staging is `fast` at the start.
 */
export function planSchedule(seed: number, durationMs: number): Schedule {
  const random = createRandom(seed);
  const faults: Fault[] = [];
  const round = FAULTS.map(([k]) => k);
  for (let i = round.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    [round[i], round[j]] = [round[j] as FaultKind, round[i] as FaultKind];
  }
  let t = between(random, 1000, 4000);
  for (let i = 0; ; i++) {
    const kind = i < round.length ? (round[i] as FaultKind) : pick(random, FAULTS);
    const [lo, hi] = FAULT_MS[kind];
    const ms = between(random, lo, hi);
    if (t + ms > durationMs) break;
    faults.push({ at: t, kind, ms, target: Math.floor(random() * 16) });
    t += ms + between(random, 1000, 5000);
  }
  const staging: StagingPhase[] = [];
  t = 0;
  for (let i = 0; t < durationMs; i++) {
    const mode = i === 0 ? 'fast' : pick(random, MODES);
    const ms = Math.min(between(random, 2000, 10_000), durationMs - t);
    staging.push({ at: t, mode, ms });
    t += ms;
  }
  return { seed, durationMs, faults, staging };
}

/** The schedule as lines a human reads (and a failing run prints). */
export function describeSchedule(schedule: Schedule): string {
  const s = (ms: number) => `${(ms / 1000).toFixed(1)}s`;
  const lines = [`chaos schedule: seed ${schedule.seed}, ${s(schedule.durationMs)} of faults`];
  for (const f of schedule.faults)
    lines.push(
      `  ${s(f.at).padStart(7)}  ${f.kind.padEnd(16)} for ${s(f.ms)}${f.kind.startsWith('worker') ? ` (worker #${f.target})` : ''}${f.kind === 'redis-maxmemory' && f.target % 2 === 0 ? ' (a worker replaced while full)' : ''}`,
    );
  lines.push('  staging: ' + schedule.staging.map((p) => `${s(p.at)} ${p.mode}`).join(', '));
  return lines.join('\n');
}

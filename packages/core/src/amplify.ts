import { InvalidValueError } from './errors.js';
import { MAX_AMPLIFY } from './rule-schema.js';
import { sampleScore } from './rule-sample.js';

/**
 * Amplification: a request sent N times to staging, for load tests. A whole factor sends that
 * many copies; a fraction sends the whole part or one more, decided by the entry id (the same
 * entry always gets the same number, and over many entries 2.5 averages 2.5 copies).
 */

/**
 * Copies of entry `entryId` at `factor`: `floor(factor)`, plus one when the entry's score is
 * below the fraction. 1 for any factor ≤ 1 (or not a number).
 */
export function copiesFor(factor: number, entryId: string): number {
  if (!(factor > 1)) return 1;
  const whole = Math.floor(factor);
  const fraction = factor - whole;
  return whole + (fraction > 0 && sampleScore(`copies\n${entryId}`) < fraction ? 1 : 0);
}

/** `3`, `3x`, `2.5x`, `250%`: a factor from 1 to MAX_AMPLIFY; throws InvalidValueError otherwise. */
export function parseAmplify(text: string): number {
  const t = text.trim().toLowerCase();
  const m = /^(\d+(?:\.\d+)?)(x|%)?$/.exec(t);
  const n = m ? Number(m[1]) / (m[2] === '%' ? 100 : 1) : NaN;
  if (!(n >= 1 && n <= MAX_AMPLIFY))
    throw new InvalidValueError(`expected a factor from 1 to ${MAX_AMPLIFY} like 3, 2.5x or 250%, got ${JSON.stringify(text)}`);
  return n;
}

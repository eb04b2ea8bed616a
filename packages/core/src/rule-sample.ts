import { fnv1a32 } from './hashing.js';

/**
 * Deterministic sampling: a key (a user id header, a session cookie) hashes to a score in
 * [0, 1), and a request is kept when its score is below the fraction. The same key always
 * gets the same score, so one user's session is kept or dropped as a whole, and the users
 * kept at 0.1 are a subset of those kept at 0.2 (raising a fraction only adds users).
 */

/** FNV-1a over the UTF-16 code units, then murmur3's finalizer so similar keys spread evenly. */
export function sampleScore(key: string): number {
  let h = fnv1a32(key);
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return (h >>> 0) / 0x1_0000_0000;
}

/** Whether a request with this key is kept at this fraction. */
export function sampleKeeps(key: string, fraction: number): boolean {
  if (fraction >= 1) return true;
  if (fraction <= 0) return false;
  return sampleScore(key) < fraction;
}

/** The value of a cookie in `cookie` header values (`a=1; b=2`), or null. */
export function cookieValue(cookieHeaders: readonly string[], name: string): string | null {
  for (const header of cookieHeaders) {
    for (const part of header.split(';')) {
      const eq = part.indexOf('=');
      if (eq !== -1 && part.slice(0, eq).trim() === name) return part.slice(eq + 1).trim();
    }
  }
  return null;
}

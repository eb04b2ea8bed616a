/**
 * Hashing that must stay the same across processes and versions (partitioning, sampling):
 * the partition of a session key or the sampling score of a user may not change on upgrade.
 */

/** FNV-1a over the UTF-16 code units of `text`, 32 bits, as an unsigned integer (0 to 2^32 - 1). */
export function fnv1a32(text: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}

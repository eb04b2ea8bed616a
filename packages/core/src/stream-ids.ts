/**
 * Redis stream ids, `<ms>-<seq>`: both parts are 64-bit unsigned integers, so they are compared
 * as BigInts (a millisecond time past 2^53 or a long sequence would not survive a Number), and
 * never as strings (`'9-0' > '10-0'`).
 */

function parts(id: string): [bigint, bigint] {
  const dash = id.indexOf('-');
  return dash === -1 ? [BigInt(id), 0n] : [BigInt(id.slice(0, dash)), BigInt(id.slice(dash + 1))];
}

/** Orders two stream ids: negative when `a` is older, 0 when equal, positive when newer. Throws a SyntaxError on a non-id. */
export function compareStreamIds(a: string, b: string): number {
  const [am, as] = parts(a);
  const [bm, bs] = parts(b);
  if (am !== bm) return am < bm ? -1 : 1;
  return as < bs ? -1 : as > bs ? 1 : 0;
}

/** The smallest id after `id` (`5-3` → `5-4`): `XTRIM MINID nextStreamId(id)` removes `id` and keeps what follows. */
export function nextStreamId(id: string): string {
  const [ms, seq] = parts(id);
  return `${ms}-${seq + 1n}`;
}

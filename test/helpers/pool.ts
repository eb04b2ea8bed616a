/**
 * Maps `items` through `fn`, at most `width` at a time; resolves with the results in the order
 * of `items`. For independent CLI runs whose test asserts no timing: their waits (a timeout to
 * an unreachable Redis, a process start) overlap instead of adding up.
 */
export async function mapConcurrent<T, R>(items: readonly T[], width: number, fn: (item: T, index: number) => Promise<R>): Promise<R[]> {
  const results = new Array<R>(items.length);
  let next = 0;
  const lane = async () => {
    while (next < items.length) {
      const i = next++;
      results[i] = await fn(items[i]!, i);
    }
  };
  await Promise.all(Array.from({ length: Math.min(width, items.length) }, lane));
  return results;
}

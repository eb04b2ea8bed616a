/**
 * Waits until `check` returns a truthy value; fails with `what` after `timeoutMs`. Never a fixed sleep.
 * `what` may be a function, read when the wait fails (e.g. a process's output by then).
 */
export async function waitFor<T>(what: string | (() => string), check: () => T | Promise<T>, timeoutMs = 30_000, intervalMs = 25): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const value = await check();
      if (value) return value as NonNullable<T>;
    } catch (error) {
      last = error;
    }
    if (Date.now() > deadline) {
      throw new Error(
        `timed out after ${timeoutMs} ms waiting for ${typeof what === 'function' ? what() : what}${last ? ` (last error: ${String(last)})` : ''}`,
      );
    }
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

/**
 * Settles as `promise` does, or with what `late()` returns (or rejects with what it throws) once
 * `timeoutMs` pass first. The timer is cleared as soon as the race is decided: a pending timer
 * keeps the test file's process alive until it fires, so a forgotten 30 s deadline costs 30 s
 * after the file's last test.
 */
export function withDeadline<T, U>(promise: Promise<T>, timeoutMs: number, late: () => U): Promise<T | U> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<U>((resolve, reject) => {
    timer = setTimeout(() => {
      try {
        resolve(late());
      } catch (error) {
        reject(error as Error);
      }
    }, timeoutMs);
  });
  return Promise.race([promise, deadline]).finally(() => clearTimeout(timer));
}

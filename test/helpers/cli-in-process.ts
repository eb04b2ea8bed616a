import assert from 'node:assert/strict';
import { main } from '../../apps/cli/src/main.js';
import type { Io } from '../../apps/cli/src/io.js';
import type { Stack } from './stack.js';
import { waitFor } from './wait.js';

/** The terminal an in-process CLI run sees: which streams are terminals, and the answer to a confirmation. */
export interface TestTerminal {
  stdinIsTTY?: boolean;
  stdoutIsTTY?: boolean;
  stderrIsTTY?: boolean;
  /** What the operator types at a confirmation ("y", "n"); unset declines. */
  answer?: string;
}

/** What an in-process CLI run printed, its exit code, and the confirmation questions it asked. */
export interface InProcessRun {
  code: number | undefined;
  out: string;
  err: string;
  asked: string[];
}

/** Runs the CLI's `main` in this process against `stack`'s Redis and prefix, with a terminal the test controls. */
export async function runCliInProcess(stack: Stack, args: string[], terminal: TestTerminal = {}): Promise<InProcessRun> {
  let out = '';
  let err = '';
  let code: number | undefined;
  const asked: string[] = [];
  const io: Io = {
    out: (s) => {
      out += s;
    },
    err: (s) => {
      err += s;
    },
    setExit: (c) => {
      code = c;
    },
    stdoutIsTTY: terminal.stdoutIsTTY ?? false,
    stderrIsTTY: terminal.stderrIsTTY ?? false,
    stdinIsTTY: terminal.stdinIsTTY ?? false,
    confirm: async (q) => {
      asked.push(q);
      return /^y/i.test(terminal.answer ?? '');
    },
  };
  const result = await main([...args, '--redis-url', stack.env.REDIS_URL!, '--prefix', stack.env.MIRRORPLANE_PREFIX!], io);
  return { code: result ?? code, out, err, asked };
}

/**
 * Mirrors `count` POSTs (`${pathPrefix}${i}`, body `i`) through the stack's ingress and waits
 * until all of them are in the failed set (staging must refuse them, REPLAY_ATTEMPTS small).
 */
export async function fillFailedSet(stack: Stack, count: number, pathPrefix: string): Promise<void> {
  for (let i = 0; i < count; i++) {
    const res = await fetch(`http://127.0.0.1:${stack.ingressPort}${pathPrefix}${i}`, { method: 'POST', body: String(i) });
    assert.equal(res.status, 200);
  }
  await waitFor(`${count} failed`, async () => (await stack.status()).failed === count, 120_000, 200);
}

/** The terminal a command talks to, passed in so tests can drive commands in-process. */
export interface Io {
  out: (s: string) => void;
  err: (s: string) => void;
  setExit: (code: number) => void;
  /** Whether stdout / stderr / stdin are terminals: progress and colour only on one, confirmation only on one. */
  stdoutIsTTY: boolean;
  stderrIsTTY: boolean;
  stdinIsTTY: boolean;
  /** Asks a yes/no question on the terminal; resolves true for y/yes. */
  confirm: (question: string) => Promise<boolean>;
}

let pipeGuardInstalled = false;

/**
 * Ends the process quietly, exit 0, when the reader of stdout or stderr goes away (`| head`,
 * `| grep -m1`, quitting `less`): the write fails with EPIPE, which Node reports as an
 * `'error'` event that would otherwise crash with a stack trace. Ending the process also
 * stops a live view (`status --watch`) at its next frame instead of drawing into nothing.
 * Installed once per process by the CLI's terminal (`processIo`); other stream errors are
 * rethrown unchanged.
 */
export function endQuietlyWhenReaderLeaves(streams: NodeJS.WriteStream[] = [process.stdout, process.stderr]): void {
  if (pipeGuardInstalled) return;
  pipeGuardInstalled = true;
  for (const stream of streams) {
    stream.on('error', (error: NodeJS.ErrnoException) => {
      if (error.code === 'EPIPE' || error.code === 'ERR_STREAM_DESTROYED') process.exit(0);
      throw error;
    });
  }
}

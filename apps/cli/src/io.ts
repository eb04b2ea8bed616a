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

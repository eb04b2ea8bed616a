import { createInterface } from 'node:readline/promises';
import { Command, CommanderError } from 'commander';
import { describeFailure } from './failure.js';
import { EXIT_USAGE } from './process.js';
import { VERSION } from './version.js';
import { releaseStartSignals } from './early-signals.js';
import { endQuietlyWhenReaderLeaves, type Io } from './io.js';
import { registerIngress } from './commands/ingress.js';
import { registerWorker } from './commands/worker.js';
import { registerStart } from './commands/start.js';
import { registerSampleBackend } from './commands/sample-backend.js';
import { registerDemo } from './commands/demo.js';
import { registerStatus } from './commands/status.js';
import { registerDiff } from './commands/diff.js';
import { registerDashboard } from './commands/dashboard.js';
import { registerReplay } from './commands/replay.js';
import { registerFailed } from './commands/failed.js';
import { registerRecord } from './commands/record.js';
import { registerRateLimit } from './commands/rate-limit.js';

export { formatStatus } from './commands/status.js';

/** The commands that run until a signal, through `runUntilSignal`. */
const LONG_RUNNING: ReadonlySet<string> = new Set(['ingress', 'worker', 'start', 'dashboard']);

/** The whole command line: each command registers itself from its own file. */
export function buildProgram(io: Io): Command {
  const program = new Command('mirrorplane')
    .description('Mirror production HTTP traffic into staging through a Redis stream.')
    .version(VERSION, '-V, --version', 'print the version')
    .showHelpAfterError('(run with --help for usage)')
    .showSuggestionAfterError(true)
    .exitOverride()
    // A fixed width: help reads the same in any terminal, and the docs are generated from it.
    .configureOutput({ writeOut: io.out, writeErr: io.err, getOutHelpWidth: () => 80, getErrHelpWidth: () => 80 });
  registerIngress(program);
  registerWorker(program);
  registerStart(program, io);
  registerSampleBackend(program, io);
  registerDemo(program, io);
  registerStatus(program, io);
  registerDiff(program, io);
  registerDashboard(program);
  registerReplay(program, io);
  registerFailed(program, io);
  registerRecord(program, io);
  registerRateLimit(program, io);
  // Long-running commands keep the pre-start signal handler until runUntilSignal takes over
  // (a slow Redis check must not end in exit 143); every other command owns the signals from
  // its start (early-signals.ts).
  program.hook('preAction', (_program, action) => {
    if (!LONG_RUNNING.has(action.name())) releaseStartSignals();
  });
  // Every subcommand exits through main(), never process.exit from inside commander.
  const inherit = (command: Command) => {
    for (const sub of command.commands) {
      sub
        .exitOverride()
        .showSuggestionAfterError(true)
        .configureOutput({ writeOut: io.out, writeErr: io.err, getOutHelpWidth: () => 80, getErrHelpWidth: () => 80 });
      inherit(sub);
    }
  };
  inherit(program);
  return program;
}

/** The process's terminal. */
export function processIo(setExit: (code: number) => void): Io {
  endQuietlyWhenReaderLeaves();
  return {
    out: (s) => void process.stdout.write(s),
    err: (s) => void process.stderr.write(s),
    setExit,
    stdoutIsTTY: process.stdout.isTTY === true,
    stderrIsTTY: process.stderr.isTTY === true,
    stdinIsTTY: process.stdin.isTTY === true,
    confirm: async (question) => {
      const rl = createInterface({ input: process.stdin, output: process.stderr });
      try {
        return /^y(es)?$/i.test((await rl.question(question)).trim());
      } finally {
        rl.close();
      }
    },
  };
}

/** Runs the command line; resolves with the exit code for commands that end (long-running roles never resolve to exit). */
export async function main(argv: string[], io?: Io): Promise<number | undefined> {
  let exitCode: number | undefined;
  const terminal =
    io ??
    processIo((code) => {
      exitCode = code;
    });
  const program = buildProgram(terminal);
  try {
    await program.parseAsync(argv, { from: 'user' });
    return exitCode;
  } catch (error) {
    if (error instanceof CommanderError) return error.exitCode === 0 ? 0 : EXIT_USAGE;
    const failure = describeFailure(error);
    if (!failure.known) throw error;
    terminal.err(`mirrorplane: ${failure.message}\n`);
    return failure.exitCode;
  }
}

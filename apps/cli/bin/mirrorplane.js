#!/usr/bin/env node
// Until a command owns the signals, a stop signal has nothing to finish: exit 0 rather than die
// by the signal (exit 143) while the modules load. The one pre-start layer (see early-signals).
const { exitOnSignalUntilStarted } = await import('../lib/early-signals.js');
exitOnSignalUntilStarted();

const { installHookImports } = await import('../lib/hook-imports.js');

// Hooks modules outside this package can import @mirrorplane/core.
installHookImports();
const { main } = await import('../lib/main.js');

main(process.argv.slice(2)).then(
  (code) => {
    // Commands that end resolve with a code; long-running roles resolve undefined and keep running.
    if (typeof code === 'number') process.stdout.write('', () => process.exit(code));
  },
  (error) => {
    process.stderr.write(`mirrorplane: ${error?.stack ?? error}\n`);
    process.exit(1);
  },
);

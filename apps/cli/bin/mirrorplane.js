#!/usr/bin/env node
// Until a command runs, a stop signal has nothing to finish: exit 0 rather than die by the
// signal (exit 143) while the modules load. Each command installs its own handling.
const stopEarly = () => process.exit(0);
process.on('SIGTERM', stopEarly);
process.on('SIGINT', stopEarly);

const { installHookImports } = await import('../lib/hook-imports.js');

// Hooks modules outside this package can import @mirrorplane/core.
installHookImports();
const { main } = await import('../lib/main.js');
process.off('SIGTERM', stopEarly);
process.off('SIGINT', stopEarly);

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

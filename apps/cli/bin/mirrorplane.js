#!/usr/bin/env node
import { installHookImports } from '../lib/hook-imports.js';

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

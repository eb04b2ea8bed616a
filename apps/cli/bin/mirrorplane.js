#!/usr/bin/env node
import { main } from '../lib/main.js';

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

import type { Command } from 'commander';
import { runDemo } from '../demo.js';
import { UsageError } from '../process.js';
import type { Io } from '../io.js';

export function registerDemo(program: Command, io: Io): void {
  program
    .command('demo')
    .description('the whole topology on this machine (nginx mirroring, Redis, ingress, 2 workers, staging), a little traffic and a live summary')
    .option('--requests <n>', 'requests to send through nginx', '16')
    .option('--keep', 'keep running after the traffic, for your own curl, until Ctrl-C')
    .option('--port <n>', 'nginx port (default 8000 when free)')
    .action(async (options: { requests: string; keep?: boolean; port?: string }) => {
      const requests = Number(options.requests);
      if (!Number.isInteger(requests) || requests < 0) throw new UsageError(`--requests: expected a whole number, got ${JSON.stringify(options.requests)}`);
      const port = options.port === undefined ? 0 : Number(options.port);
      if (!Number.isInteger(port) || port < 0 || port > 65535)
        throw new UsageError(`--port: expected an integer from 0 to 65535, got ${JSON.stringify(options.port)}`);
      await runDemo({ requests, keep: options.keep === true, port, out: io.out, err: io.err, env: process.env });
      io.setExit(0);
    });
}

import type { Command } from 'commander';
import { SampleBackend } from '@mirrorplane/sample-backend';
import { UsageError } from '../process.js';
import { listening } from '../listen-errors.js';
import type { Io } from '../io.js';

export function registerSampleBackend(program: Command, io: Io): void {
  program
    .command('sample-backend')
    .description('run the sample JSON API (production or staging in the demo and docker-compose)')
    .option('--name <name>', 'name shown in answers', 'sample')
    .option('--port <n>', 'port', '8000')
    .option('--host <addr>', 'address', '0.0.0.0')
    .option('--id-prefix <prefix>', 'prefix of created ids', 'ord_')
    .option('--first-id <n>', 'first id number', '1')
    .option('--path-prefix <prefix>', 'serve only paths under this prefix (404 elsewhere)')
    .action(async (options: { name: string; port: string; host: string; idPrefix: string; firstId: string; pathPrefix?: string }) => {
      const port = Number(options.port);
      if (!Number.isInteger(port) || port < 0 || port > 65535)
        throw new UsageError(`--port: expected an integer from 0 to 65535, got ${JSON.stringify(options.port)}`);
      const backend = new SampleBackend({
        name: options.name,
        idPrefix: options.idPrefix,
        firstId: Number(options.firstId) || 1,
        ...(options.pathPrefix ? { pathPrefix: options.pathPrefix } : {}),
      });
      const bound = await listening({ ingressPort: port, ingressHost: options.host, adminPort: -1, adminHost: '' }, () =>
        backend.listen(port, options.host),
      ).catch((error: unknown) => {
        if (error instanceof UsageError) throw new UsageError(error.message.replace('INGRESS_PORT / --port', '--port'));
        throw error;
      });
      io.out(`sample backend ${options.name} listening on ${options.host}:${bound}\n`);
      const stop = () => void backend.close().then(() => process.exit(0));
      process.on('SIGTERM', stop);
      process.on('SIGINT', stop);
    });
}

import { createRequire } from 'node:module';

/** The CLI's version, read from its package.json (which ships in the packed tarball). */
export const VERSION: string = (createRequire(import.meta.url)('../package.json') as { version: string }).version;

import Module, { register } from 'node:module';
import { existsSync } from 'node:fs';
import { delimiter, dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/**
 * Lets a hooks module anywhere on disk (`/etc/mirrorplane/hooks.ts`, outside any package)
 * import `@mirrorplane/core` and get the copy this CLI runs with. Called once by the
 * `mirrorplane` executable, before anything is loaded.
 * - ES modules: a resolve hook (`hooks-resolver.js`) retries a failed `@mirrorplane/*`
 *   lookup from this package.
 * - CommonJS (tsx compiles a `.ts` file outside a `"type": "module"` package to CommonJS):
 *   the `node_modules` directory holding `@mirrorplane/core` is added to NODE_PATH, Node's
 *   documented global lookup, which also reaches processes this one forks.
 */
export function installHookImports(): void {
  register('./hooks-resolver.js', import.meta.url);
  for (let dir = dirname(fileURLToPath(import.meta.url)); ; dir = dirname(dir)) {
    const modules = join(dir, 'node_modules');
    if (existsSync(join(modules, '@mirrorplane', 'core'))) {
      const current = process.env.NODE_PATH;
      if (!current?.split(delimiter).includes(modules)) {
        process.env.NODE_PATH = current ? `${modules}${delimiter}${current}` : modules;
        // Node reads NODE_PATH once at start; this re-reads it (the documented variable, an old internal hook).
        (Module as unknown as { _initPaths(): void })._initPaths();
      }
      return;
    }
    if (dir === dirname(dir)) return;
  }
}

/**
 * A module resolve hook (node:module `register`) installed by the `mirrorplane` executable:
 * a hooks module anywhere on disk (`/etc/mirrorplane/hooks.mjs`) may import
 * `@mirrorplane/core` (or any `@mirrorplane/*` package) and gets the copy this CLI runs
 * with, found from here when Node's own lookup from the hooks file's directory fails.
 * Only `@mirrorplane/` specifiers are ever redirected; nothing else changes.
 */

interface ResolveContext {
  parentURL?: string | undefined;
  conditions: string[];
  importAttributes?: Record<string, string>;
}
type NextResolve = (specifier: string, context?: Partial<ResolveContext>) => Promise<{ url: string; format?: string | null; shortCircuit?: boolean }>;

export async function resolve(
  specifier: string,
  context: ResolveContext,
  nextResolve: NextResolve,
): Promise<{ url: string; format?: string | null; shortCircuit?: boolean }> {
  try {
    return await nextResolve(specifier, context);
  } catch (error) {
    if (!specifier.startsWith('@mirrorplane/') || (error as { code?: string }).code !== 'ERR_MODULE_NOT_FOUND') throw error;
    return nextResolve(specifier, { ...context, parentURL: import.meta.url });
  }
}

import { PortInUseError, type Config } from '@mirrorplane/core';

export { PortInUseError };

/**
 * Runs a role's `listen`/`start`, turning "address in use" and "permission denied" into a
 * message that names the port's flag and environment variable.
 */
export async function listening<T>(config: Pick<Config, 'ingressPort' | 'adminPort' | 'adminHost' | 'ingressHost'>, start: () => Promise<T>): Promise<T> {
  try {
    return await start();
  } catch (error) {
    const e = error as NodeJS.ErrnoException & { port?: number; address?: string };
    if (e.code !== 'EADDRINUSE' && e.code !== 'EACCES') throw error;
    const which = e.port === config.adminPort ? `ADMIN_PORT / --admin-port` : e.port === config.ingressPort ? 'INGRESS_PORT / --port' : 'a port';
    const why = e.code === 'EADDRINUSE' ? 'address already in use' : 'permission denied';
    throw new PortInUseError(`cannot listen on ${e.address ?? ''}:${e.port ?? '?'} (${which}): ${why}`);
  }
}

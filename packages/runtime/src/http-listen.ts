import type { Server as HttpServer } from 'node:http';
import type { AddressInfo, Server } from 'node:net';

/**
 * Starts `server` (any node:net server: http, https, a raw TCP one) listening on `host:port`
 * (port 0: any free port); resolves with the bound port. Rejects with the listen error (EADDRINUSE, EACCES…) as node reports it; the caller names
 * the setting (see the CLI's `listening`).
 */
export function listenHttp(server: Server, port: number, host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve((server.address() as AddressInfo).port);
    });
  });
}

/** Stops accepting and closes every connection, idle or not; resolves once the server closed. */
export function closeHttp(server: HttpServer): Promise<void> {
  return new Promise((resolve) => {
    server.close(() => resolve());
    server.closeAllConnections();
  });
}

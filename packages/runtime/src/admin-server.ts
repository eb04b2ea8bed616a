import { createHash, timingSafeEqual } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Registry } from 'prom-client';
import type { Logger } from 'pino';
import type { Config } from '@mirrorplane/core';
import { closeHttp, listenHttp } from './http-listen.js';
import { ServerTls } from './server-tls.js';

export interface AdminServerOptions {
  host: string;
  port: number;
  /** True when the process can do its job (Redis connected, listening, not shutting down). */
  ready: () => boolean;
  metrics: Registry;
  logger: Logger;
  /** When set, every path but /healthz and /readyz requires `authorization: Bearer <token>`. */
  token?: string | null;
  /** TLS (and client certificates) of the port, or null for clear text. */
  tls?: ServerTls | null;
  /** More routes by `METHOD /path` (e.g. `POST /production-responses`); each handles its request in full. */
  routes?: Readonly<Record<string, (req: IncomingMessage, res: ServerResponse) => void>>;
}

/**
 * A check of a presented secret against the configured one in constant time: both are hashed
 * first, so neither their contents nor their lengths show in the time the comparison takes.
 */
export function secretMatcher(secret: string): (presented: string | undefined) => boolean {
  const expected = createHash('sha256').update(secret, 'latin1').digest();
  return (presented) => {
    if (presented === undefined) return false;
    return timingSafeEqual(createHash('sha256').update(presented, 'latin1').digest(), expected);
  };
}

/**
 * The admin server a process's configuration asks for (ADMIN_HOST, ADMIN_PORT, ADMIN_TOKEN),
 * or null when ADMIN_PORT is 0. Not listening yet: call `listen()`.
 */
export function adminServerFor(
  config: Pick<Config, 'adminHost' | 'adminPort' | 'adminToken' | 'adminTls'>,
  options: Omit<AdminServerOptions, 'host' | 'port' | 'token' | 'tls'>,
): AdminServer | null {
  if (config.adminPort === 0) return null;
  // Read now: a missing or unusable file fails the start with the setting's name (TlsFileError).
  const tls = config.adminTls === null ? null : new ServerTls(config.adminTls, options.logger);
  return new AdminServer({ ...options, host: config.adminHost, port: config.adminPort, token: config.adminToken, tls });
}

/**
 * Health, readiness and metrics on their own port, so that no mirrored path can collide
 * with them: `/healthz` (the process is alive), `/readyz` (it can do its job), `/metrics`.
 */
export class AdminServer {
  readonly #server: Server;
  readonly #options: AdminServerOptions;

  constructor(options: AdminServerOptions) {
    this.#options = options;
    const authorized = options.token ? secretMatcher(`Bearer ${options.token}`) : null;
    this.#server = createServer((req, res) => {
      const path = (req.url ?? '/').split('?')[0];
      // Health and readiness say only "ok" or "not ready", and probes rarely carry credentials.
      if (authorized && path !== '/healthz' && path !== '/readyz' && !authorized(req.headers.authorization)) {
        res
          .writeHead(401, { 'content-type': 'text/plain', 'www-authenticate': 'Bearer realm="mirrorplane-admin"' })
          .end('unauthorized: send authorization: Bearer <ADMIN_TOKEN>\n');
        return;
      }
      const route = options.routes?.[`${req.method} ${path}`];
      if (route) {
        route(req, res);
        return;
      }
      if (req.method !== 'GET' && req.method !== 'HEAD') {
        res.writeHead(405, { allow: 'GET, HEAD' }).end();
        return;
      }
      if (path === '/healthz') {
        res.writeHead(200, { 'content-type': 'text/plain' }).end('ok\n');
      } else if (path === '/readyz') {
        const ready = options.ready();
        res.writeHead(ready ? 200 : 503, { 'content-type': 'text/plain' }).end(ready ? 'ready\n' : 'not ready\n');
      } else if (path === '/metrics') {
        options.metrics.metrics().then(
          (text) => res.writeHead(200, { 'content-type': options.metrics.contentType }).end(text),
          (error: Error) => res.writeHead(500, { 'content-type': 'text/plain' }).end(`${error.message}\n`),
        );
      } else {
        res.writeHead(404, { 'content-type': 'text/plain' }).end('not found: try /healthz, /readyz, /metrics\n');
      }
    });
  }

  /** Starts listening; resolves with the bound port. */
  listen(): Promise<number> {
    return listenHttp(this.#server, this.#options.port, this.#options.host, this.#options.tls);
  }

  close(): Promise<void> {
    return closeHttp(this.#server);
  }
}

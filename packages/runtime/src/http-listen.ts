import type { Server } from 'node:http';
import type { AddressInfo, Server as NetServer, Socket } from 'node:net';
import { createServer as createTlsServer, type Server as TlsServer, type TlsOptions } from 'node:tls';
import type { ServerTls } from './server-tls.js';

/**
 * The TLS listener in front of a server started with `tls` (see `listenHttp`): it does the
 * handshakes and hands each secured socket to the server as a plain connection.
 */
const tlsListeners = new WeakMap<NetServer, { listener: TlsServer; tls: ServerTls; handshaking: Set<Socket> }>();

/** Time a client has to complete its TLS handshake (ms). */
export const TLS_HANDSHAKE_TIMEOUT_MS = 10_000;

/**
 * Starts `server` (a `node:http` server, or a `node:net` server with its own HTTP parser)
 * listening on `host:port` (port 0: any free port); resolves with the bound port. With `tls`
 * a `tls.Server` listens instead and feeds every socket that completed its handshake (and
 * passed the allow-list) to `server`'s connection handler, so the server reads the same
 * bytes as in clear text; its `maxConnections` carries over. Rejects with the listen error
 * (EADDRINUSE, EACCES…) as node reports it; the caller names the setting (see the CLI's
 * `listening`). `alpn`: the protocols the TLS listener offers in ALPN, preferred first
 * (default: none offered); the server reads the one chosen in `socket.alpnProtocol`.
 */
export function listenHttp(server: NetServer, port: number, host: string, tls?: ServerTls | null, alpn?: readonly string[]): Promise<number> {
  let listener: NetServer = server;
  if (tls) {
    // A client that connects and never finishes its handshake holds the socket 10 s at most
    // (node's default is 120 s), counted as a refused handshake.
    const options: TlsOptions = { ...tls.serverOptions, allowHalfOpen: true, noDelay: true, handshakeTimeout: TLS_HANDSHAKE_TIMEOUT_MS };
    if (alpn !== undefined && alpn.length > 0) options.ALPNProtocols = [...alpn];
    const secure = createTlsServer(options);
    // Each socket's first listener (the allow-list check, see ServerTls.attach) runs first and may destroy it.
    tls.attach(secure);
    // The sockets still in their handshake: they carry no request yet, and stopListening closes them.
    const handshaking = new Set<Socket>();
    secure.on('connection', (raw: Socket) => {
      handshaking.add(raw);
      raw.once('close', () => handshaking.delete(raw));
    });
    secure.on('secureConnection', (socket: Socket) => {
      handshaking.delete((socket as Socket & { _parent?: Socket })._parent ?? socket);
      if (!socket.destroyed) server.emit('connection', socket);
    });
    if (server.maxConnections !== undefined && Number.isFinite(server.maxConnections)) secure.maxConnections = server.maxConnections;
    tlsListeners.set(server, { listener: secure, tls, handshaking });
    listener = secure;
  }
  return new Promise((resolve, reject) => {
    listener.once('error', reject);
    listener.listen(port, host, () => {
      listener.off('error', reject);
      // A node:http server tracks its connections (and their timeouts) from 'listening' on.
      if (listener !== server) server.emit('listening');
      resolve((listener.address() as AddressInfo).port);
    });
  });
}

/** Whether `server` (or the TLS listener in front of it) is listening. */
export function isListening(server: NetServer): boolean {
  return (tlsListeners.get(server)?.listener ?? server).listening;
}

/**
 * Stops accepting connections on `server` (or its TLS listener, whose reload timer stops too,
 * and whose connections still in their handshake are closed: they carry no request yet);
 * resolves once every connection it accepted is closed.
 */
export function stopListening(server: NetServer): Promise<void> {
  const tls = tlsListeners.get(server);
  tls?.tls.stop();
  if (tls) {
    for (const socket of tls.handshaking) socket.destroy();
    tls.handshaking.clear();
  }
  const listener = tls?.listener ?? server;
  return new Promise((resolve) => {
    if (!listener.listening) {
      resolve();
      return;
    }
    listener.close(() => resolve());
  });
}

/** Stops accepting and closes every connection, idle or not; resolves once the server closed. */
export function closeHttp(server: Server): Promise<void> {
  const closed = stopListening(server);
  // Behind TLS the server itself never listened: close() only stops its connection checks.
  if (tlsListeners.has(server)) server.close(() => undefined);
  server.closeAllConnections();
  return closed;
}

import { X509Certificate } from 'node:crypto';
import { readFileSync, statSync } from 'node:fs';
import { DEFAULT_CIPHERS, createSecureContext, type SecureContextOptions, type Server as TlsServer, type TLSSocket, type TlsOptions } from 'node:tls';
import { TlsFileError, errorMessage, type ServerTlsSettings } from '@mirrorplane/core';
import type { Logger } from './logger.js';

/** Why a TLS listener closed a connection before any HTTP byte was read. */
export type TlsRefusal = 'handshake' | 'not_allowed';

/**
 * The floor of every TLS connection Mirrorplane accepts or makes (traffic, admin and dashboard
 * ports; Redis; staging origins): TLS 1.2 or newer, and OpenSSL security level 2, under which
 * a certificate in the chain with an RSA or DH key under 2048 bits (ECC under 224) fails
 * verification, and so does a weaker key exchange. Node's default level (1) lets RSA-1024 by.
 */
export const TLS_FLOOR = Object.freeze({ minVersion: 'TLSv1.2' as const, ciphers: `${DEFAULT_CIPHERS}:@SECLEVEL=2` });

/**
 * Reads one file a setting names. The message names the setting and the path and the
 * system's reason (ENOENT, EACCES), never the contents.
 *
 * @throws TlsFileError naming `setting`.
 */
export function readTlsFile(setting: string, path: string): Buffer {
  try {
    return readFileSync(path);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code ?? 'unreadable';
    throw new TlsFileError(setting, `cannot read ${JSON.stringify(path)} (${code})`, { cause: error });
  }
}

/**
 * Reads a CA bundle a setting names and checks that it holds at least one PEM certificate:
 * OpenSSL skips blocks it cannot use, so a bundle of something else would trust nothing and
 * fail every handshake later, far from the cause.
 *
 * @throws TlsFileError naming `setting`.
 */
export function readCaBundle(setting: string, path: string): Buffer {
  const ca = readTlsFile(setting, path);
  try {
    // Parses the first certificate of the bundle; throws when there is none.
    new X509Certificate(ca);
  } catch (error) {
    throw new TlsFileError(setting, `${JSON.stringify(path)} holds no PEM certificate (${openSslReason(error)})`, { cause: error });
  }
  return ca;
}

/**
 * The certificate, key and CA of `settings` read and checked together (`createSecureContext`
 * parses them and refuses a key that does not match its certificate).
 *
 * @throws TlsFileError naming the setting whose file is missing or unusable.
 */
export function loadServerTls(settings: ServerTlsSettings): SecureContextOptions {
  const cert = readTlsFile(settings.names.cert, settings.cert);
  const key = readTlsFile(settings.names.key, settings.key);
  const ca = settings.ca === null ? undefined : readCaBundle(settings.names.ca, settings.ca);
  const files = { cert, key, ca };
  try {
    createSecureContext({ cert });
  } catch (error) {
    throw new TlsFileError(settings.names.cert, `${JSON.stringify(settings.cert)} is not a PEM certificate (${openSslReason(error)})`, { cause: error });
  }
  try {
    createSecureContext(files);
  } catch (error) {
    throw new TlsFileError(
      settings.names.key,
      `${JSON.stringify(settings.key)} is not the PEM private key of ${settings.names.cert} ${JSON.stringify(settings.cert)} (${openSslReason(error)})`,
      { cause: error },
    );
  }
  return files;
}

/**
 * Reads a client certificate and its key (two settings) and checks that they are PEM and
 * belong together, so that a wrong file fails the start rather than every handshake.
 *
 * @throws TlsFileError naming the certificate's or the key's setting.
 */
export function readClientPair(names: { cert: string; key: string }, paths: { cert: string; key: string }): { cert: Buffer; key: Buffer } {
  const cert = readTlsFile(names.cert, paths.cert);
  const key = readTlsFile(names.key, paths.key);
  try {
    createSecureContext({ cert });
  } catch (error) {
    throw new TlsFileError(names.cert, `${JSON.stringify(paths.cert)} is not a PEM certificate (${openSslReason(error)})`, { cause: error });
  }
  try {
    createSecureContext({ cert, key });
  } catch (error) {
    throw new TlsFileError(
      names.key,
      `${JSON.stringify(paths.key)} is not the PEM private key of ${names.cert} ${JSON.stringify(paths.cert)} (${openSslReason(error)})`,
      {
        cause: error,
      },
    );
  }
  return { cert, key };
}

/** OpenSSL's reason without the numeric prefix ("no start line", "key values mismatch"): it never quotes the file. */
function openSslReason(error: unknown): string {
  return errorMessage(error).replace(/^error:[0-9A-F]+:/i, '');
}

/**
 * Whether a verified client certificate is on an allow-list: its subject CN, or one of its
 * URI SANs (a SPIFFE ID), equals an entry. An empty list allows any certificate.
 */
export function peerAllowed(allow: readonly string[], peer: { subject?: { CN?: string | string[] } | null; subjectaltname?: string } | null): boolean {
  if (allow.length === 0) return true;
  if (peer === null) return false;
  const cn = peer.subject?.CN;
  const names: string[] = Array.isArray(cn) ? [...cn] : cn === undefined ? [] : [cn];
  for (const san of (peer.subjectaltname ?? '').split(/,\s*/)) if (san.startsWith('URI:')) names.push(san.slice(4));
  return names.some((name) => allow.includes(name));
}

/**
 * One TLS listener's credentials: read at start (a bad file fails the start, naming the
 * setting), checked every `reloadMs` for a change and swapped into the running server with
 * `setSecureContext` (connections already open keep theirs). A new set that does not load is
 * logged as MP_ERR_TLS_FILE, once per change, and the old one is kept. With a CA the server
 * requires a client certificate chaining to it; with an allow-list, a verified certificate
 * whose CN or SPIFFE ID is not listed is closed right after the handshake.
 */
export class ServerTls {
  readonly #settings: ServerTlsSettings;
  readonly #logger: Logger;
  #files: SecureContextOptions;
  #stamp: string;
  #timer: NodeJS.Timeout | null = null;
  #lastRefusalLog = 0;
  /** Called for each connection closed before HTTP: a failed handshake or a peer not on the allow-list. */
  onRefused: ((reason: TlsRefusal) => void) | null = null;

  /** @throws TlsFileError when a file is missing or unusable. */
  constructor(settings: ServerTlsSettings, logger: Logger) {
    this.#settings = settings;
    this.#logger = logger;
    this.#stamp = this.#readStamp();
    this.#files = loadServerTls(settings);
  }

  /** Options for `tls.createServer`. */
  get serverOptions(): TlsOptions {
    const mutual = this.#settings.ca !== null;
    return { ...TLS_FLOOR, ...this.#files, requestCert: mutual, rejectUnauthorized: mutual };
  }

  /** What the listener logs at start: paths and who may connect, never contents. */
  get summary(): Record<string, unknown> {
    return { cert: this.#settings.cert, clientCa: this.#settings.ca, allow: this.#settings.allow.length > 0 ? this.#settings.allow : undefined };
  }

  #readStamp(): string {
    const paths = [this.#settings.cert, this.#settings.key, this.#settings.ca];
    return paths
      .map((path) => {
        if (path === null) return '-';
        try {
          const s = statSync(path);
          return `${s.mtimeMs}:${s.size}:${s.ino}`;
        } catch {
          return 'missing';
        }
      })
      .join('|');
  }

  /** Serves `server` with these credentials: refusals are counted and logged; the files are watched. */
  attach(server: TlsServer): void {
    // With a 'tlsClientError' listener node leaves the socket open (a handshake timeout included):
    // every socket the TLS layer gives up on is destroyed here, or it would hold a slot for good.
    server.on('tlsClientError', (error, socket) => {
      socket.destroy();
      this.#refused('handshake', errorMessage(error));
    });
    if (this.#settings.ca !== null) {
      // Runs before the handler that hands the socket on, and may destroy it.
      server.prependListener('secureConnection', (socket: TLSSocket) => {
        const peer = socket.getPeerCertificate();
        // A CA certificate (basicConstraints CA:TRUE) signs certificates; it is no client's identity.
        if (peer.ca === true) {
          this.#refused('handshake', `client certificate ${JSON.stringify(peer.subject?.CN ?? '')} is a CA certificate (CA:TRUE), not a client's`);
          socket.destroy();
          return;
        }
        if (peerAllowed(this.#settings.allow, peer)) return;
        this.#refused('not_allowed', `client certificate ${JSON.stringify(peer.subject?.CN ?? '')} is not on the allow-list`);
        socket.destroy();
      });
    }
    this.#timer = setInterval(() => this.#check(server), this.#settings.reloadMs).unref();
  }

  #refused(reason: TlsRefusal, detail: string): void {
    this.onRefused?.(reason);
    // A line a second at most: a scanner must not flood the logs.
    const now = Date.now();
    if (now - this.#lastRefusalLog < 1000) return;
    this.#lastRefusalLog = now;
    this.#logger.warn({ reason, detail }, 'TLS connection refused');
  }

  #check(server: TlsServer): void {
    const stamp = this.#readStamp();
    if (stamp === this.#stamp) return;
    // Whatever happens, this change is dealt with once: a bad pair is logged once, not every tick.
    this.#stamp = stamp;
    try {
      const files = loadServerTls(this.#settings);
      const mutual = this.#settings.ca !== null;
      server.setSecureContext({ ...TLS_FLOOR, ...files, requestCert: mutual, rejectUnauthorized: mutual } as SecureContextOptions);
      this.#files = files;
      this.#logger.info({ cert: this.#settings.cert }, 'TLS certificate reloaded');
    } catch (error) {
      this.#logger.error(
        { code: (error as { code?: string }).code ?? 'MP_ERR_TLS_FILE', err: errorMessage(error) },
        'TLS files changed but do not load: the previous certificate stays in use',
      );
    }
  }

  stop(): void {
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = null;
  }
}

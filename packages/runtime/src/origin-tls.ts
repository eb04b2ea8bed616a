import { checkServerIdentity, type ConnectionOptions } from 'node:tls';
import type { OriginTlsSettings } from '@mirrorplane/core';
import { TLS_FLOOR, readCaBundle, readClientPair } from './server-tls.js';

/**
 * The options of a TLS connection to one staging origin (`origins.<name>: { url, ca, cert,
 * key, servername, insecure }`): files read now, so a missing one fails the worker's start
 * naming `origins.<name>.ca` (or `.cert`, `.key`); always the floor (TLS_FLOOR). `insecure` turns verification off, and only
 * it: the caller logs it at start.
 *
 * @throws TlsFileError naming the origin's key.
 */
export function originTlsOptions(settings: OriginTlsSettings | undefined): ConnectionOptions {
  const options: ConnectionOptions = { ...TLS_FLOOR };
  if (settings === undefined) return options;
  if (settings.ca !== null) options.ca = readCaBundle(`${settings.where}.ca`, settings.ca);
  if (settings.cert !== null && settings.key !== null) {
    const pair = readClientPair({ cert: `${settings.where}.cert`, key: `${settings.where}.key` }, { cert: settings.cert, key: settings.key });
    options.cert = pair.cert;
    options.key = pair.key;
  }
  if (settings.servername !== null) {
    const name = settings.servername;
    options.servername = name;
    // Verified against the configured name, whatever host the URL dials.
    options.checkServerIdentity = (_host, cert) => checkServerIdentity(name, cert);
  }
  if (settings.insecure) options.rejectUnauthorized = false;
  return options;
}

import { X509Certificate } from 'node:crypto';
import { isIP } from 'node:net';
import { checkServerIdentity, connect as tlsConnect, type ConnectionOptions } from 'node:tls';
import { TlsFileError, type RedisTlsSettings } from '@mirrorplane/core';
import { TLS_FLOOR, readCaBundle, readClientPair } from './server-tls.js';

/**
 * The `tls` options of a rediss:// connection from REDIS_TLS_*: files read now (a missing one
 * throws naming its setting), the client certificate checked for expiry (Redis would only
 * answer "certificate expired" at the handshake), the server name to verify; always the floor
 * (TLS_FLOOR: TLS 1.2, security level 2). Without settings: the system's CAs and the URL's host.
 *
 * @throws TlsFileError naming REDIS_TLS_CA, REDIS_TLS_CERT or REDIS_TLS_KEY.
 */
export function redisTlsOptions(settings: RedisTlsSettings | null | undefined): ConnectionOptions {
  const options: ConnectionOptions = { ...TLS_FLOOR };
  if (!settings) return options;
  if (settings.ca !== null) options.ca = readCaBundle('REDIS_TLS_CA', settings.ca);
  if (settings.cert !== null && settings.key !== null) {
    const pair = readClientPair({ cert: 'REDIS_TLS_CERT', key: 'REDIS_TLS_KEY' }, { cert: settings.cert, key: settings.key });
    const until = Date.parse(new X509Certificate(pair.cert).validTo);
    if (until < Date.now()) throw new TlsFileError('REDIS_TLS_CERT', `${JSON.stringify(settings.cert)} expired on ${new Date(until).toISOString()}`);
    options.cert = pair.cert;
    options.key = pair.key;
  }
  if (settings.servername !== null) {
    options.servername = settings.servername;
    // Verified against the setting, whatever host (a Cluster node's address) was dialled.
    const name = settings.servername;
    options.checkServerIdentity = (_host, cert) => checkServerIdentity(name, cert);
  }
  return options;
}

/** What a failed handshake with Redis means, and the setting that fixes it. */
export interface RedisTlsProblem {
  setting: string;
  message: string;
}

/** Node's certificate verification codes: the server's certificate chains to no CA we trust. */
const UNTRUSTED = new Set([
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'CERT_SIGNATURE_FAILURE',
]);

/**
 * The TLS problem behind a Redis connection error, or null when it is not one: an untrusted
 * or expired server certificate, a name mismatch, or Redis refusing our client certificate
 * (none, untrusted, expired). Reads the error's `code`, or for errors only quoted in another's
 * message (Sentinel's "Last error: …", a Cluster's last node error) the code in the text.
 */
export function redisTlsProblem(error: unknown): RedisTlsProblem | null {
  const e = error as { code?: unknown; lastNodeError?: unknown; message?: unknown } | null;
  if (e && e.lastNodeError) return redisTlsProblem(e.lastNodeError);
  const message = typeof e?.message === 'string' ? e.message : String(error);
  const code = typeof e?.code === 'string' ? e.code : (/\b([A-Z][A-Z_0-9]{6,})\b/.exec(message.replace(/^.*Last error: /s, ''))?.[1] ?? '');
  if (UNTRUSTED.has(code) || /self[- ]signed certificate|unable to (verify|get local issuer)/i.test(message))
    return { setting: 'REDIS_TLS_CA', message: `Redis's certificate is not signed by a CA in REDIS_TLS_CA (or the system's): ${message}` };
  if (code === 'CERT_HAS_EXPIRED' || /^certificate has expired/i.test(message))
    return { setting: 'REDIS_TLS_CA', message: `Redis's certificate has expired; renew it on the Redis side (tls-cert-file): ${message}` };
  if (code === 'CERT_NOT_YET_VALID') return { setting: 'REDIS_TLS_CA', message: `Redis's certificate is not valid yet (check the clocks): ${message}` };
  if (code === 'ERR_TLS_CERT_ALTNAME_INVALID' || /Hostname\/IP does not match certificate/i.test(message))
    return {
      setting: 'REDIS_TLS_SERVERNAME',
      message: `Redis's certificate does not name the host dialled: connect by a name it carries or set REDIS_TLS_SERVERNAME to one (${message})`,
    };
  if (/CERTIFICATE_REQUIRED|certificate required|ALERT_HANDSHAKE_FAILURE/i.test(code + message))
    return { setting: 'REDIS_TLS_CERT', message: `Redis requires a client certificate (tls-auth-clients): set REDIS_TLS_CERT and REDIS_TLS_KEY (${message})` };
  if (/ALERT_UNKNOWN_CA|ALERT_BAD_CERTIFICATE|tlsv1 alert unknown ca|bad certificate/i.test(code + message))
    return {
      setting: 'REDIS_TLS_CERT',
      message: `Redis does not trust the client certificate in REDIS_TLS_CERT (signed by a CA it does not know): ${message}`,
    };
  if (/ALERT_CERTIFICATE_EXPIRED|certificate expired/i.test(code + message))
    return { setting: 'REDIS_TLS_CERT', message: `Redis refused REDIS_TLS_CERT as expired: ${message}` };
  return null;
}

/**
 * Shakes hands with host:port and, without sending a byte, waits `timeoutMs` for Redis to
 * refuse: the problem found, or null. For a handshake that ended in a bare "connection reset":
 * in TLS 1.3 Redis checks the client certificate after the client finished, and its alert is
 * lost when the client's first command meets the closed socket. Never rejects.
 */
export function probeRedisTls(host: string, port: number, options: ConnectionOptions, timeoutMs: number): Promise<RedisTlsProblem | null> {
  return new Promise((resolve) => {
    // SNI carries names only, never an address.
    const socket = tlsConnect({ host, port, ...(isIP(host) === 0 ? { servername: host } : {}), ...options });
    const done = (problem: RedisTlsProblem | null) => {
      clearTimeout(timer);
      socket.destroy();
      resolve(problem);
    };
    const timer = setTimeout(() => done(null), timeoutMs);
    socket.on('error', (error) => done(redisTlsProblem(error)));
    socket.on('close', () => done(null));
  });
}

/**
 * Whether host:port speaks TLS: a handshake (no verification, no client certificate) that
 * completes, or that the server ends with a TLS alert. False for a plain-text server, silence
 * or a refused connection within `timeoutMs`. For a redis:// URL whose connections are reset
 * at once: the port may be a TLS-only one. Never rejects.
 */
export function speaksTls(host: string, port: number, timeoutMs: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = tlsConnect({ host, port, rejectUnauthorized: false, ...(isIP(host) === 0 ? { servername: host } : {}) });
    const done = (tls: boolean) => {
      clearTimeout(timer);
      socket.destroy();
      resolve(tls);
    };
    const timer = setTimeout(() => done(false), timeoutMs);
    socket.once('secureConnect', () => done(true));
    // An alert from the peer (certificate required, handshake failure…) is a TLS server talking.
    socket.on('error', (error) => done(/ALERT/.test(String((error as { code?: unknown }).code ?? ''))));
    socket.on('close', () => done(false));
  });
}

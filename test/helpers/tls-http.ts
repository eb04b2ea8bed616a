import { connect, type ConnectionOptions, type PeerCertificate } from 'node:tls';
import type { RawResponse } from './raw-http.js';

/** What a TLS exchange ended in: an HTTP answer, or the connection failing or closing without one. */
export type TlsOutcome = { ok: true; response: RawResponse; peer: PeerCertificate } | { ok: false; error: string };

/**
 * Sends one request exactly as given (see `sendRaw`) over TLS with `options` (ca, cert, key,
 * servername…) and reads the whole answer. Never rejects: a refused handshake or a connection
 * closed without an answer is `{ ok: false, error }`.
 */
export function sendRawTls(port: number, head: string, body: Buffer = Buffer.alloc(0), options: ConnectionOptions = {}): Promise<TlsOutcome> {
  return new Promise((resolve) => {
    const socket = connect({ host: '127.0.0.1', port, servername: 'localhost', ...options });
    const chunks: Buffer[] = [];
    let peer: PeerCertificate | null = null;
    let settled = false;
    const done = (outcome: TlsOutcome) => {
      if (settled) return;
      settled = true;
      socket.destroy();
      resolve(outcome);
    };
    socket.once('secureConnect', () => {
      peer = socket.getPeerCertificate();
      socket.write(Buffer.concat([Buffer.from(head, 'latin1'), body]));
    });
    socket.on('data', (c: Buffer) => chunks.push(c));
    socket.on('error', (error: NodeJS.ErrnoException) => done({ ok: false, error: error.code ?? error.message }));
    socket.on('close', () => {
      const all = Buffer.concat(chunks);
      const split = all.indexOf('\r\n\r\n');
      const headText = all.subarray(0, split === -1 ? all.length : split).toString('latin1');
      const match = /^HTTP\/1\.[01] (\d{3})/.exec(headText);
      if (!match || peer === null) return done({ ok: false, error: 'closed without an answer' });
      done({ ok: true, peer, response: { status: Number(match[1]), head: headText, body: split === -1 ? Buffer.alloc(0) : all.subarray(split + 4) } });
    });
  });
}

import { connect } from 'node:net';

export interface RawResponse {
  status: number;
  head: string;
  body: Buffer;
}

/**
 * Sends one request exactly as given (raw bytes: header case, order and duplicates are the
 * caller's) on a fresh connection with `connection: close`, and reads the whole answer.
 */
export function sendRaw(port: number, head: string, body: Buffer = Buffer.alloc(0), host = '127.0.0.1'): Promise<RawResponse> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, host);
    const chunks: Buffer[] = [];
    socket.on('data', (c: Buffer) => chunks.push(c));
    socket.on('error', reject);
    socket.on('end', () => {
      const all = Buffer.concat(chunks);
      const split = all.indexOf('\r\n\r\n');
      const headText = all.subarray(0, split === -1 ? all.length : split).toString('latin1');
      const match = /^HTTP\/1\.[01] (\d{3})/.exec(headText);
      if (!match) return reject(new Error(`no HTTP answer: ${JSON.stringify(headText.slice(0, 200))}`));
      resolve({ status: Number(match[1]), head: headText, body: split === -1 ? Buffer.alloc(0) : all.subarray(split + 4) });
      socket.destroy();
    });
    socket.write(Buffer.concat([Buffer.from(head, 'latin1'), body]));
  });
}

/** Builds a request head: `headers` are raw pairs, written as given, plus `connection: close`. */
export function requestHead(method: string, target: string, headers: readonly string[], contentLength?: number): string {
  let head = `${method} ${target} HTTP/1.1\r\n`;
  for (let i = 0; i < headers.length; i += 2) head += `${headers[i]}: ${headers[i + 1]}\r\n`;
  if (contentLength !== undefined) head += `Content-Length: ${contentLength}\r\n`;
  return `${head}Connection: close\r\n\r\n`;
}

import { connect, type Socket } from 'node:net';

/**
 * HTTP/2 frames written by hand, for what node's client will not do: open more streams than the
 * peer allows, or reset a stream without ending it first (node's `close()` sends END_STREAM
 * before RST_STREAM). Header blocks use HPACK literals without indexing and without Huffman.
 */

export const PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1');
export const FRAME = { DATA: 0x0, HEADERS: 0x1, RST_STREAM: 0x3, SETTINGS: 0x4, GOAWAY: 0x7 } as const;
export const FLAG = { END_STREAM: 0x1, END_HEADERS: 0x4, ACK: 0x1 } as const;

export function frame(type: number, flags: number, streamId: number, payload: Buffer = Buffer.alloc(0)): Buffer {
  const head = Buffer.alloc(9);
  head.writeUIntBE(payload.length, 0, 3);
  head[3] = type;
  head[4] = flags;
  head.writeUInt32BE(streamId & 0x7fffffff, 5);
  return Buffer.concat([head, payload]);
}

function hpackLength(n: number): Buffer {
  if (n < 127) return Buffer.from([n]);
  const out = [127];
  n -= 127;
  while (n >= 128) {
    out.push((n & 0x7f) | 0x80);
    n >>= 7;
  }
  out.push(n);
  return Buffer.from(out);
}

/** A header block: every field a literal without indexing (new name). */
export function headerBlock(fields: readonly [string, string][]): Buffer {
  const parts: Buffer[] = [];
  for (const [name, value] of fields) {
    parts.push(Buffer.from([0]), hpackLength(name.length), Buffer.from(name, 'latin1'), hpackLength(value.length), Buffer.from(value, 'latin1'));
  }
  return Buffer.concat(parts);
}

export function headersFrame(streamId: number, fields: readonly [string, string][], endStream = false): Buffer {
  return frame(FRAME.HEADERS, FLAG.END_HEADERS | (endStream ? FLAG.END_STREAM : 0), streamId, headerBlock(fields));
}

export function rstFrame(streamId: number, code: number): Buffer {
  const payload = Buffer.alloc(4);
  payload.writeUInt32BE(code);
  return frame(FRAME.RST_STREAM, 0, streamId, payload);
}

export interface ReadFrame {
  type: number;
  flags: number;
  streamId: number;
  payload: Buffer;
}

/** A raw HTTP/2 connection: writes frames, collects every frame the server sends. */
export class RawH2Connection {
  readonly socket: Socket;
  readonly frames: ReadFrame[] = [];
  #buffer = Buffer.alloc(0);
  closed = false;

  private constructor(socket: Socket) {
    this.socket = socket;
    socket.on('data', (chunk: Buffer) => {
      this.#buffer = Buffer.concat([this.#buffer, chunk]);
      while (this.#buffer.length >= 9) {
        const length = this.#buffer.readUIntBE(0, 3);
        if (this.#buffer.length < 9 + length) break;
        const f = {
          type: this.#buffer[3] as number,
          flags: this.#buffer[4] as number,
          streamId: this.#buffer.readUInt32BE(5) & 0x7fffffff,
          payload: this.#buffer.subarray(9, 9 + length),
        };
        this.#buffer = this.#buffer.subarray(9 + length);
        this.frames.push(f);
        // Settings are acknowledged, as every peer must.
        if (f.type === FRAME.SETTINGS && (f.flags & FLAG.ACK) === 0) socket.write(frame(FRAME.SETTINGS, FLAG.ACK, 0));
      }
    });
    socket.on('error', () => undefined);
    socket.on('close', () => (this.closed = true));
  }

  /** Connects and sends the preface and an empty SETTINGS frame (plus `first`, in the same write). */
  static open(port: number, first: Buffer = Buffer.alloc(0)): Promise<RawH2Connection> {
    return new Promise((resolve, reject) => {
      const socket = connect(port, '127.0.0.1', () => {
        socket.write(Buffer.concat([PREFACE, frame(FRAME.SETTINGS, 0, 0), first]));
        resolve(new RawH2Connection(socket));
      });
      socket.once('error', reject);
    });
  }

  write(bytes: Buffer): void {
    this.socket.write(bytes);
  }

  /** The RST_STREAM error code the server sent for a stream, or null. */
  rstCode(streamId: number): number | null {
    const f = this.frames.find((x) => x.type === FRAME.RST_STREAM && x.streamId === streamId);
    return f ? f.payload.readUInt32BE(0) : null;
  }

  close(): void {
    this.socket.destroy();
  }
}

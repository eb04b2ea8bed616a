import * as zlib from 'node:zlib';

/**
 * Body decoding by `Content-Encoding` (RFC 9110 §8.4): the one function every reader of a body
 * goes through — comparison, ID learning from either side, JSON rules and ID mapping in request
 * bodies, HAR export. Codings: `gzip` (`x-gzip`), `deflate` (zlib-wrapped, and the raw deflate
 * some servers send under that name), `br`, and `zstd` when this Node's zlib has it (Node
 * 22.15+/23.8+); `identity` is no coding. Several codings (`gzip, br`) are undone last first.
 *
 * The output is bounded: a decompression bomb stops at `maxBytes` with the outcome `too_large`.
 * Decoding is synchronous: bodies here are already bounded by the response/request body
 * limits, and one sync call costs less than the stream plumbing of the async API for them.
 * A body cut by a limit (`partial`) decodes as far as its bytes go; otherwise a body that ends
 * early is `corrupt`, and so is one with bytes after the end of its coded stream, whatever the
 * coding.
 */

/** Default bound on a decoded body: 8 MiB. */
export const DEFAULT_MAX_DECODED_BYTES = 8 * 1024 * 1024;

/** What became of a body; `body` is the decoded bytes when `ok`, the bytes as received otherwise. */
export type BodyDecoding =
  | { kind: 'identity'; ok: true; body: Buffer }
  | { kind: 'decoded'; ok: true; body: Buffer; codings: string[] }
  /** A coding this process cannot undo (zstd before Node 22.15, or an unknown name). */
  | { kind: 'unsupported'; ok: false; body: Buffer; coding: string; message: string }
  /** The decoded body would exceed `maxBytes`. */
  | { kind: 'too_large'; ok: false; body: Buffer; coding: string; message: string }
  /** The bytes are not valid for the coding. */
  | { kind: 'corrupt'; ok: false; body: Buffer; coding: string; message: string };

export type BodyDecodingOutcome = BodyDecoding['kind'];

type Decoder = (input: Buffer, options: zlib.ZlibOptions & { maxOutputLength: number }) => Buffer;

const zstd = (zlib as unknown as { zstdDecompressSync?: Decoder }).zstdDecompressSync;

/** True when this Node can decode `zstd`. */
export const ZSTD_SUPPORTED = typeof zstd === 'function';

function looksLikeZlib(body: Buffer): boolean {
  // RFC 1950: CM = 8 (deflate), and the header as a big-endian number is a multiple of 31.
  return body.length >= 2 && ((body[0] as number) & 0x0f) === 8 && (((body[0] as number) << 8) | (body[1] as number)) % 31 === 0;
}

function decoderFor(coding: string, body: Buffer): Decoder | 'unsupported' {
  switch (coding) {
    case 'gzip':
    case 'x-gzip':
      return zlib.gunzipSync;
    case 'deflate':
      return looksLikeZlib(body) ? zlib.inflateSync : zlib.inflateRawSync;
    case 'br':
      return zlib.brotliDecompressSync as Decoder;
    case 'zstd':
      return zstd ?? 'unsupported';
    default:
      return 'unsupported';
  }
}

/** The codings of a flat header list, in the order they were applied (`gzip, br` → gzip first). */
export function contentCodings(headers: readonly string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < headers.length; i += 2) {
    if ((headers[i] as string).toLowerCase() !== 'content-encoding') continue;
    for (const part of (headers[i + 1] as string).split(',')) {
      const coding = part.trim().toLowerCase();
      if (coding !== '' && coding !== 'identity') out.push(coding);
    }
  }
  return out;
}

/**
 * Decodes `body` as its headers' `Content-Encoding` says. Never throws; the outcome says what
 * happened. `maxBytes` bounds the decoded size (default `DEFAULT_MAX_DECODED_BYTES`);
 * `partial` says the body was cut by a limit, so an early end is expected, not corrupt.
 */
export function decodeBody(
  headers: readonly string[],
  body: Buffer,
  maxBytes: number = DEFAULT_MAX_DECODED_BYTES,
  options: { partial?: boolean } = {},
): BodyDecoding {
  const codings = contentCodings(headers);
  if (codings.length === 0 || body.length === 0) return { kind: 'identity', ok: true, body };
  let current = body;
  for (let i = codings.length - 1; i >= 0; i--) {
    const coding = codings[i] as string;
    const decoder = decoderFor(coding, current);
    if (decoder === 'unsupported') {
      const message =
        coding === 'zstd'
          ? `cannot decode zstd: this Node (${process.version}) has no zstd in zlib (Node 22.15+/23.8+ has)`
          : `cannot decode content-coding ${JSON.stringify(coding)}`;
      return { kind: 'unsupported', ok: false, body, coding, message };
    }
    try {
      // A partial body flushes what it has instead of failing at its early end.
      const finishFlush = !options.partial
        ? undefined
        : coding === 'br'
          ? zlib.constants.BROTLI_OPERATION_FLUSH
          : coding === 'zstd'
            ? undefined
            : zlib.constants.Z_SYNC_FLUSH;
      const input = current;
      const result = decoder(input, { maxOutputLength: maxBytes, info: true, ...(finishFlush !== undefined && { finishFlush }) } as zlib.ZlibOptions & {
        maxOutputLength: number;
      }) as unknown as Buffer | { buffer: Buffer; engine: { bytesWritten?: number } };
      if (Buffer.isBuffer(result)) {
        current = result;
      } else {
        current = result.buffer;
        // One rule for every coding: bytes after the end of the coded stream make the body
        // corrupt (gzip's own decoder refuses them; inflate and brotli would drop them silently).
        const consumed = result.engine.bytesWritten;
        if (typeof consumed === 'number' && consumed < input.length && !options.partial) {
          return {
            kind: 'corrupt',
            ok: false,
            body,
            coding,
            message: `${coding} body does not decode: ${input.length - consumed} bytes after the end of the ${coding} stream`,
          };
        }
      }
    } catch (error) {
      const code = (error as { code?: string }).code;
      if (code === 'ERR_BUFFER_TOO_LARGE' || error instanceof RangeError) {
        return { kind: 'too_large', ok: false, body, coding, message: `${coding} body decodes to more than ${maxBytes} bytes` };
      }
      return { kind: 'corrupt', ok: false, body, coding, message: `${coding} body does not decode: ${(error as Error).message}` };
    }
  }
  return { kind: 'decoded', ok: true, body: current, codings };
}

/** `headers` without `Content-Encoding` (and `Content-Length`), for a body that was decoded. */
export function withoutContentCoding(headers: readonly string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < headers.length; i += 2) {
    const name = (headers[i] as string).toLowerCase();
    if (name !== 'content-encoding' && name !== 'content-length') out.push(headers[i] as string, headers[i + 1] as string);
  }
  return out;
}

import { EntryDecodeError } from './errors.js';
import { isHttpToken } from './http-token.js';

/**
 * Version of the stream entry layout an HTTP/1.1 request is written with. Layout 1 is an
 * HTTP/1.1 request; layout 2 is layout 1 plus the protocol field (`p`), written only for
 * HTTP/2 requests, so HTTP/1.1 entries keep the bytes (and the readers) they always had. A
 * worker reads both and refuses any other version.
 */
export const ENTRY_VERSION = '1';
/** Layout version of an entry that carries the protocol field (HTTP/2 requests). */
export const ENTRY_VERSION_PROTOCOL = '2';

/** The protocol a mirrored request arrived in. */
export type HttpProtocol = 'HTTP/1.1' | 'HTTP/2';

/** A request as the mirror proxy sent it to the ingress. */
export interface MirroredRequest {
  method: string;
  /** The request-target exactly as received (`/path?query`, rarely absolute-form); HTTP/2: `:path`. */
  target: string;
  /**
   * Header names and values in order, duplicates kept, as `[name, value, name, value, …]` (latin1).
   * HTTP/2: the pseudo-headers other than `:method` and `:path` (`:scheme`, `:authority`) keep
   * their place in this list.
   */
  rawHeaders: string[];
  /** Absent: HTTP/1.1 (every entry written before HTTP/2 intake). */
  protocol?: HttpProtocol;
  body: Buffer;
  /** Trailer fields of a chunked body, `[name, value, …]` as received (latin1); absent or empty when none. */
  trailers?: string[];
  /** Milliseconds since the epoch when the ingress finished reading the request. */
  receivedAt: number;
  requestId: string | null;
  clientAddress: string | null;
}

/** One stream entry: its id (the Redis stream id) and the request it carries. */
export interface Entry {
  id: string;
  request: MirroredRequest;
}

// Field names are one letter: they are stored once per entry, and a 1 KiB request
// should cost Redis little more than its own bytes.
const F_VERSION = 'v';
const F_METHOD = 'm';
const F_TARGET = 'u';
const F_HEADERS = 'h';
const F_BODY = 'b';
const F_TIME = 't';
const F_REQUEST_ID = 'r';
const F_CLIENT = 'a';
/** Only present when the request had trailer fields; same layout as the header field. */
const F_TRAILERS = 'T';
/** Layout 2 only: the protocol, `2` (HTTP/2) or `1.1`. */
const F_PROTOCOL = 'p';
const PROTOCOL_VALUES: Readonly<Record<string, HttpProtocol>> = { '1.1': 'HTTP/1.1', '2': 'HTTP/2' };

const HEADER_SEPARATOR = '\n';

/** The field names by their one byte (undefined: not a field of any layout). */
const FIELD_BY_BYTE: readonly (string | undefined)[] = (() => {
  const out: (string | undefined)[] = new Array<string | undefined>(256).fill(undefined);
  for (const f of [F_VERSION, F_METHOD, F_TARGET, F_HEADERS, F_BODY, F_TIME, F_REQUEST_ID, F_CLIENT, F_TRAILERS, F_PROTOCOL]) out[f.charCodeAt(0)] = f;
  return out;
})();

/**
 * Joins raw header pairs into one latin1 buffer. Names and values never contain LF:
 * the ingress's parser refuses it, so LF is a safe separator and no escaping is needed.
 */
export function encodeHeaders(rawHeaders: readonly string[]): Buffer {
  return Buffer.from(rawHeaders.join(HEADER_SEPARATOR), 'latin1');
}

export function decodeHeaders(buffer: Buffer): string[] {
  if (buffer.length === 0) return [];
  const parts = buffer.toString('latin1').split(HEADER_SEPARATOR);
  if (parts.length % 2 !== 0) {
    throw new EntryDecodeError(`header field holds ${parts.length} items, expected name/value pairs`);
  }
  return parts;
}

/**
 * The XADD field/value arguments for a request, in stream order. Values are Buffers or
 * strings exactly as ioredis sends them: the body is never JSON- or base64-encoded.
 */
export function encodeEntryFields(request: MirroredRequest): (string | Buffer)[] {
  return pushEntryFields(
    [],
    request.method,
    request.target,
    request.rawHeaders,
    request.body,
    request.receivedAt,
    request.requestId,
    request.clientAddress,
    request.trailers,
    request.protocol,
  );
}

/**
 * Appends the XADD field/value arguments of a request to `out` and returns it. The ingress
 * calls this with `[stream, '*']` so its hot path builds one array and no request object.
 */
export function pushEntryFields(
  out: (string | Buffer)[],
  method: string,
  target: string,
  rawHeaders: readonly string[],
  body: Buffer,
  receivedAt: number,
  requestId: string | null | undefined,
  clientAddress: string | null | undefined,
  trailers?: readonly string[],
  protocol?: HttpProtocol,
): (string | Buffer)[] {
  const http2 = protocol === 'HTTP/2';
  out.push(
    F_VERSION,
    http2 ? ENTRY_VERSION_PROTOCOL : ENTRY_VERSION,
    F_METHOD,
    method,
    F_TARGET,
    Buffer.from(target, 'latin1'),
    F_HEADERS,
    encodeHeaders(rawHeaders),
    F_BODY,
    body,
    F_TIME,
    String(receivedAt),
  );
  if (typeof requestId === 'string') out.push(F_REQUEST_ID, Buffer.from(requestId, 'latin1'));
  if (typeof clientAddress === 'string') out.push(F_CLIENT, clientAddress);
  if (trailers !== undefined && trailers.length > 0) out.push(F_TRAILERS, encodeHeaders(trailers));
  if (http2) out.push(F_PROTOCOL, '2');
  return out;
}

/** Field/value pairs as Redis returns them, values as Buffers (`xreadgroupBuffer`). */
export type RawFields = readonly Buffer[];

/** Decodes one stream entry; throws `EntryDecodeError` naming what is wrong. */
export function decodeEntry(id: string, fields: RawFields): Entry {
  if (fields.length % 2 !== 0) throw new EntryDecodeError(`entry ${id} has an odd number of field items`);
  let version: string | undefined;
  let method: string | undefined;
  let target: string | undefined;
  let headers: Buffer | undefined;
  let body: Buffer | undefined;
  let time: string | undefined;
  let requestId: string | null = null;
  let client: string | null = null;
  let trailerField: Buffer | undefined;
  let protocolField: string | undefined;
  for (let i = 0; i < fields.length; i += 2) {
    const nameBuffer = fields[i] as Buffer;
    // Every field name is one letter: its byte picks the field, no string made per field.
    const name = nameBuffer.length === 1 ? FIELD_BY_BYTE[nameBuffer[0] as number] : undefined;
    const value = fields[i + 1] as Buffer;
    switch (name) {
      case F_VERSION:
        version = value.toString('latin1');
        break;
      case F_METHOD:
        method = value.toString('latin1');
        break;
      case F_TARGET:
        target = value.toString('latin1');
        break;
      case F_HEADERS:
        headers = value;
        break;
      case F_BODY:
        body = value;
        break;
      case F_TIME:
        time = value.toString('latin1');
        break;
      case F_REQUEST_ID:
        requestId = value.toString('latin1');
        break;
      case F_CLIENT:
        client = value.toString('latin1');
        break;
      case F_TRAILERS:
        trailerField = value;
        break;
      case F_PROTOCOL:
        protocolField = value.toString('latin1');
        break;
      default:
        throw new EntryDecodeError(`entry ${id} has an unknown field ${JSON.stringify(nameBuffer.toString('latin1'))}`);
    }
  }
  if (version !== ENTRY_VERSION && version !== ENTRY_VERSION_PROTOCOL) {
    throw new EntryDecodeError(
      version === undefined
        ? `entry ${id} has no version field; it was not written by a mirrorplane ingress`
        : `entry ${id} has version ${JSON.stringify(version)}, this worker reads versions ${ENTRY_VERSION} and ${ENTRY_VERSION_PROTOCOL}`,
    );
  }
  let protocol: HttpProtocol | undefined;
  if (version === ENTRY_VERSION_PROTOCOL) {
    protocol = protocolField === undefined ? undefined : PROTOCOL_VALUES[protocolField];
    if (protocol === undefined) throw new EntryDecodeError(`entry ${id} has version 2 and no valid protocol field (${JSON.stringify(protocolField ?? null)})`);
  } else if (protocolField !== undefined) {
    throw new EntryDecodeError(`entry ${id} has version 1 and a protocol field, which only version 2 has`);
  }
  if (method === undefined || !isHttpToken(method)) {
    throw new EntryDecodeError(`entry ${id} has no valid method (${JSON.stringify(method ?? null)})`);
  }
  if (target === undefined || target.length === 0) throw new EntryDecodeError(`entry ${id} has no request-target`);
  if (headers === undefined) throw new EntryDecodeError(`entry ${id} has no header field`);
  if (body === undefined) throw new EntryDecodeError(`entry ${id} has no body field`);
  const receivedAt = time === undefined ? NaN : Number(time);
  if (!Number.isSafeInteger(receivedAt) || receivedAt < 0) {
    throw new EntryDecodeError(`entry ${id} has an invalid receive time ${JSON.stringify(time ?? null)}`);
  }
  let rawHeaders: string[];
  let trailers: string[] | undefined;
  try {
    rawHeaders = decodeHeaders(headers);
    if (trailerField !== undefined) trailers = decodeHeaders(trailerField);
  } catch (error) {
    throw new EntryDecodeError(`entry ${id}: ${(error as Error).message}`);
  }
  const request: MirroredRequest = { method, target, rawHeaders, body, receivedAt, requestId, clientAddress: client };
  if (trailers !== undefined && trailers.length > 0) request.trailers = trailers;
  if (protocol === 'HTTP/2') request.protocol = protocol;
  return { id, request };
}

/** The fields of an entry as printable text (for the failed set when an entry cannot be decoded). */
export function describeRawFields(fields: RawFields): Record<string, string> {
  const out: Record<string, string> = {};
  for (let i = 0; i + 1 < fields.length; i += 2) {
    const name = (fields[i] as Buffer).toString('latin1');
    out[name] = (fields[i + 1] as Buffer).toString('base64');
  }
  return out;
}

/** An entry as JSON-safe data, for BullMQ jobs (body as base64). */
export interface SerializedEntry {
  id: string;
  method: string;
  target: string;
  headers: string[];
  body: string;
  receivedAt: number;
  requestId: string | null;
  clientAddress: string | null;
  trailers?: string[];
  /** Absent: HTTP/1.1. */
  protocol?: HttpProtocol;
}

export function serializeEntry(entry: Entry): SerializedEntry {
  const r = entry.request;
  return {
    id: entry.id,
    method: r.method,
    target: r.target,
    headers: r.rawHeaders,
    body: r.body.toString('base64'),
    receivedAt: r.receivedAt,
    requestId: r.requestId,
    clientAddress: r.clientAddress,
    ...(r.trailers !== undefined && r.trailers.length > 0 ? { trailers: r.trailers } : {}),
    ...(r.protocol === 'HTTP/2' ? { protocol: r.protocol } : {}),
  };
}

export function deserializeEntry(data: unknown): Entry {
  const d = data as Partial<SerializedEntry> | null;
  if (
    d === null ||
    typeof d !== 'object' ||
    typeof d.id !== 'string' ||
    typeof d.method !== 'string' ||
    typeof d.target !== 'string' ||
    !Array.isArray(d.headers) ||
    typeof d.body !== 'string' ||
    typeof d.receivedAt !== 'number' ||
    d.headers.length % 2 !== 0 ||
    !d.headers.every((h) => typeof h === 'string')
  ) {
    throw new EntryDecodeError('job data does not hold a serialized entry');
  }
  const trailers = Array.isArray(d.trailers) && d.trailers.length % 2 === 0 && d.trailers.every((t) => typeof t === 'string') ? d.trailers : undefined;
  return {
    id: d.id,
    request: {
      ...(trailers !== undefined && trailers.length > 0 ? { trailers } : {}),
      ...(d.protocol === 'HTTP/2' ? { protocol: d.protocol } : {}),
      method: d.method,
      target: d.target,
      rawHeaders: d.headers,
      body: Buffer.from(d.body, 'base64'),
      receivedAt: d.receivedAt,
      requestId: typeof d.requestId === 'string' ? d.requestId : null,
      clientAddress: typeof d.clientAddress === 'string' ? d.clientAddress : null,
    },
  };
}

/** Milliseconds encoded in a stream id (`<ms>-<seq>`). */
export function streamIdTime(id: string): number {
  const dash = id.indexOf('-');
  return Number(dash === -1 ? id : id.slice(0, dash));
}

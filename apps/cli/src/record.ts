import { createReadStream } from 'node:fs';
import { STATUS_CODES } from 'node:http';
import { createInterface } from 'node:readline';
import {
  decodeBody,
  decodeQueryComponentBytes,
  errorMessage,
  isFormMediaType,
  pairValue,
  pairValues,
  parseQuery,
  RecordingFormatError,
  REDACTED,
  type EntryCipher,
  type Redactor,
} from '@mirrorplane/core';
import { RECORDING_CONTEXT, RECORDING_VERSION, recordBody, type RecordedBody, type RecordedExchange, type RecordedHeaders } from '@mirrorplane/runtime';

/**
 * `mirrorplane record export`: turns recordings (JSONL, one replay a line) into HAR 1.2, so
 * a window of replayed traffic opens in browser devtools and HAR tools. Each HAR entry is
 * the request as sent to staging and staging's answer; what Mirrorplane knows beyond HAR
 * (entry id, rules applied, tags, the request as mirrored) is kept under `_mirrorplane`.
 */

interface HarNameValue {
  name: string;
  value: string;
}

export interface HarEntry {
  startedDateTime: string;
  time: number;
  request: {
    method: string;
    url: string;
    httpVersion: string;
    cookies: HarNameValue[];
    headers: HarNameValue[];
    queryString: HarNameValue[];
    postData?: { mimeType: string; text: string; params: HarNameValue[]; _encoding?: 'base64' };
    headersSize: number;
    bodySize: number;
  };
  response: {
    status: number;
    statusText: string;
    httpVersion: string;
    cookies: HarNameValue[];
    headers: HarNameValue[];
    content: { size: number; compression?: number; mimeType: string; text?: string; encoding?: 'base64' };
    redirectURL: string;
    headersSize: number;
    bodySize: number;
  };
  cache: Record<string, never>;
  timings: { blocked: number; dns: number; connect: number; send: number; wait: number; receive: number; ssl: number };
  _mirrorplane: {
    entryId: string;
    requestId: string | null;
    attempt: number;
    receivedAt: string;
    origin: string;
    rules: string[];
    tags: Record<string, string>;
    truncated?: ('request' | 'response')[];
    /** A body whose Content-Encoding could not be undone: HAR then holds its bytes as received. */
    undecoded?: { request?: string; response?: string };
    mirrored: { method: string; target: string; headers: HarNameValue[] };
    /** HTTP/2: staging's trailer fields (HAR has no place for them). */
    responseTrailers?: HarNameValue[];
  };
}

export interface Har {
  log: {
    version: '1.2';
    creator: { name: string; version: string };
    entries: HarEntry[];
  };
}

function nameValues(headers: RecordedHeaders): HarNameValue[] {
  return headers.map(([name, value]) => ({ name, value }));
}

function header(headers: RecordedHeaders, name: string): string | undefined {
  return pairValue(headers, name) ?? undefined;
}

function requestCookies(headers: RecordedHeaders): HarNameValue[] {
  const out: HarNameValue[] = [];
  for (const value of pairValues(headers, 'cookie')) {
    for (const part of value.split(';')) {
      const eq = part.indexOf('=');
      if (eq > 0) out.push({ name: part.slice(0, eq).trim(), value: part.slice(eq + 1).trim() });
      // A redacted header has no name=value pairs left; HAR still shows it among the headers.
    }
  }
  return out;
}

function responseCookies(headers: RecordedHeaders): HarNameValue[] {
  const out: HarNameValue[] = [];
  for (const value of pairValues(headers, 'set-cookie')) {
    const first = value.split(';')[0] ?? '';
    const eq = first.indexOf('=');
    if (eq > 0) out.push({ name: first.slice(0, eq).trim(), value: first.slice(eq + 1).trim() });
  }
  return out;
}

function joinUrl(origin: string, path: string): string {
  const base = origin ? origin.replace(/\/$/, '') : 'http://unknown-origin';
  return base + path;
}

function bytesOf(b: RecordedBody): Buffer {
  return Buffer.from(b.text, b.encoding === 'base64' ? 'base64' : 'utf8');
}

/**
 * A recorded body as HAR shows it: decoded per its Content-Encoding (recordings keep the bytes
 * as sent), as UTF-8 text or else base64. `compression` is the bytes the coding saved.
 */
function decodedBody(headers: RecordedHeaders, b: RecordedBody): { body: RecordedBody; size: number; compression?: number; problem?: string } {
  if (pairValue(headers, 'content-encoding') === null || b.text === '') return { body: b, size: b.size };
  const raw = bytesOf(b);
  const decoded = decodeBody(headers.flat(), raw, undefined, { partial: b.truncated === true });
  if (!decoded.ok) return { body: b, size: b.size, problem: decoded.message };
  if (decoded.kind === 'identity') return { body: b, size: b.size };
  const body = recordBody(decoded.body, Number.MAX_SAFE_INTEGER, b.truncated === true);
  return { body, size: decoded.body.length, compression: decoded.body.length - raw.length };
}

/**
 * HAR 1.2 `postData.params`: the fields of a url-encoded form, decoded in the charset its
 * content type declares (UTF-8 when none, or one this Node does not know): raw bytes and
 * percent-escapes alike. Other bodies have none.
 */
function formParams(mimeType: string, body: RecordedBody): HarNameValue[] {
  if (!isFormMediaType(mimeType)) return [];
  const charset = /;\s*charset\s*=\s*"?([^";\s]+)/i.exec(mimeType)?.[1] ?? 'utf-8';
  let decoder: InstanceType<typeof TextDecoder>;
  try {
    decoder = new TextDecoder(charset);
  } catch {
    decoder = new TextDecoder('utf-8');
  }
  if (decoder.encoding === 'utf-8' && body.encoding !== 'base64') return parseQuery(body.text).map((p) => ({ name: p.name, value: p.value ?? '' }));
  const raw = bytesOf(body);
  const params: HarNameValue[] = [];
  let start = 0;
  while (start <= raw.length) {
    let end = raw.indexOf(0x26, start);
    if (end === -1) end = raw.length;
    const part = raw.subarray(start, end);
    start = end + 1;
    if (part.length === 0) continue;
    const eq = part.indexOf(0x3d);
    const name = decoder.decode(decodeQueryComponentBytes(eq === -1 ? part : part.subarray(0, eq)));
    const value = eq === -1 ? '' : decoder.decode(decodeQueryComponentBytes(part.subarray(eq + 1)));
    params.push({ name, value });
  }
  return params;
}

/** One recording line as a HAR entry. */
export function toHarEntry(r: RecordedExchange): HarEntry {
  const q = r.sent.path.indexOf('?');
  const query = q === -1 ? [] : parseQuery(r.sent.path.slice(q + 1)).map((p) => ({ name: p.name, value: p.value ?? '' }));
  const body = (b: RecordedBody) => (b.encoding === 'base64' ? { text: b.text, encoding: 'base64' as const } : { text: b.text });
  const sentBody = decodedBody(r.sent.headers, r.sent.body);
  const responseBody = decodedBody(r.response.headers, r.response.body);
  const truncated: ('request' | 'response')[] = [];
  if (r.sent.body.truncated) truncated.push('request');
  if (r.response.body.truncated) truncated.push('response');
  const httpVersion = r.protocol === 'HTTP/2' ? 'HTTP/2' : 'HTTP/1.1';
  const entry: HarEntry = {
    startedDateTime: r.sentAt,
    time: r.ms,
    request: {
      method: r.sent.method,
      url: joinUrl(r.origin.url, r.sent.path),
      httpVersion,
      cookies: requestCookies(r.sent.headers),
      headers: nameValues(r.sent.headers),
      queryString: query,
      headersSize: -1,
      bodySize: r.sent.body.size,
    },
    response: {
      status: r.response.status,
      statusText: STATUS_CODES[r.response.status] ?? '',
      httpVersion,
      cookies: responseCookies(r.response.headers),
      headers: nameValues(r.response.headers),
      content: {
        size: responseBody.size,
        ...(responseBody.compression !== undefined && { compression: responseBody.compression }),
        mimeType: header(r.response.headers, 'content-type') ?? 'application/octet-stream',
        ...body(responseBody.body),
      },
      redirectURL: header(r.response.headers, 'location') ?? '',
      headersSize: -1,
      bodySize: r.response.body.size,
    },
    cache: {},
    // Mirrorplane times the exchange as a whole: from sending to the end of the answer.
    timings: { blocked: -1, dns: -1, connect: -1, send: 0, wait: r.ms, receive: 0, ssl: -1 },
    _mirrorplane: {
      entryId: r.entryId,
      requestId: r.requestId,
      attempt: r.attempt,
      receivedAt: r.receivedAt,
      origin: r.origin.name,
      rules: r.rules,
      tags: r.tags,
      ...(truncated.length > 0 && { truncated }),
      ...((sentBody.problem || responseBody.problem) && {
        undecoded: { ...(sentBody.problem && { request: sentBody.problem }), ...(responseBody.problem && { response: responseBody.problem }) },
      }),
      mirrored: { method: r.mirrored.method, target: r.mirrored.target, headers: nameValues(r.mirrored.headers) },
      ...(r.response.trailers !== undefined && { responseTrailers: nameValues(r.response.trailers) }),
    },
  };
  if (r.sent.body.size > 0) {
    const text = body(sentBody.body);
    const mimeType = header(r.sent.headers, 'content-type') ?? 'application/octet-stream';
    entry.request.postData = {
      mimeType,
      // HAR 1.2: the posted parameters of a url-encoded form; `text` keeps the body as sent too.
      params: formParams(mimeType, sentBody.body),
      text: text.text,
      // HAR 1.2 has no encoding for request bodies; binary ones are base64, flagged like this.
      ...(text.encoding && { _encoding: text.encoding }),
    };
  }
  return entry;
}

function checkLine(value: unknown, where: string): RecordedExchange {
  const r = value as Partial<RecordedExchange> | null;
  if (typeof r !== 'object' || r === null || r.v !== RECORDING_VERSION || typeof r.entryId !== 'string' || !r.sent || !r.response || !r.mirrored || !r.origin) {
    const version = typeof r === 'object' && r !== null && 'v' in r ? ` (version ${JSON.stringify(r.v)}, this CLI reads ${RECORDING_VERSION})` : '';
    throw new RecordingFormatError(`${where}: not a mirrorplane recording line${version}`);
  }
  return r as RecordedExchange;
}

/**
 * Reads recording files line by line; entries come out in the order of their `sentAt`.
 * Sealed lines (`recording.encrypt`) are opened with `cipher`; without one, or with the wrong
 * key, a `RecordingFormatError` names the file and line.
 */
export async function readRecordings(files: readonly string[], cipher: EntryCipher | null = null): Promise<RecordedExchange[]> {
  const out: RecordedExchange[] = [];
  for (const file of files) {
    let n = 0;
    try {
      const lines = createInterface({ input: createReadStream(file, 'utf8'), crlfDelay: Infinity });
      for await (const line of lines) {
        n += 1;
        if (line.trim() === '') continue;
        let value: unknown;
        let text = line;
        if (line.startsWith('mps1:')) {
          if (!cipher) throw new RecordingFormatError(`${file}:${n}: the line is encrypted (recording.encrypt); set MIRRORPLANE_DATA_KEY to read it`);
          try {
            text = cipher.openText(line, RECORDING_CONTEXT);
          } catch (error) {
            throw new RecordingFormatError(`${file}:${n}: ${errorMessage(error)}`);
          }
        }
        try {
          value = JSON.parse(text);
        } catch (error) {
          throw new RecordingFormatError(`${file}:${n}: not JSON: ${errorMessage(error)}`);
        }
        out.push(checkLine(value, `${file}:${n}`));
      }
    } catch (error) {
      if (error instanceof RecordingFormatError) throw error;
      throw new RecordingFormatError(`cannot read ${file}: ${errorMessage(error)}`);
    }
  }
  return out.sort((a, b) => (a.sentAt < b.sentAt ? -1 : a.sentAt > b.sentAt ? 1 : 0));
}

/**
 * The recordings as HAR 1.2. With a `redactor`, each line is redacted again first (secret
 * headers and query values), so recordings written before a name joined the lists, or by an
 * older version, come out redacted too.
 */
export function toHar(recordings: readonly RecordedExchange[], version: string, redactor: Redactor | null = null): Har {
  const lines = redactor ? recordings.map((r) => redactRecording(r, redactor)) : recordings;
  return { log: { version: '1.2', creator: { name: 'mirrorplane', version }, entries: lines.map(toHarEntry) } };
}

function redactPairs(headers: RecordedHeaders, redactor: Redactor): RecordedHeaders {
  return headers.map(([name, value]) => [name, redactor.isSecretHeader(name) ? REDACTED : value]);
}

/** A recorded text body with secret form or JSON fields hidden (lines written before bodies were redacted). */
function redactRecordedBody(headers: RecordedHeaders, b: RecordedBody, redactor: Redactor): RecordedBody {
  if (b.encoding === 'base64' || b.text === '' || pairValue(headers, 'content-encoding') !== null) return b;
  const raw = Buffer.from(b.text, 'utf8');
  const shown = redactor.body(header(headers, 'content-type'), raw);
  return shown === raw ? b : { ...b, text: shown.toString('utf8') };
}

/** A recording line with secret headers, query values and form/JSON body fields hidden. */
export function redactRecording(r: RecordedExchange, redactor: Redactor): RecordedExchange {
  return {
    ...r,
    mirrored: {
      ...r.mirrored,
      target: redactor.target(r.mirrored.target),
      headers: redactPairs(r.mirrored.headers, redactor),
      body: redactRecordedBody(r.mirrored.headers, r.mirrored.body, redactor),
    },
    sent: {
      ...r.sent,
      path: redactor.target(r.sent.path),
      headers: redactPairs(r.sent.headers, redactor),
      body: redactRecordedBody(r.sent.headers, r.sent.body, redactor),
    },
    response: { ...r.response, headers: redactPairs(r.response.headers, redactor), body: redactRecordedBody(r.response.headers, r.response.body, redactor) },
  };
}

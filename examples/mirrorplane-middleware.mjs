// Posts production's answer to each request to Mirrorplane's intake
// (`POST /production-responses` on the ingress admin port), for ID mapping and comparison.
// Works for plain node:http (headers by res.setHeader or by res.writeHead(status, headers))
// and for Express/Connect (app.use). Fire and forget: the client's answer never waits for
// Mirrorplane, and an intake that is down costs one failed fetch, reported to onError.
//
//   import { mirrorplaneResponses } from './mirrorplane-middleware.mjs';
//   const capture = mirrorplaneResponses({ intake: 'http://mirrorplane-ingress:9090/production-responses' });
//   http.createServer((req, res) => { capture(req, res); app(req, res); });   // node:http
//   expressApp.use(capture);                                                    // Express
//
// Only requests carrying x-request-id are posted (that is what correlates the answer with the
// mirror copy). Every answer is posted once: when it finishes, or when the connection closes
// before that (client gone, app destroyed the response). An answer that did not go out whole —
// closed early, or a body over maxBodyBytes (posted cut to maxBodyBytes) — is posted with
// `x-mirrorplane-cut: 1`: the intake then only marks the request answered (nothing learned or
// compared from a partial body), so creates never stay "in flight".
// What is posted is what the client received: every header value as sent (repeats kept), no
// content type the app did not send, no body for HEAD/204/304, and, when a compression
// middleware mounted before this one encodes the bytes this one sees, no Content-Encoding.

import * as zlib from 'node:zlib';

const DEFAULTS = { maxBodyBytes: 1024 * 1024, excludeHeaders: ['set-cookie'] };

function asBuffer(chunk, encoding) {
  if (chunk === undefined || chunk === null || typeof chunk === 'function') return null;
  if (Buffer.isBuffer(chunk)) return chunk;
  if (typeof chunk === 'string') return Buffer.from(chunk, typeof encoding === 'string' ? encoding : 'utf8');
  return Buffer.from(chunk.buffer ?? chunk, chunk.byteOffset ?? 0, chunk.byteLength ?? undefined);
}

/** Headers passed to writeHead: an object, `[name, value, …]`, or `[[name, value], …]`. */
function headerPairs(headers) {
  const out = [];
  if (!headers) return out;
  if (Array.isArray(headers)) {
    if (headers.length > 0 && Array.isArray(headers[0])) for (const [n, v] of headers) out.push([String(n), v]);
    else for (let i = 0; i + 1 < headers.length; i += 2) out.push([String(headers[i]), headers[i + 1]]);
    return out;
  }
  for (const [n, v] of Object.entries(headers)) out.push([n, v]);
  return out;
}

/** True when `body` decodes under the coding `name` (last coding applied); unknown codings count as decoding. */
function decodes(name, body) {
  const decoder = {
    gzip: zlib.gunzipSync,
    'x-gzip': zlib.gunzipSync,
    deflate: (b) => {
      try {
        return zlib.inflateSync(b);
      } catch {
        return zlib.inflateRawSync(b);
      }
    },
    br: zlib.brotliDecompressSync,
  }[name];
  if (!decoder || body.length === 0) return true;
  try {
    decoder(body);
    return true;
  } catch {
    return false;
  }
}

/**
 * Returns `(req, res, next?) => void`. Options: `intake` (URL of the intake, required),
 * `token` (ADMIN_TOKEN when the admin port listens beyond loopback), `maxBodyBytes`
 * (default 1 MiB, as the intake's default), `excludeHeaders` (response headers never sent,
 * default `set-cookie`), `onError(error)` (default: ignore), `fetch` (default globalThis.fetch).
 */
export function mirrorplaneResponses(options) {
  if (!options || typeof options.intake !== 'string') throw new TypeError('mirrorplaneResponses: options.intake (the intake URL) is required');
  const { intake, token, maxBodyBytes, excludeHeaders, onError, fetch: send } = { ...DEFAULTS, onError: () => {}, fetch: globalThis.fetch, ...options };
  const excluded = new Set(excludeHeaders.map((h) => h.toLowerCase()));

  return function capture(req, res, next) {
    const requestId = req.headers['x-request-id'];
    if (typeof requestId !== 'string' || requestId === '') {
      if (typeof next === 'function') next();
      return;
    }
    const chunks = [];
    let size = 0;
    let headHeaders = [];
    const write = res.write;
    const end = res.end;
    const writeHead = res.writeHead;
    const keep = (chunk, encoding) => {
      const b = asBuffer(chunk, encoding);
      if (b === null) return;
      // Up to maxBodyBytes are kept (a longer body is posted cut to that length).
      if (size < maxBodyBytes) chunks.push(size + b.length <= maxBodyBytes ? b : b.subarray(0, maxBodyBytes - size));
      size += b.length;
    };
    // Headers given to writeHead never show in res.getHeaders() when nothing was set before: keep them.
    res.writeHead = function (status, ...rest) {
      const headers = typeof rest[0] === 'string' ? rest[1] : rest[0];
      headHeaders = headerPairs(headers);
      return writeHead.call(this, status, ...rest);
    };
    res.write = function (chunk, encoding, ...rest) {
      keep(chunk, encoding);
      return write.call(this, chunk, encoding, ...rest);
    };
    res.end = function (chunk, encoding, ...rest) {
      keep(chunk, encoding);
      return end.call(this, chunk, encoding, ...rest);
    };
    let posted = false;
    const post = (whole) => {
      if (posted) return;
      posted = true;
      const cut = !whole || size > maxBodyBytes;
      // writeHead's own headers win over setHeader's of the same name, as in node:http; every
      // value of a repeated header is kept, in order.
      const named = new Set(headHeaders.map(([n]) => n.toLowerCase()));
      const pairs = [];
      for (const [n, v] of Object.entries(res.getHeaders())) if (!named.has(n.toLowerCase())) pairs.push([n, v]);
      pairs.push(...headHeaders);
      const flat = [];
      for (const [n, v] of pairs) {
        if (excluded.has(n.toLowerCase()) || v === undefined) continue;
        for (const one of Array.isArray(v) ? v : [v]) flat.push(n.toLowerCase(), String(one));
      }
      // HTTP sends no body for HEAD, 204 and 304 (node:http drops what the app writes).
      const bodyless = req.method === 'HEAD' || res.statusCode === 204 || res.statusCode === 304;
      const body = bodyless ? Buffer.alloc(0) : Buffer.concat(chunks).subarray(0, maxBodyBytes);
      let headersOut = flat;
      // A compression middleware mounted before this one encodes below us: we saw the plain
      // bytes. Post them as what they are, without the Content-Encoding they do not have.
      const coding = headersOut
        .filter((_, i, a) => i % 2 === 1 && a[i - 1] === 'content-encoding')
        .join(',')
        .split(',')
        .map((c) => c.trim().toLowerCase())
        .filter((c) => c !== '' && c !== 'identity')
        .pop();
      if (coding && !cut && !decodes(coding, body))
        headersOut = headersOut.filter((_, i, a) => {
          const name = i % 2 === 0 ? a[i] : a[i - 1];
          return name !== 'content-encoding' && name !== 'content-length';
        });
      const headers = {
        'x-mirrorplane-request-id': requestId,
        'x-mirrorplane-status': String(res.statusCode),
        'x-mirrorplane-method': req.method,
        'x-mirrorplane-path': req.originalUrl ?? req.url,
        'x-mirrorplane-headers': JSON.stringify(headersOut),
      };
      // The upload is labelled with production's content type when it had one; none is invented.
      const contentType = headersOut.find((_, i, a) => i % 2 === 1 && a[i - 1] === 'content-type');
      if (contentType !== undefined) headers['content-type'] = contentType;
      if (cut) headers['x-mirrorplane-cut'] = '1';
      if (token) headers.authorization = `Bearer ${token}`;
      if (cut)
        onError(
          new Error(
            `mirrorplane: production answer to ${requestId} posted cut: ${whole ? `body over ${maxBodyBytes} bytes` : 'the response closed before it finished'}`,
          ),
        );
      // Fire and forget: production's answer never waits for Mirrorplane.
      send(intake, { method: 'POST', headers, body }).then(async (answer) => {
        if (answer.status !== 204) onError(new Error(`mirrorplane intake answered ${answer.status}: ${(await answer.text()).trim()}`));
        else await answer.arrayBuffer();
      }, onError);
    };
    res.once('finish', () => post(true));
    // 'close' also follows 'finish'; post() runs once, so only a response that never finished posts here.
    res.once('close', () => post(res.writableFinished));
    if (typeof next === 'function') next();
  };
}

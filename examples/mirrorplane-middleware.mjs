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
// mirror copy). Bodies over maxBodyBytes are not posted (the intake would refuse them).

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
      size += b.length;
      if (size <= maxBodyBytes) chunks.push(b);
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
    res.once('finish', () => {
      if (size > maxBodyBytes) {
        onError(new Error(`mirrorplane: production answer to ${requestId} not posted: body over ${maxBodyBytes} bytes`));
        return;
      }
      // res.getHeaders() has what setHeader set; writeHead's own headers win over them, as in node:http.
      const byName = new Map();
      for (const [n, v] of Object.entries(res.getHeaders())) byName.set(n.toLowerCase(), [n, v]);
      for (const [n, v] of headHeaders) byName.set(n.toLowerCase(), [n, v]);
      const flat = [];
      for (const [lower, [n, v]] of byName) {
        if (excluded.has(lower) || v === undefined) continue;
        for (const one of Array.isArray(v) ? v : [v]) flat.push(n.toLowerCase(), String(one));
      }
      const contentType = byName.get('content-type')?.[1];
      const headers = {
        'x-mirrorplane-request-id': requestId,
        'x-mirrorplane-status': String(res.statusCode),
        'x-mirrorplane-method': req.method,
        'x-mirrorplane-path': req.originalUrl ?? req.url,
        'x-mirrorplane-headers': JSON.stringify(flat),
        'content-type': contentType === undefined ? 'application/octet-stream' : String(Array.isArray(contentType) ? contentType[0] : contentType),
      };
      if (token) headers.authorization = `Bearer ${token}`;
      // Fire and forget: production's answer never waits for Mirrorplane.
      send(intake, { method: 'POST', headers, body: Buffer.concat(chunks, size) }).then(
        async (answer) => {
          if (answer.status !== 204) onError(new Error(`mirrorplane intake answered ${answer.status}: ${(await answer.text()).trim()}`));
          else await answer.arrayBuffer();
        },
        onError,
      );
    });
    if (typeof next === 'function') next();
  };
}

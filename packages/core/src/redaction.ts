import { z } from 'zod';
import { isFormMediaType, isJsonMediaType } from './content-type.js';
import { MIRRORPLANE_TOKEN_HEADER } from './headers.js';
import { HTTP_TOKEN } from './http-token.js';
import { decodeQueryComponent } from './percent-decoding.js';

/**
 * Redaction: what is obviously secret in a mirrored request, and the one place that hides it
 * wherever a human or a file can read it (logs, recordings, HAR, diff records, `failed list`,
 * the dashboard, error messages). What staging receives is never redacted: replays stay byte-exact.
 *
 * A header is secret by name (its whole value is replaced); a query parameter is secret by
 * name (its value is replaced, the name stays so the shape of the request can be read).
 * Names compare case-insensitively. Besides the lists, a name is secret by its shape
 * (`SECRET_HEADER_SHAPE`, `SECRET_PARAM_SHAPE`: `*_token`, `*_secret`, `*_key`, `password*`…),
 * unless `redact.keep` names it. A query parameter's name is read percent-decoded and without
 * array brackets (`token[]`, `token%5B%5D`, `token[0]` are `token`); parameters are split on `&`
 * and `;`, in the query and in the fragment. The userinfo of an absolute URL (`user:pass@`) is
 * always hidden. Bodies: a form (`application/x-www-form-urlencoded`) or JSON body has the
 * values of secret-named fields hidden in recordings and HAR (`Redactor.body`).
 */

/** Header names secret by their shape: a word token, secret, password, credential(s) or signature anywhere (`x-foo-token`, `x-secret-key`, `AWS_SECRET_ACCESS_KEY`), or ending in api-key, access-key or private-key. */
export const SECRET_HEADER_SHAPE =
  /(?:^|[-_])(?:token|secret|password|passwd|credentials?|signature)(?:$|[-_])|(?:^|[-_])(?:api[-_]?key|apikey|access[-_]?key|private[-_]?key)$/;
/**
 * Query parameter and body field names secret by their shape: `*_token`, `*_secret`, `*_key`,
 * `*_password`, `password*`, `*_signature`, `*_credential(s)` (`_`, `-` or `.` before the
 * suffix); `token`, `secret`, `password` also without a separator (`accessToken`, `clientSecret`).
 */
export const SECRET_PARAM_SHAPE = /(?:^|[-_.])(?:key|pwd|signature|credentials?)$|^pass(?:word|wd)|(?:token|secret|password|passwd)$/;

/** The text that replaces a secret value. */
export const REDACTED = '[redacted]';

/** Headers that carry credentials in common use; their values are never shown. */
export const DEFAULT_REDACTED_HEADERS: readonly string[] = Object.freeze([
  'authorization',
  'proxy-authorization',
  'cookie',
  'set-cookie',
  'x-api-key',
  'api-key',
  'x-auth-token',
  'x-access-token',
  'x-refresh-token',
  'x-session-token',
  'x-csrf-token',
  'x-xsrf-token',
  'x-amz-security-token',
  'x-goog-api-key',
  'x-functions-key',
  'ocp-apim-subscription-key',
  MIRRORPLANE_TOKEN_HEADER,
]);

/** Query parameters that carry credentials in common use (OAuth, signed URLs, API keys). */
export const DEFAULT_REDACTED_QUERY_PARAMS: readonly string[] = Object.freeze([
  'token',
  'access_token',
  'private_token',
  'auth_token',
  'api_token',
  'session_token',
  'csrf_token',
  'xsrf_token',
  'client_assertion',
  'assertion',
  'otp',
  'passcode',
  'credentials',
  'refresh_token',
  'id_token',
  'auth',
  'api_key',
  'apikey',
  'api-key',
  'key',
  'secret',
  'client_secret',
  'password',
  'passwd',
  'pwd',
  'signature',
  'sig',
  'code',
  'session',
  'sessionid',
  'x-amz-signature',
  'x-amz-credential',
  'x-amz-security-token',
  'x-goog-signature',
  'x-goog-credential',
]);

/** The config file's `redact:` block: extends the defaults, or turns some off. */
export const RedactOptions = z.strictObject({
  /** More header names to redact, on top of the defaults. */
  headers: z.array(z.string().regex(HTTP_TOKEN, 'expected a header name')).optional(),
  /** More query parameter names to redact, on top of the defaults. */
  queryParams: z.array(z.string().min(1, 'expected a query parameter name').max(256)).optional(),
  /** Default header or query parameter names to show after all (e.g. `code` when it is a product code). */
  keep: z.array(z.string().min(1).max(256)).optional(),
});
export type RedactOptions = z.infer<typeof RedactOptions>;

/** The validated redaction lists: lower-case names. */
export interface RedactionSettings {
  readonly headers: readonly string[];
  readonly queryParams: readonly string[];
  /** Names shown after all, even when their shape looks secret (`redact.keep`). */
  readonly keep?: readonly string[];
}

/**
 * The lists in force: the defaults (or `legacyHeaders`, the older `redactHeaders` key, which
 * replaces the default header list), plus `options` additions, minus `options.keep`.
 */
export function redactionSettings(options: RedactOptions | undefined, legacyHeaders?: readonly string[]): RedactionSettings {
  const keep = new Set((options?.keep ?? []).map((n) => n.toLowerCase()));
  const lower = (names: readonly string[]) => [...new Set(names.map((n) => n.toLowerCase()))].filter((n) => !keep.has(n));
  return Object.freeze({
    headers: Object.freeze(lower([...(legacyHeaders ?? DEFAULT_REDACTED_HEADERS), ...(options?.headers ?? [])])),
    queryParams: Object.freeze(lower([...DEFAULT_REDACTED_QUERY_PARAMS, ...(options?.queryParams ?? [])])),
    keep: Object.freeze([...keep]),
  });
}

/** Node's and Mirrorplane's error codes (`ERR_TLS_CERT_ALTNAME_INVALID`, `MP_ERR_STAGING_TRANSPORT`). */
const ERROR_CODE_NAME = /^(?:MP_)?ERR_[A-Z0-9_]+$/;

/** The X.509 verification codes OpenSSL reports and node passes on as `error.code` (node's crypto_common.cc). */
const OPENSSL_VERIFY_CODES: ReadonlySet<string> = new Set([
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_CRL',
  'UNABLE_TO_DECRYPT_CERT_SIGNATURE',
  'UNABLE_TO_DECRYPT_CRL_SIGNATURE',
  'UNABLE_TO_DECODE_ISSUER_PUBLIC_KEY',
  'CERT_SIGNATURE_FAILURE',
  'CRL_SIGNATURE_FAILURE',
  'CERT_NOT_YET_VALID',
  'CERT_HAS_EXPIRED',
  'CRL_NOT_YET_VALID',
  'CRL_HAS_EXPIRED',
  'ERROR_IN_CERT_NOT_BEFORE_FIELD',
  'ERROR_IN_CERT_NOT_AFTER_FIELD',
  'ERROR_IN_CRL_LAST_UPDATE_FIELD',
  'ERROR_IN_CRL_NEXT_UPDATE_FIELD',
  'OUT_OF_MEM',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'CERT_CHAIN_TOO_LONG',
  'CERT_REVOKED',
  'INVALID_CA',
  'PATH_LENGTH_EXCEEDED',
  'INVALID_PURPOSE',
  'CERT_UNTRUSTED',
  'CERT_REJECTED',
  'HOSTNAME_MISMATCH',
]);

/**
 * Hides secrets in what people read. Built once per process from the settings; every method
 * is pure and never throws.
 */
export class Redactor {
  readonly headerNames: ReadonlySet<string>;
  readonly queryNames: ReadonlySet<string>;
  readonly #keep: ReadonlySet<string>;
  /** Whether shapes apply: an empty list (redaction turned off entirely) turns them off too. */
  readonly #shapes: boolean;
  /** `Name: value` of a secret header inside free text; any header-like name, checked by `isSecretHeader`. */
  readonly #quotedHeader = /(?<![A-Za-z0-9!#$%&'*+.^_`|~-])([A-Za-z][A-Za-z0-9_-]{0,63})[ \t]*:[ \t]*/g;

  /**
   * Whether the value after `Name:` in free text is hidden (see `text`): an error code before its
   * message (`ERR_…`, `MP_ERR_…`, an OpenSSL verify code such as UNABLE_TO_VERIFY_LEAF_SIGNATURE)
   * is not a header and keeps its message, unless configured as a header name; any other name is
   * judged by `isSecretHeader` (so `DB_PASSWORD: …` stays hidden).
   */
  #quotedHeaderIsSecret(name: string): boolean {
    if (ERROR_CODE_NAME.test(name) || OPENSSL_VERIFY_CODES.has(name)) return this.headerNames.has(name.toLowerCase());
    return this.isSecretHeader(name);
  }

  constructor(settings: RedactionSettings) {
    this.headerNames = new Set(settings.headers);
    this.queryNames = new Set(settings.queryParams);
    this.#keep = new Set(settings.keep ?? []);
    this.#shapes = settings.headers.length + settings.queryParams.length > 0;
  }

  /** Whether a header's value is hidden: by the list, or by its shape (not in `keep`). */
  isSecretHeader(name: string): boolean {
    const n = name.toLowerCase();
    return this.headerNames.has(n) || (this.#shapes && !this.#keep.has(n) && SECRET_HEADER_SHAPE.test(n));
  }

  /** Whether a query parameter's or body field's value is hidden (`name` as written: decoded, brackets dropped here). */
  isSecretParam(name: string): boolean {
    const n = decodeName(name).replace(/(\[[^\]]*\])+$/, '');
    if (this.queryNames.has(n)) return true;
    return this.#shapes && !this.#keep.has(n) && SECRET_PARAM_SHAPE.test(n);
  }

  /** A copy of flat `[name, value, …]` headers with secret values replaced. */
  headers(rawHeaders: readonly string[]): string[] {
    const out = rawHeaders.slice();
    for (let i = 0; i < out.length; i += 2) {
      if (this.isSecretHeader(out[i] as string)) out[i + 1] = REDACTED;
    }
    return out;
  }

  /** A copy of a header object (`{ name: value | value[] }`) with secret values replaced. */
  headerObject<T>(headers: Readonly<Record<string, T>>): Record<string, T | string> {
    const out: Record<string, T | string> = {};
    for (const [name, value] of Object.entries(headers)) out[name] = this.isSecretHeader(name) ? REDACTED : value;
    return out;
  }

  /**
   * A request-target (`/path?query#fragment`, or an absolute URL) with the userinfo of an
   * absolute URL hidden and the values of secret parameters replaced, in the query and in the
   * fragment (split on `&` and `;`); everything else byte for byte.
   */
  target(target: string): string {
    let out = target.replace(/^([A-Za-z][A-Za-z0-9+.-]*:\/\/)([^/?#@\s]*)@/, (_w, scheme: string) => `${scheme}${REDACTED}@`);
    const q = out.indexOf('?');
    const hash = out.indexOf('#');
    const queryStart = q >= 0 && (hash < 0 || q < hash) ? q : -1;
    if (queryStart < 0 && hash < 0) return out;
    const head = out.slice(0, queryStart >= 0 ? queryStart : hash);
    const query = queryStart >= 0 ? out.slice(queryStart, hash < 0 ? undefined : hash) : '';
    const fragment = hash >= 0 ? out.slice(hash) : '';
    out = `${head}${query && `?${this.params(query.slice(1))}`}${fragment && `#${this.params(fragment.slice(1))}`}`;
    return out;
  }

  /** `name=value` pairs separated by `&` or `;` (a query, a fragment, a form body) with secret values replaced. */
  params(text: string): string {
    return text.replace(/(^|[&;])([^&;=]*)=([^&;]*)/g, (whole, sep: string, name: string) => (this.isSecretParam(name) ? `${sep}${name}=${REDACTED}` : whole));
  }

  /**
   * A body as recordings and HAR show it: a form body (`application/x-www-form-urlencoded`)
   * with the values of secret-named fields replaced, a JSON body (`isJsonMediaType`:
   * `application/json`, `text/json`, `*+json`) with the values of secret-named members replaced at any depth; anything else unchanged.
   * Never throws: JSON that does not parse is shown through `text`.
   */
  body(contentType: string | undefined, body: Buffer): Buffer {
    if (isFormMediaType(contentType)) {
      const text = body.toString('latin1');
      const out = this.params(text);
      return out === text ? body : Buffer.from(out, 'latin1');
    }
    if (isJsonMediaType(contentType)) {
      const text = body.toString('utf8');
      let out: string;
      try {
        out = JSON.stringify(this.#json(JSON.parse(text), 0));
      } catch {
        // Not JSON as a whole (cut by a body limit, say): redacted as text when it is text.
        if (!Buffer.from(text, 'utf8').equals(body)) return body;
        out = this.text(text);
      }
      return out === text || !this.#jsonChanged(text, out) ? body : Buffer.from(out, 'utf8');
    }
    return body;
  }

  #jsonChanged(before: string, after: string): boolean {
    try {
      return JSON.stringify(JSON.parse(before)) !== after;
    } catch {
      return before !== after;
    }
  }

  #json(value: unknown, depth: number): unknown {
    if (depth > 64 || value === null || typeof value !== 'object') return value;
    if (Array.isArray(value)) return value.map((v) => this.#json(v, depth + 1));
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value)) {
      out[k] = (this.isSecretParam(k) || this.isSecretHeader(k)) && v !== null && typeof v !== 'object' ? REDACTED : this.#json(v, depth + 1);
    }
    return out;
  }

  /**
   * Free text that may quote a request (an error message, a job name): every URL in it (by
   * `target`), every `name=value` (bare, `"quoted"` or `'quoted'`) and JSON `"name": "value"`
   * whose name is secret, and every `Name: value` of a secret header (cookie lists joined by a
   * comma included), is hidden. An error code before a colon (`ERR_…`, `MP_ERR_…`, an OpenSSL
   * verify code: `UNABLE_TO_VERIFY_LEAF_SIGNATURE: unable to verify…`) is not a header: it hides
   * what follows only when it is a configured header name.
   */
  text(text: string): string {
    let out = text;
    if (out.includes('://')) out = out.replace(/[A-Za-z][A-Za-z0-9+.-]*:\/\/[^\s"'<>`]+/g, (url) => this.target(url));
    if (out.includes('=')) {
      out = out.replace(/(^|[?&;,\s({[])([^=&?#\s;,"'(){}[\]]{1,256})=("[^"]*"|'[^']*'|[^&#\s"',;)]*)/g, (whole, lead: string, name: string, value: string) => {
        if (!this.isSecretParam(name)) return whole;
        const q = value.startsWith('"') || value.startsWith("'") ? value[0] : '';
        return `${lead}${name}=${q}${REDACTED}${q}`;
      });
    }
    if (out.includes('"')) {
      out = out.replace(/"((?:[^"\\]|\\.){1,256})"(\s*:\s*)"((?:[^"\\]|\\.)*)"/g, (whole, name: string, colon: string) =>
        this.isSecretParam(name) || this.isSecretHeader(name) ? `"${name}"${colon}"${REDACTED}"` : whole,
      );
    }
    if (out.includes(':')) {
      // Names found one by one; a secret one's value runs to the line's end, a `"`, or a comma
      // not followed by a cookie-like `name=` (Set-Cookie values joined by a comma).
      const head = this.#quotedHeader;
      const value = /(?:[^\r\n,"]|,(?=[ \t]*[^\s=,:;"]+=))*/y;
      let result = '';
      let from = 0;
      head.lastIndex = 0;
      for (let m = head.exec(out); m !== null; m = head.exec(out)) {
        const end = m.index + m[0].length;
        if (!this.#quotedHeaderIsSecret(m[1] as string)) continue;
        value.lastIndex = end;
        const v = value.exec(out)?.[0] ?? '';
        if (v.trim() === '' || v.trim() === REDACTED) continue;
        result += `${out.slice(from, end)}${REDACTED}`;
        from = end + v.length;
        head.lastIndex = from;
      }
      out = result + out.slice(from);
    }
    return out;
  }
}

/** A query parameter's name as compared: decoded tolerantly (a bad escape elsewhere keeps the rest readable), lower case. */
function decodeName(raw: string): string {
  return decodeQueryComponent(raw).toLowerCase();
}

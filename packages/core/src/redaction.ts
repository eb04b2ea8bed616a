import { z } from 'zod';
import { HTTP_TOKEN } from './http-token.js';

/**
 * Redaction: what is obviously secret in a mirrored request, and the one place that hides it
 * wherever a human or a file can read it (logs, recordings, HAR, diff records, `failed list`,
 * the dashboard, error messages). What staging receives is never redacted: replays stay byte-exact.
 *
 * A header is secret by name (its whole value is replaced); a query parameter is secret by
 * name (its value is replaced, the name stays so the shape of the request can be read).
 * Names compare case-insensitively.
 */

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
  'x-mirrorplane-token',
]);

/** Query parameters that carry credentials in common use (OAuth, signed URLs, API keys). */
export const DEFAULT_REDACTED_QUERY_PARAMS: readonly string[] = Object.freeze([
  'token',
  'access_token',
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
  });
}

/**
 * Hides secrets in what people read. Built once per process from the settings; every method
 * is pure and never throws.
 */
export class Redactor {
  readonly headerNames: ReadonlySet<string>;
  readonly queryNames: ReadonlySet<string>;
  /** `Name: value` of a secret header inside free text; one alternation of literal names. */
  readonly #quotedHeader: RegExp | null;

  constructor(settings: RedactionSettings) {
    this.headerNames = new Set(settings.headers);
    this.queryNames = new Set(settings.queryParams);
    const names = settings.headers.map((n) => n.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'));
    this.#quotedHeader = names.length === 0 ? null : new RegExp(`(^|[^A-Za-z0-9!#$%&'*+.^_\`|~-])(${names.join('|')})([ \t]*:[ \t]*)[^\r\n,"]*`, 'gi');
  }

  /** A copy of flat `[name, value, …]` headers with secret values replaced. */
  headers(rawHeaders: readonly string[]): string[] {
    const out = rawHeaders.slice();
    for (let i = 0; i < out.length; i += 2) {
      if (this.headerNames.has((out[i] as string).toLowerCase())) out[i + 1] = REDACTED;
    }
    return out;
  }

  /** A copy of a header object (`{ name: value | value[] }`) with secret values replaced. */
  headerObject<T>(headers: Readonly<Record<string, T>>): Record<string, T | string> {
    const out: Record<string, T | string> = {};
    for (const [name, value] of Object.entries(headers)) out[name] = this.headerNames.has(name.toLowerCase()) ? REDACTED : value;
    return out;
  }

  /**
   * A request-target (`/path?query`, or an absolute URL) with the values of secret query
   * parameters replaced; everything else byte for byte. A parameter name is compared after
   * percent-decoding, so `%74oken=` is caught too.
   */
  target(target: string): string {
    const q = target.indexOf('?');
    if (q < 0 || this.queryNames.size === 0) return target;
    const hash = target.indexOf('#', q);
    const query = target.slice(q + 1, hash < 0 ? undefined : hash);
    let changed = false;
    const parts = query.split('&').map((part) => {
      const eq = part.indexOf('=');
      const rawName = eq < 0 ? part : part.slice(0, eq);
      if (!this.queryNames.has(decodeName(rawName))) return part;
      if (eq < 0) return part;
      changed = true;
      return `${rawName}=${REDACTED}`;
    });
    if (!changed) return target;
    return `${target.slice(0, q + 1)}${parts.join('&')}${hash < 0 ? '' : target.slice(hash)}`;
  }

  /**
   * Free text that may quote a request (an error message, a job name): every URL-like
   * `name=value` whose name is secret, and every `Name: value` of a secret header, is hidden.
   */
  text(text: string): string {
    let out = text;
    if (this.queryNames.size > 0 && out.includes('=')) {
      out = out.replace(/([?&;\s]|^)([^=&?#\s;"']{1,256})=([^&#\s"']*)/g, (whole, lead: string, name: string) =>
        this.queryNames.has(decodeName(name)) ? `${lead}${name}=${REDACTED}` : whole);
    }
    if (this.#quotedHeader !== null && out.includes(':')) {
      out = out.replace(this.#quotedHeader, (_whole, lead: string, name: string, colon: string) => `${lead}${name}${colon}${REDACTED}`);
    }
    return out;
  }
}

function decodeName(raw: string): string {
  try {
    return decodeURIComponent(raw.replace(/\+/g, ' ')).toLowerCase();
  } catch {
    return raw.toLowerCase();
  }
}

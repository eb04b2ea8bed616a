import { headerValue } from './headers.js';

/**
 * What counts as JSON, decided once for rules, ID mapping and comparison: a media type whose
 * subtype is `json` (`application/json`, `text/json`) or ends in `+json` (RFC 6839:
 * `application/problem+json`), whatever its parameters (`; charset=utf-8`) and case.
 */
export function isJsonMediaType(contentType: string | null | undefined): boolean {
  if (!contentType) return false;
  const semi = contentType.indexOf(';');
  const media = (semi === -1 ? contentType : contentType.slice(0, semi)).trim().toLowerCase();
  const slash = media.indexOf('/');
  if (slash <= 0) return false;
  const subtype = media.slice(slash + 1);
  return subtype === 'json' || (subtype.endsWith('+json') && subtype.length > '+json'.length);
}

/** Whether raw `[name, value, …]` headers declare a JSON body (the first `content-type` decides). */
export function hasJsonBody(rawHeaders: readonly string[]): boolean {
  return isJsonMediaType(headerValue(rawHeaders, 'content-type'));
}

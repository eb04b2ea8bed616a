import { headerValue } from './headers.js';

/**
 * What counts as JSON, decided once for rules, ID mapping, comparison, redaction and the dashboard: a media type whose
 * subtype is `json` (`application/json`, `text/json`) or ends in `+json` (RFC 6839:
 * `application/problem+json`), whatever its parameters (`; charset=utf-8`) and case.
 */
export function isJsonMediaType(contentType: string | null | undefined): boolean {
  const media = mediaType(contentType);
  const slash = media.indexOf('/');
  if (slash <= 0) return false;
  const subtype = media.slice(slash + 1);
  return subtype === 'json' || (subtype.endsWith('+json') && subtype.length > '+json'.length);
}

/** The media type of a Content-Type value, lower case, without parameters or spaces; '' when none. */
export function mediaType(contentType: string | null | undefined): string {
  if (!contentType) return '';
  const semi = contentType.indexOf(';');
  return (semi === -1 ? contentType : contentType.slice(0, semi)).trim().toLowerCase();
}

/** Whether a Content-Type is a url-encoded form (`application/x-www-form-urlencoded`, any case and parameters). */
export function isFormMediaType(contentType: string | null | undefined): boolean {
  return mediaType(contentType) === 'application/x-www-form-urlencoded';
}

/** Whether raw `[name, value, …]` headers declare a JSON body (the first `content-type` decides). */
export function hasJsonBody(rawHeaders: readonly string[]): boolean {
  return isJsonMediaType(headerValue(rawHeaders, 'content-type'));
}

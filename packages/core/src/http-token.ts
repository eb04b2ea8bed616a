/**
 * HTTP tokens (RFC 9110 §5.6.2): the characters a method or a header field name is made of.
 * One definition for config schemas, the entry codec, rules and the ingress.
 */

/** The character class of a token character, for building larger patterns (`header:<token>`). */
export const TOKEN_CHARS = "[!#$%&'*+\\-.^_`|~0-9A-Za-z]";

/** A whole string that is one token: a method (`GET`) or a header name (`x-request-id`). */
export const HTTP_TOKEN = new RegExp(`^${TOKEN_CHARS}+$`);

/** A byte table: 1 for the bytes a token is made of, 0 for the others (for parsers reading bytes). */
export const TOKEN_BYTES: Readonly<Uint8Array> = (() => {
  const table = new Uint8Array(256);
  const one = new RegExp(`^${TOKEN_CHARS}$`);
  for (let b = 0; b < 128; b++) if (one.test(String.fromCharCode(b))) table[b] = 1;
  return table;
})();

/** Whether `text` is a non-empty HTTP token. */
export function isHttpToken(text: string): boolean {
  return HTTP_TOKEN.test(text);
}

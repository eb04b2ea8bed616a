/**
 * Tolerant percent-decoding for what arrives in mirrored requests (paths, query strings, URL
 * user-info). `decodeURIComponent` throws on a malformed escape (`%zz`, a lone `%`, bytes that
 * are not UTF-8); a mirrored request must still replay, so here every valid escape is decoded
 * and every malformed one is passed through as written. These functions never throw.
 */

/** Runs of `%XX` escapes; each run is decoded as one UTF-8 byte sequence when it can be. */
const ESCAPE_RUN = /(?:%[0-9A-Fa-f]{2})+/g;

/** The length in bytes of the UTF-8 sequence a lead byte opens (1 for a byte that opens none). */
function sequenceLength(lead: number): number {
  if (lead >= 0xc2 && lead <= 0xdf) return 2;
  if (lead >= 0xe0 && lead <= 0xef) return 3;
  if (lead >= 0xf0 && lead <= 0xf4) return 4;
  return 1;
}

function decodeRun(run: string): string {
  try {
    return decodeURIComponent(run);
  } catch {
    // Some bytes of the run are not UTF-8: decode sequence by sequence, keep the bad ones as written.
  }
  let out = '';
  let i = 0;
  while (i < run.length) {
    const seq = run.slice(i, i + 3 * sequenceLength(Number.parseInt(run.slice(i + 1, i + 3), 16)));
    try {
      out += decodeURIComponent(seq);
      i += seq.length;
    } catch {
      out += run.slice(i, i + 3);
      i += 3;
    }
  }
  return out;
}

/**
 * Percent-decodes a URI component (`%41` → `A`, `%C3%A9` → `é`); a malformed escape (`%zz`,
 * a trailing `%`, `%FF`) stays in the result as written. Never throws.
 */
export function decodeUriComponentTolerant(text: string): string {
  return text.includes('%') ? text.replace(ESCAPE_RUN, decodeRun) : text;
}

/** Decodes an `application/x-www-form-urlencoded` name or value: `+` is a space, then as `decodeUriComponentTolerant`. */
export function decodeFormComponent(text: string): string {
  return decodeUriComponentTolerant(text.includes('+') ? text.replace(/\+/g, ' ') : text);
}

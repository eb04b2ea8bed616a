import { RE2JS } from 're2js';
import { LinearRegexSyntaxError } from './errors.js';

/**
 * Regular expressions from the config file (rules, ID mapping) run on request data an
 * attacker chooses: paths, headers, query strings. JavaScript's engine backtracks, so a
 * pattern like `^/files/([a-z0-9]+-?)*\.txt$` costs 2^n steps on a crafted 40-byte path and
 * freezes the worker's event loop. These patterns run on RE2 instead (re2js, a pure-JS port of
 * RE2): time linear in the input, whatever the pattern. RE2 has no backreferences and no
 * lookaround: a pattern that uses them is refused at config load, naming the rule and pattern.
 *
 * Why re2js rather than the `re2` native bindings: `re2`'s install downloads a prebuilt binary
 * from GitHub or falls back to node-gyp, which itself downloads Node's headers; on a fresh
 * machine that reaches only the npm registry neither works. re2js installs as plain files.
 */

/**
 * RE2 is linear in the input, but each input character costs up to the size of the compiled
 * program (its instruction count): `(.*a){999}` compiles to ~5000 instructions and costs
 * seconds on an 8 KB path. Two bounds keep a match's cost independent of the attacker:
 *
 * - at load, a pattern whose program exceeds `MAX_PROGRAM_SIZE` instructions is refused
 *   (LinearRegexSyntaxError; config load names the rule and the pattern);
 * - per match, program size × input length (UTF-16 units) may not exceed `MAX_MATCH_COST`
 *   (about 50 ms on one core at worst): a longer input is not matched (`test` false, `exec`
 *   null) and is counted (`LinearRegExp.skipped`, `linearRegexSkips()`). With a typical
 *   program (20-60 instructions) that is inputs of 16 000 to 50 000 characters.
 */
export const MAX_PROGRAM_SIZE = 1000;
export const MAX_MATCH_COST = 1_000_000;

let skips = 0;
/** Matches not run in this process because the input was too long for the pattern's program (see MAX_MATCH_COST). */
export function linearRegexSkips(): number {
  return skips;
}

/** A match, shaped like `RegExpExecArray` for what callers read: `[0]`, `[n]`, `index`, `groups`, `indices`. */
export interface LinearMatch extends Array<string | undefined> {
  0: string;
  index: number;
  input: string;
  groups: Record<string, string | undefined> | undefined;
  /** Start and end of the whole match and each group (like the `d` flag), by number and by name. */
  indices: { [n: number]: [number, number] | undefined; groups: Record<string, [number, number] | undefined> | undefined };
}

/** A compiled pattern with the `RegExp` methods our stages use, in linear time. */
export class LinearRegExp {
  readonly source: string;
  readonly #re: RE2JS;
  readonly #names: readonly (readonly [string, number])[];
  readonly groupCount: number;
  /** Instructions in the compiled program (at most MAX_PROGRAM_SIZE). */
  readonly programSize: number;
  /** The longest input (UTF-16 units) a match runs on: MAX_MATCH_COST / programSize. */
  readonly maxInputLength: number;
  /** Inputs not matched because they were longer than `maxInputLength`. */
  skipped = 0;

  /** @throws LinearRegexSyntaxError naming the unsupported feature, the syntax error, or a program over MAX_PROGRAM_SIZE. */
  constructor(source: string) {
    this.source = source;
    // Valid JavaScript first, so the message for a typo is the one people know.
    try {
      new RegExp(source);
    } catch (error) {
      throw new LinearRegexSyntaxError(`not a valid regular expression: ${(error as Error).message}`);
    }
    const unsupported = unsupportedFeature(source);
    if (unsupported !== null)
      throw new LinearRegexSyntaxError(`${unsupported} cannot run in linear time on request data (rules run on RE2); rewrite the pattern without it`);
    try {
      this.#re = RE2JS.compile(RE2JS.translateRegExp(source));
    } catch (error) {
      throw new LinearRegexSyntaxError(`not supported by the linear-time engine (RE2): ${(error as Error).message}`);
    }
    this.programSize = this.#re.programSize();
    if (this.programSize > MAX_PROGRAM_SIZE) {
      throw new LinearRegexSyntaxError(
        `compiles to ${this.programSize} instructions, more than ${MAX_PROGRAM_SIZE}: its cost per byte of request data would be too high (large counted repetitions like {999} multiply the pattern); write a smaller pattern`,
      );
    }
    this.maxInputLength = Math.floor(MAX_MATCH_COST / Math.max(1, this.programSize));
    this.groupCount = this.#re.groupCount();
    this.#names = Object.entries(this.#re.namedGroups() as Record<string, number>);
  }

  /** Whether the pattern matches; false (counted) for an input longer than `maxInputLength`. */
  test(input: string): boolean {
    if (this.#tooLong(input)) return false;
    return this.#re.matcher(input).find();
  }

  #tooLong(input: string): boolean {
    if (input.length <= this.maxInputLength) return false;
    this.skipped++;
    skips++;
    return true;
  }

  /** The first match, or null (also, counted, for an input longer than `maxInputLength`). */
  exec(input: string): LinearMatch | null {
    if (this.#tooLong(input)) return null;
    const m = this.#re.matcher(input);
    if (!m.find()) return null;
    const out = [] as unknown as LinearMatch;
    const indices: LinearMatch['indices'] = { groups: undefined };
    for (let g = 0; g <= this.groupCount; g++) {
      const start = m.start(g);
      const group = start < 0 ? undefined : (m.group(g) ?? undefined);
      out.push(group);
      indices[g] = start < 0 ? undefined : [start, m.end(g)];
    }
    out.index = m.start(0);
    out.input = input;
    if (this.#names.length > 0) {
      out.groups = {};
      indices.groups = {};
      for (const [name, n] of this.#names) {
        out.groups[name] = out[n];
        indices.groups[name] = indices[n];
      }
    } else {
      out.groups = undefined;
    }
    out.indices = indices;
    return out;
  }
}

/** The first JavaScript-only feature a pattern uses that RE2 lacks, or null. */
function unsupportedFeature(source: string): string | null {
  let inClass = false;
  for (let i = 0; i < source.length; i++) {
    const c = source[i];
    if (c === '\\') {
      const next = source[i + 1] ?? '';
      if (!inClass && /[1-9]/.test(next)) return `a backreference (\\${next})`;
      if (!inClass && next === 'k' && source[i + 2] === '<') return 'a named backreference (\\k<…>)';
      i++;
      continue;
    }
    if (inClass) {
      if (c === ']') inClass = false;
      continue;
    }
    if (c === '[') inClass = true;
    else if (c === '(' && source[i + 1] === '?') {
      const kind = source.slice(i + 2, i + 4);
      if (kind.startsWith('=') || kind.startsWith('!')) return `a lookahead ${JSON.stringify(source.slice(i, i + 3))}`;
      if (kind === '<=' || kind === '<!') return `a lookbehind ${JSON.stringify(source.slice(i, i + 4))}`;
    }
  }
  return null;
}

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

  /** @throws LinearRegexSyntaxError naming the unsupported feature or the syntax error. */
  constructor(source: string) {
    this.source = source;
    // Valid JavaScript first, so the message for a typo is the one people know.
    try {
      new RegExp(source);
    } catch (error) {
      throw new LinearRegexSyntaxError(`not a valid regular expression: ${(error as Error).message}`);
    }
    const unsupported = unsupportedFeature(source);
    if (unsupported !== null) throw new LinearRegexSyntaxError(`${unsupported} cannot run in linear time on request data (rules run on RE2); rewrite the pattern without it`);
    try {
      this.#re = RE2JS.compile(RE2JS.translateRegExp(source));
    } catch (error) {
      throw new LinearRegexSyntaxError(`not supported by the linear-time engine (RE2): ${(error as Error).message}`);
    }
    this.groupCount = this.#re.groupCount();
    this.#names = Object.entries(this.#re.namedGroups() as Record<string, number>);
  }

  test(input: string): boolean {
    return this.#re.matcher(input).find();
  }

  /** The first match, or null. */
  exec(input: string): LinearMatch | null {
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

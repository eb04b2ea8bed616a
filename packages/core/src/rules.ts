import { isUtf8 } from 'node:buffer';
import { JsonPathSyntaxError, RuleCompileError, RuleError, TemplateSyntaxError, type RuleIssue } from './errors.js';
import { decodeBody, withoutContentCoding } from './content-coding.js';
import { hasJsonBody } from './content-type.js';
import { forEachHeader, headerValue, headerValues, someHeader, stripShadowSuffix, withoutHeaders } from './headers.js';
import { parseJsonPath, removeJsonPath, setJsonPath, type JsonPath } from './json-path.js';
import { LinearRegExp, type LinearMatch } from './linear-regex.js';
import type { OutgoingRequest, Pipeline, PipelineContext, PipelineObserver, RuleLimitReason } from './pipeline.js';
import { formatQuery, parseQuery, removeQueryParams, setQueryParam, type QueryParam } from './rule-query.js';
import { cookieValue, sampleKeeps } from './rule-sample.js';
import type { RuleOptions } from './rule-schema.js';
import { compileTemplate, type Template, type TemplateScope } from './template.js';

/**
 * Declarative rules, compiled once at start-up into one `pre` stage. Every rule whose
 * `match` holds runs its actions, in the order of the list; within a rule the actions run in
 * a fixed order: sample, drop, rewritePath, removeQuery, setQuery, removeHeaders, setHeaders,
 * appendHeaders, json, route, amplify. A request no rule matches is passed on untouched (the same
 * object, byte for byte).
 */

export interface CompileRulesOptions {
  /** Names of the configured origins; a `route` to any other name is refused. */
  origins: ReadonlySet<string>;
  observer?: PipelineObserver;
  /** Bound on a decoded request body a JSON rule edits (`productionResponses.maxDecodedBytes`). */
  maxDecodedBytes?: number;
}

type Condition = string | boolean;

interface CompiledRule {
  readonly name: string;
  readonly methods: ReadonlySet<string> | null;
  readonly pathPrefix: string | null;
  readonly pathRegex: LinearRegExp | null;
  readonly headers: readonly (readonly [string, Condition])[];
  readonly query: readonly (readonly [string, Condition])[];
  readonly sample: { readonly fraction: number; readonly key: ((request: OutgoingRequest) => string | null) | null } | null;
  readonly drop: boolean;
  readonly rewrite: { readonly from: LinearRegExp; readonly to: Replacement } | null;
  readonly removeQuery: ReadonlySet<string> | null;
  readonly setQuery: readonly (readonly [string, Template])[];
  readonly removeHeaders: ReadonlySet<string> | null;
  readonly setHeaders: readonly (readonly [string, Template])[];
  readonly appendHeaders: readonly (readonly [string, Template])[];
  readonly json: { readonly set: readonly (readonly [JsonPath, unknown | Template])[]; readonly remove: readonly JsonPath[] } | null;
  readonly route: string | null;
  readonly amplify: number | null;
}

const NO_GROUPS: Readonly<Record<string, string | undefined>> = Object.freeze({});

/** A `rewritePath.to` compiled once: what `String.prototype.replace` would insert for a match. */
type Replacement = (m: LinearMatch, input: string) => string;

/**
 * Compiles a replacement pattern with the tokens String.prototype.replace knows ($$, $&, $`,
 * $', $n, $<name>). Applying it to a match we already have costs a few string joins; asking
 * `replace` to do it parses the pattern and runs the regex again, measurably slower.
 */
function compileReplacement(to: string, groupCount: number): Replacement {
  const parts: (string | ((m: LinearMatch, input: string) => string))[] = [];
  let literal = '';
  let i = 0;
  const flush = () => {
    if (literal) parts.push(literal);
    literal = '';
  };
  while (i < to.length) {
    const c = to[i] as string;
    const next = to[i + 1];
    if (c !== '$' || next === undefined) {
      literal += c;
      i += 1;
      continue;
    }
    if (next === '$') {
      literal += '$';
      i += 2;
    } else if (next === '&') {
      flush();
      parts.push((m) => m[0]);
      i += 2;
    } else if (next === '`') {
      flush();
      parts.push((m, input) => input.slice(0, m.index));
      i += 2;
    } else if (next === "'") {
      flush();
      parts.push((m, input) => input.slice(m.index + m[0].length));
      i += 2;
    } else if (next === '<' && to.indexOf('>', i + 2) !== -1) {
      const end = to.indexOf('>', i + 2);
      const name = to.slice(i + 2, end);
      flush();
      parts.push((m) => m.groups?.[name] ?? '');
      i = end + 1;
    } else if (/[0-9]/.test(next)) {
      // Two digits when that names a group, else one; $0 and groups past the count are literal.
      const two = Number(to.slice(i + 1, i + 3));
      const one = Number(next);
      const n = /^[0-9]{2}$/.test(to.slice(i + 1, i + 3)) && two >= 1 && two <= groupCount ? two : one;
      const width = n === two && n !== one ? 2 : 1;
      if (n >= 1 && n <= groupCount) {
        flush();
        parts.push((m) => m[n] ?? '');
      } else {
        literal += to.slice(i, i + 1 + width);
      }
      i += 1 + width;
    } else {
      literal += c;
      i += 1;
    }
  }
  flush();
  return (m, input) => {
    let out = input.slice(0, m.index);
    for (const p of parts) out += typeof p === 'string' ? p : p(m, input);
    return out + input.slice(m.index + m[0].length);
  };
}

function namedGroups(source: string | undefined): Set<string> {
  const out = new Set<string>();
  if (source === undefined) return out;
  for (const m of source.matchAll(/\(\?<([A-Za-z_$][A-Za-z0-9_$]*)>/g)) out.add(m[1] as string);
  return out;
}

function compileRule(rule: RuleOptions, index: number, options: CompileRulesOptions, issues: RuleIssue[]): CompiledRule {
  const issue = (path: (string | number)[], message: string) => issues.push({ path: [index, ...path], message });
  const groups = new Set([...namedGroups(rule.match?.path), ...namedGroups(rule.rewritePath?.from)]);
  const template = (path: (string | number)[], text: string): Template => {
    try {
      return compileTemplate(text, groups);
    } catch (error) {
      if (!(error instanceof TemplateSyntaxError)) throw error;
      issue(path, error.message);
      return () => '';
    }
  };

  let rewrite: CompiledRule['rewrite'] = null;
  if (rule.rewritePath) {
    const from = new LinearRegExp(rule.rewritePath.from);
    const fromGroups = namedGroups(rule.rewritePath.from);
    for (const m of rule.rewritePath.to.matchAll(/\$<([^>]*)>/g)) {
      if (!fromGroups.has(m[1] as string)) issue(['rewritePath', 'to'], `$<${m[1]}> names no group of rewritePath.from`);
    }
    if (rule.rewritePath.to.includes('?')) issue(['rewritePath', 'to'], 'cannot add a query; use setQuery');
    else if (!rule.rewritePath.to.startsWith('/') && !rule.rewritePath.to.startsWith('$')) issue(['rewritePath', 'to'], 'expected a path starting with /');
    rewrite = { from, to: compileReplacement(rule.rewritePath.to, from.groupCount) };
  }

  let sample: CompiledRule['sample'] = null;
  if (rule.sample) {
    const spec = rule.sample.key;
    let key: ((request: OutgoingRequest) => string | null) | null = null;
    if (spec) {
      const colon = spec.indexOf(':');
      const kind = spec.slice(0, colon);
      const name = spec.slice(colon + 1);
      if (kind === 'header') {
        const lower = name.toLowerCase();
        key = (r) => headerValue(r.headers, lower);
      } else if (kind === 'cookie') {
        key = (r) => {
          return cookieValue(headerValues(r.headers, 'cookie'), name);
        };
      } else {
        key = (r) => {
          const q = r.path.indexOf('?');
          return q === -1 ? null : (parseQuery(r.path.slice(q + 1)).find((p) => p.name === name)?.value ?? null);
        };
      }
    }
    sample = { fraction: rule.sample.fraction, key };
  }

  let json: CompiledRule['json'] = null;
  if (rule.json) {
    const set: [JsonPath, unknown][] = [];
    const remove: JsonPath[] = [];
    for (const [path, value] of Object.entries(rule.json.set ?? {})) {
      try {
        set.push([parseJsonPath(path), typeof value === 'string' ? template(['json', 'set', path], value) : value]);
      } catch (error) {
        if (!(error instanceof JsonPathSyntaxError)) throw error;
        issue(['json', 'set', path], error.message);
      }
    }
    (rule.json.remove ?? []).forEach((path, i) => {
      try {
        remove.push(parseJsonPath(path));
      } catch (error) {
        if (!(error instanceof JsonPathSyntaxError)) throw error;
        issue(['json', 'remove', i], error.message);
      }
    });
    json = { set, remove };
  }

  if (rule.route !== undefined && !options.origins.has(rule.route)) {
    issue(['route'], `unknown origin ${JSON.stringify(rule.route)}; configured: ${[...options.origins].join(', ') || '(none)'}`);
  }

  return {
    name: rule.name,
    methods: rule.match?.methods ? new Set(rule.match.methods.map((m) => m.toUpperCase())) : null,
    pathPrefix: rule.match?.pathPrefix ?? null,
    pathRegex: rule.match?.path !== undefined ? new LinearRegExp(rule.match.path) : null,
    headers: Object.entries(rule.match?.headers ?? {}).map(([n, c]) => [n.toLowerCase(), c] as const),
    query: Object.entries(rule.match?.query ?? {}),
    sample,
    drop: rule.drop === true,
    rewrite,
    removeQuery: rule.removeQuery ? new Set(rule.removeQuery) : null,
    setQuery: Object.entries(rule.setQuery ?? {}).map(([n, v]) => [n, template(['setQuery', n], v)] as const),
    removeHeaders: rule.removeHeaders ? new Set(rule.removeHeaders.map((h) => h.toLowerCase())) : null,
    setHeaders: Object.entries(rule.setHeaders ?? {}).map(([n, v]) => [n, template(['setHeaders', n], v)] as const),
    appendHeaders: Object.entries(rule.appendHeaders ?? {}).map(([n, v]) => [n, template(['appendHeaders', n], v)] as const),
    json,
    route: rule.route ?? null,
    amplify: rule.amplify ?? null,
  };
}

function headerMatches(headers: readonly string[], lower: string, condition: Condition): boolean {
  if (typeof condition === 'string') return someHeader(headers, lower, (value) => value === condition);
  return (headerValue(headers, lower) !== null) === condition;
}

function queryMatches(params: readonly QueryParam[], name: string, condition: Condition): boolean {
  let present = false;
  for (const p of params) {
    if (p.name !== name) continue;
    if (condition === true) return true;
    present = true;
    if (typeof condition === 'string' && (p.value ?? '') === condition) return true;
  }
  return condition === false && !present;
}

/**
 * Bounds on the JSON a rule edits. Parsing, editing and printing cost time (and, for nesting,
 * stack) that grows with the body, on the worker's event loop; past these the body is sent as
 * it came and the skip is counted (`mirrorplane_worker_rule_limited_total{rule,reason}`).
 */
export const RULE_JSON_MAX_BYTES = 1024 * 1024;
export const RULE_JSON_MAX_DEPTH = 64;

/** Whether the JSON text nests deeper than `max` (a linear scan that skips strings). */
export function jsonDeeperThan(body: Buffer, max: number): boolean {
  let depth = 0;
  let inString = false;
  for (let i = 0; i < body.length; i++) {
    const c = body[i];
    if (inString) {
      if (c === 0x5c) i++;
      else if (c === 0x22) inString = false;
    } else if (c === 0x22) inString = true;
    else if (c === 0x5b || c === 0x7b) {
      if (++depth > max) return true;
    } else if (c === 0x5d || c === 0x7d) depth--;
  }
  return false;
}

/** Applies a rule's JSON edits; returns the new body, or the same Buffer when nothing changed. */
function editJson(body: Buffer, edits: NonNullable<CompiledRule['json']>, scope: TemplateScope, limited: (reason: RuleLimitReason) => void): Buffer {
  // Only valid UTF-8 JSON is edited; anything else is sent exactly as it came.
  if (body.length === 0) return body;
  if (body.length > RULE_JSON_MAX_BYTES) {
    limited('json_too_large');
    return body;
  }
  if (jsonDeeperThan(body, RULE_JSON_MAX_DEPTH)) {
    limited('json_too_deep');
    return body;
  }
  if (!isUtf8(body)) return body;
  let doc: unknown;
  try {
    doc = JSON.parse(body.toString('utf8'));
  } catch {
    return body;
  }
  let changed = false;
  for (const path of edits.remove) changed = removeJsonPath(doc, path) || changed;
  for (const [path, value] of edits.set) {
    changed = setJsonPath(doc, path, typeof value === 'function' ? (value as Template)(scope) : value) || changed;
  }
  return changed ? Buffer.from(JSON.stringify(doc), 'utf8') : body;
}

/** Sets a header: replaces the first of that name in place and removes the others, or appends it. */
function setHeader(headers: string[], name: string, value: string): string[] {
  const lower = name.toLowerCase();
  const out: string[] = [];
  let placed = false;
  forEachHeader(headers, (n, v) => {
    if (n.toLowerCase() !== lower) out.push(n, v);
    else if (!placed) {
      out.push(name, value);
      placed = true;
    }
  });
  if (!placed) out.push(name, value);
  return out;
}

/**
 * Compiles the `rules` of a config into one pipeline stage (a `pre` only). Throws
 * `RuleCompileError` listing every problem, each by its path under `rules`.
 */
export function compileRules(rules: readonly RuleOptions[], options: CompileRulesOptions): Pipeline {
  const issues: RuleIssue[] = [];
  const compiled = rules.map((rule, i) => compileRule(rule, i, options, issues));
  if (issues.length > 0) throw new RuleCompileError(issues);
  const observer = options.observer ?? {};

  return {
    name: 'rules',
    pre(request: OutgoingRequest, ctx: PipelineContext): OutgoingRequest | null {
      const q = request.path.indexOf('?');
      let pathname = q === -1 ? request.path : request.path.slice(0, q);
      const search = q === -1 ? '' : request.path.slice(q + 1);
      let params: QueryParam[] | null = null;
      let pathChanged = false;
      let queryChanged = false;
      let host: string | null = null;
      const method = request.method.toUpperCase();

      for (const rule of compiled) {
        if (rule.methods && !rule.methods.has(method)) continue;
        if (rule.pathPrefix !== null && !pathname.startsWith(rule.pathPrefix)) continue;
        let groups = NO_GROUPS;
        if (rule.pathRegex) {
          const m = rule.pathRegex.exec(pathname);
          if (!m) continue;
          // A fresh object per exec: no copy needed.
          if (m.groups) groups = m.groups;
        }
        let matched = true;
        for (const [name, condition] of rule.headers) {
          if (!headerMatches(request.headers, name, condition)) {
            matched = false;
            break;
          }
        }
        if (!matched) continue;
        if (rule.query.length > 0) {
          params ??= parseQuery(search);
          for (const [name, condition] of rule.query) {
            if (!queryMatches(params, name, condition)) {
              matched = false;
              break;
            }
          }
          if (!matched) continue;
        }

        ctx.rules.push(rule.name);
        if (rule.sample) {
          // Without a key (or when the request lacks it) the entry id decides: stable across retries.
          const key = rule.sample.key?.(request) ?? ctx.entryId;
          if (!sampleKeeps(key, rule.sample.fraction)) {
            observer.dropped?.(rule.name, 'sample');
            return null;
          }
        }
        if (rule.drop) {
          observer.dropped?.(rule.name, 'rule');
          return null;
        }
        if (rule.rewrite) {
          const m = rule.rewrite.from.exec(pathname);
          if (m) {
            if (m.groups) groups = groups === NO_GROUPS ? m.groups : { ...groups, ...m.groups };
            const next = rule.rewrite.to(m, pathname);
            if (!next.startsWith('/'))
              throw new RuleError(rule.name, `rewritePath turned ${JSON.stringify(pathname)} into ${JSON.stringify(next)}, which is not a path`);
            pathname = next;
            pathChanged = true;
          }
        }
        host ??= stripShadowSuffix(headerValue(ctx.mirrored.rawHeaders, 'host') ?? '');
        const scope: TemplateScope = {
          entryId: ctx.entryId,
          requestId: ctx.requestId,
          attempt: ctx.attempt,
          method: request.method,
          host,
          groups,
          headers: request.headers,
        };
        if (rule.removeQuery || rule.setQuery.length > 0) {
          params ??= parseQuery(search);
          if (rule.removeQuery) params = removeQueryParams(params, rule.removeQuery);
          for (const [name, value] of rule.setQuery) params = setQueryParam(params, name, value(scope));
          queryChanged = true;
        }
        if (rule.removeHeaders || rule.setHeaders.length > 0 || rule.appendHeaders.length > 0) {
          // Values are rendered against the headers as the rule found them, before its own edits.
          const set = rule.setHeaders.map(([n, t]) => [n, t(scope)] as const);
          const append = rule.appendHeaders.map(([n, t]) => [n, t(scope)] as const);
          let headers = rule.removeHeaders ? withoutHeaders(request.headers, rule.removeHeaders) : request.headers.slice();
          for (const [n, v] of set) headers = setHeader(headers, n, v);
          for (const [n, v] of append) headers.push(n, v);
          request.headers = headers;
        }
        if (rule.json && hasJsonBody(request.headers)) {
          // A compressed body is edited decoded and sent decoded, without its Content-Encoding;
          // one that does not decode (or is over the bound) is sent exactly as it came.
          const decoded = decodeBody(request.headers, request.body, options.maxDecodedBytes);
          if (decoded.ok) {
            const edited = editJson(decoded.body, rule.json, scope, (reason) => observer.limited?.(rule.name, reason));
            if (edited !== decoded.body) {
              request.body = edited;
              if (decoded.kind === 'decoded') request.headers = withoutContentCoding(request.headers);
            }
          }
        }
        if (rule.route !== null) request.origin = rule.route;
        if (rule.amplify !== null) request.copies = rule.amplify;
        observer.applied?.(rule.name);
      }
      if (pathChanged || queryChanged) {
        const query = queryChanged && params ? formatQuery(params) : search;
        request.path = query.length > 0 ? `${pathname}?${query}` : pathname;
      }
      return request;
    },
  };
}

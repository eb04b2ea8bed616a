import { z } from 'zod';
import { REPLAY_MANAGED_HEADERS } from './headers.js';
import { HTTP_TOKEN as TOKEN } from './http-token.js';
import { LinearRegExp } from './linear-regex.js';

/**
 * The `rules` key of the config file: an ordered list of declarative transforms. This file
 * holds their shape only; `compileRules` (rules.ts) checks what needs more than one field
 * (templates against regex groups, routes against origins) and builds the pipeline stage.
 */

/** Headers the replay itself manages; a rule setting them would be undone or break framing. */
export const RULE_FORBIDDEN_HEADERS: ReadonlySet<string> = REPLAY_MANAGED_HEADERS;

/** The largest amplification factor (copies of one request). */
export const MAX_AMPLIFY = 100;

export const RULE_NAME = /^[A-Za-z0-9_.:-]{1,64}$/;
export const ORIGIN_NAME = /^[A-Za-z0-9_-]{1,64}$/;

/** A pattern that runs in linear time on request data (see linear-regex.ts), or the reason it cannot. */
const regexString = z.string({ error: 'expected a regular expression (a string)' }).superRefine((value, ctx) => {
  try {
    new LinearRegExp(value);
  } catch (error) {
    ctx.addIssue({ code: 'custom', message: `${JSON.stringify(value)}: ${(error as Error).message}` });
  }
});

const headerName = z.string().regex(TOKEN, "expected a header name (letters, digits and !#$%&'*+-.^_`|~)");

/** Header values may be written as numbers or booleans in YAML; they are sent as text. */
const headerValue = z
  .union([z.string(), z.number(), z.boolean()], { error: 'expected a string (a header value or template)' })
  .transform(String)
  .refine((v) => !/[\r\n\0]/.test(v), 'a header value cannot hold CR, LF or NUL');

/** `value` must equal; `true` must be present; `false` must be absent. */
const condition = z.union([z.string(), z.boolean()], { error: 'expected a string (equals) or true/false (present/absent)' });

const managedHeader = (what: string) =>
  headerName.refine((name) => !RULE_FORBIDDEN_HEADERS.has(name.toLowerCase()), {
    message: `cannot ${what} this header: the replay manages it`,
  });

export const MatchOptions = z.strictObject({
  /** Any of these methods (case-insensitive). */
  methods: z.array(z.string().regex(TOKEN, 'expected an HTTP method')).min(1, 'expected at least one method').optional(),
  /** Regex tested against the path without its query; named groups feed `{{path.<group>}}`. */
  path: regexString.optional(),
  pathPrefix: z.string().startsWith('/', 'expected a path starting with /').optional(),
  headers: z.record(headerName, condition).optional(),
  query: z.record(z.string().min(1, 'expected a parameter name'), condition).optional(),
});
export type MatchOptions = z.infer<typeof MatchOptions>;

export const SampleOptions = z.strictObject({
  /** Fraction of matching requests kept, 0 to 1. */
  fraction: z.number({ error: 'expected a number from 0 to 1' }).min(0, 'expected a number from 0 to 1').max(1, 'expected a number from 0 to 1'),
  /** What keeps one user's requests together: `header:<name>` or `cookie:<name>`; default the entry id. */
  key: z
    .string()
    .regex(/^(header|cookie|query):[^\s]+$/, "expected 'header:<name>', 'cookie:<name>' or 'query:<name>'")
    .optional(),
});
export type SampleOptions = z.infer<typeof SampleOptions>;

export const RewritePathOptions = z.strictObject({
  from: regexString,
  /** Replacement with `$<name>`, `$1` and `$$`, as String.prototype.replace reads it. */
  to: z.string({ error: 'expected a string (the new path, with $<name> for groups)' }),
});

const jsonPathString = z.string().min(1, 'expected a JSON path like user.id or items[0].price');

export const JsonEditOptions = z.strictObject({
  /** Path → value; string values are templates. */
  set: z.record(jsonPathString, z.json()).optional(),
  remove: z.array(jsonPathString).optional(),
});

export const RuleOptions = z
  .strictObject({
    name: z.string({ error: 'expected a string' }).regex(RULE_NAME, 'expected 1-64 characters of A-Z a-z 0-9 _ . : -'),
    /** Absent: the rule applies to every request. */
    match: MatchOptions.optional(),
    sample: SampleOptions.optional(),
    drop: z.literal(true, { error: 'expected true (leave drop out to keep requests)' }).optional(),
    rewritePath: RewritePathOptions.optional(),
    setQuery: z.record(z.string().min(1), z.union([z.string(), z.number(), z.boolean()], { error: 'expected a string' }).transform(String)).optional(),
    removeQuery: z.array(z.string().min(1)).optional(),
    removeHeaders: z.array(managedHeader('remove')).optional(),
    setHeaders: z.record(managedHeader('set'), headerValue).optional(),
    appendHeaders: z.record(managedHeader('append'), headerValue).optional(),
    json: JsonEditOptions.optional(),
    /** Name of a configured origin (`origins`); the request is sent there. */
    route: z.string().regex(ORIGIN_NAME, 'expected an origin name (1-64 characters of A-Z a-z 0-9 _ -)').optional(),
    /** Copies of the request sent (2.5: 2 or 3, decided by the entry id); see copiesFor. */
    amplify: z
      .number({ error: `expected a factor from 1 to ${MAX_AMPLIFY} (2 sends 2 copies, 2.5 sends 2 or 3)` })
      .min(1, `expected a factor from 1 to ${MAX_AMPLIFY} (2 sends 2 copies, 2.5 sends 2 or 3)`)
      .max(MAX_AMPLIFY, `expected a factor from 1 to ${MAX_AMPLIFY} (2 sends 2 copies, 2.5 sends 2 or 3)`)
      .optional(),
  })
  .superRefine((rule, ctx) => {
    const actions = (
      ['sample', 'drop', 'rewritePath', 'setQuery', 'removeQuery', 'removeHeaders', 'setHeaders', 'appendHeaders', 'json', 'route', 'amplify'] as const
    ).filter((k) => rule[k] !== undefined);
    if (actions.length === 0) {
      ctx.addIssue({
        code: 'custom',
        message: 'has no action (sample, drop, rewritePath, setQuery, removeQuery, removeHeaders, setHeaders, appendHeaders, json, route or amplify)',
      });
    }
    if (rule.drop && actions.length > 1) {
      ctx.addIssue({
        code: 'custom',
        path: ['drop'],
        message: `cannot be combined with ${actions.filter((a) => a !== 'drop').join(', ')}: a dropped request goes nowhere`,
      });
    }
  });
export type RuleOptions = z.infer<typeof RuleOptions>;

export const RulesOptions = z.array(RuleOptions, { error: 'expected a list of rules' }).superRefine((rules, ctx) => {
  const seen = new Map<string, number>();
  rules.forEach((rule, i) => {
    const first = seen.get(rule.name);
    if (first !== undefined)
      ctx.addIssue({ code: 'custom', path: [i, 'name'], message: `duplicate rule name ${JSON.stringify(rule.name)} (also rules[${first}])` });
    else seen.set(rule.name, i);
  });
});

import { TemplateSyntaxError } from './errors.js';
import { headerValue } from './headers.js';
import { HTTP_TOKEN } from './http-token.js';

/**
 * Templates in rule values: `x-trace: '{{entryId}}'`, `/users/{{path.id}}`. A template is
 * compiled once, at start-up, into literal parts and variable readers; rendering it is a
 * string join. Unknown variables are configuration errors, never empty strings at run time.
 *
 * Variables: entryId, requestId, attempt, method, host (the mirrored Host, without
 * `-shadow`), now (ISO 8601), nowMs, path.<group> (a named group of the rule's path regexes),
 * header.<name> (the first value of a header of the request being shaped).
 */

/** What a template can read while a rule runs. */
export interface TemplateScope {
  readonly entryId: string;
  readonly requestId: string | null;
  readonly attempt: number;
  readonly method: string;
  /** The mirrored Host header, without Envoy's `-shadow` suffix. */
  readonly host: string;
  /** Named groups captured by the rule's `match.path` and `rewritePath.from`. */
  readonly groups: Readonly<Record<string, string | undefined>>;
  /** Headers of the request as the rule found it. */
  readonly headers: readonly string[];
}

export type Template = (scope: TemplateScope) => string;

const VARIABLE = /\{\{\s*([^{}]*?)\s*\}\}/g;
const GROUP_NAME = /^[A-Za-z_$][A-Za-z0-9_$]*$/;
const HEADER_NAME = HTTP_TOKEN;

export const TEMPLATE_VARIABLES = ['entryId', 'requestId', 'attempt', 'method', 'host', 'now', 'nowMs', 'path.<group>', 'header.<name>'] as const;

function reader(name: string, groups: ReadonlySet<string>): (scope: TemplateScope) => string {
  switch (name) {
    case 'entryId':
      return (s) => s.entryId;
    case 'requestId':
      return (s) => s.requestId ?? '';
    case 'attempt':
      return (s) => String(s.attempt);
    case 'method':
      return (s) => s.method;
    case 'host':
      return (s) => s.host;
    case 'now':
      return () => new Date().toISOString();
    case 'nowMs':
      return () => String(Date.now());
  }
  if (name.startsWith('path.')) {
    const group = name.slice('path.'.length);
    if (!GROUP_NAME.test(group)) throw new TemplateSyntaxError(`{{${name}}}: ${JSON.stringify(group)} is not a group name`);
    if (!groups.has(group)) {
      const known = [...groups];
      throw new TemplateSyntaxError(
        `{{${name}}}: no named group ${JSON.stringify(group)} in this rule's match.path or rewritePath.from` +
          (known.length > 0 ? ` (groups: ${known.join(', ')})` : ''),
      );
    }
    return (s) => s.groups[group] ?? '';
  }
  if (name.startsWith('header.')) {
    const header = name.slice('header.'.length).toLowerCase();
    if (!HEADER_NAME.test(header)) throw new TemplateSyntaxError(`{{${name}}}: ${JSON.stringify(header)} is not a header name`);
    return (s) => headerValue(s.headers, header) ?? '';
  }
  throw new TemplateSyntaxError(`unknown variable {{${name}}}; known: ${TEMPLATE_VARIABLES.map((v) => `{{${v}}}`).join(', ')}`);
}

/**
 * Compiles a template. `groups` are the named groups the rule's regexes capture, so that a
 * misspelt `{{path.x}}` is refused at start-up.
 */
export function compileTemplate(text: string, groups: ReadonlySet<string> = new Set()): Template {
  const parts: (string | ((scope: TemplateScope) => string))[] = [];
  let last = 0;
  for (const m of text.matchAll(VARIABLE)) {
    if (m.index > last) parts.push(text.slice(last, m.index));
    parts.push(reader(m[1] as string, groups));
    last = m.index + m[0].length;
  }
  if (last < text.length) parts.push(text.slice(last));
  const rest = parts.filter((p): p is string => typeof p === 'string').join('');
  if (rest.includes('{{') || rest.includes('}}')) throw new TemplateSyntaxError(`unbalanced {{ }} in ${JSON.stringify(text)}`);
  // Literal templates are the common case; they cost nothing per request.
  if (parts.length === 0) return () => '';
  if (parts.length === 1 && typeof parts[0] === 'string') {
    const literal = parts[0];
    return () => literal;
  }
  return (scope) => {
    let out = '';
    for (const p of parts) out += typeof p === 'string' ? p : p(scope);
    return out;
  };
}

/** Whether a text holds any `{{…}}` variable. */
export function isTemplate(text: string): boolean {
  return text.includes('{{');
}

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Redactor, redactionSettings } from '@mirrorplane/core';

/**
 * Attack on Redactor.text (error messages, job names, failure reasons): secret values that
 * default header and query names carry, quoted the ways libraries and hooks quote them.
 * Every case names a default secret (`token`, `authorization`, `x-api-key`, `set-cookie`).
 */

const S = 'MKTEXTSECRET9';
const r = new Redactor(redactionSettings(undefined));

const cases: Record<string, string> = {
  'a URL as the value of another name=value': `redirect failed: url=http://staging.internal/p?token=${S}`,
  'a quoted query value': `invalid parameter token="${S}"`,
  'a single-quoted query value': `invalid parameter token='${S}'`,
  'headers quoted as JSON (JSON.stringify(req.headers))': `hook failed on {"authorization":"Bearer ${S}","accept":"*/*"}`,
  'an API key header quoted as JSON': `hook failed on {"x-api-key":"${S}"}`,
  'a body quoted as JSON': `hook failed: body {"token":"${S}"}`,
  'Set-Cookie values joined by a comma (Fetch Headers.get)': `set-cookie: a=1; Path=/, sid=${S}; Path=/`,
  'basic auth in a quoted URL': `connect failed to http://svc:${S}@staging.internal/p`,
};

test('attack-12: Redactor.text hides default secrets however an error message quotes them', () => {
  const leaks = Object.entries(cases).filter(([, text]) => r.text(text).includes(S)).map(([what, text]) => `${what}: ${r.text(text)}`);
  assert.deepEqual(leaks, []);
});

test('attack-12: Redactor.target hides default query secrets whatever separator or array syntax carries them', () => {
  const targets = [`/p?a=1;token=${S}`, `/p?token[]=${S}`, `/p?token%5B%5D=${S}`, `/p?x=1#access_token=${S}`];
  const leaks = targets.filter((t) => r.target(t).includes(S)).map((t) => `${t} -> ${r.target(t)}`);
  assert.deepEqual(leaks, []);
});

import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { DEFAULT_REDACTED_QUERY_PARAMS, Redactor, redactionSettings } from '@mirrorplane/core';

/**
 * Redactor.text (error messages, job names, failure reasons) and Redactor.target hide a secret
 * whatever form carries it: quoted the ways libraries and hooks quote them, `;`-separated,
 * array-bracketed, in a fragment, in a URL's userinfo; form and JSON bodies by field name.
 * Named cases first, then generated members of each family.
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

test('Redactor.text hides default secrets however an error message quotes them', () => {
  const leaks = Object.entries(cases)
    .filter(([, text]) => r.text(text).includes(S))
    .map(([what, text]) => `${what}: ${r.text(text)}`);
  assert.deepEqual(leaks, []);
});

test('Redactor.target hides default query secrets whatever separator or array syntax carries them', () => {
  const targets = [`/p?a=1;token=${S}`, `/p?token[]=${S}`, `/p?token%5B%5D=${S}`, `/p?x=1#access_token=${S}`];
  const leaks = targets.filter((t) => r.target(t).includes(S)).map((t) => `${t} -> ${r.target(t)}`);
  assert.deepEqual(leaks, []);
});

const SECRET = fc.stringMatching(/^[A-Za-z0-9._~-]{6,30}$/).map((s) => `S3CR${s}`);
const word = fc.stringMatching(/^[a-z]{1,8}$/);
/** Secret names: the default list, and names secret by shape (`*_token`, `*-secret`, `*.key`, `password*`). */
const secretName = fc
  .oneof(
    fc.constantFrom(...DEFAULT_REDACTED_QUERY_PARAMS),
    fc
      .tuple(word, fc.constantFrom('_', '-', '.'), fc.constantFrom('token', 'secret', 'key', 'password', 'signature', 'credentials'))
      .map(([w, sep, s]) => `${w}${sep}${s}`),
    word.map((w) => `password${w}`),
  )
  .chain((n) => fc.array(fc.boolean(), { minLength: n.length, maxLength: n.length }).map((up) => [...n].map((c, i) => (up[i] ? c.toUpperCase() : c)).join('')));
const plain = fc.stringMatching(/^[a-z][a-z0-9]{0,7}$/).filter((n) => !r.isSecretParam(n));
const others = fc.array(
  fc.tuple(plain, fc.stringMatching(/^[a-z0-9]{0,8}$/)).map(([n, v]) => `${n}=${v}`),
  { maxLength: 3 },
);

test('generated targets: a secret parameter in the query or fragment, any separator, brackets, encoding, userinfo, is hidden', () => {
  fc.assert(
    fc.property(
      secretName,
      SECRET,
      others,
      fc.constantFrom('&', ';'),
      fc.constantFrom('', '[]', '%5B%5D', '[0]', '%5b%5d'),
      fc.constantFrom('?', '#'),
      fc.boolean(),
      fc.boolean(),
      (name, secret, rest, sep, brackets, where, encode, absolute) => {
        const n = encode ? [...name].map((c) => `%${c.charCodeAt(0).toString(16)}`).join('') : name;
        const params = [...rest, `${n}${brackets}=${secret}`, ...rest].join(sep);
        const target = absolute ? `https://u:${secret}@prod.example/p${where}${params}` : `/p${where}${params}`;
        const out = r.target(target);
        assert.ok(!out.includes(secret), `${target} -> ${out}`);
        for (const o of rest) assert.ok(out.includes(o), `${o} kept in ${out}`);
      },
    ),
  );
});

test('generated text: a secret quoted as JSON, as name="value", in an embedded URL or as a header line is hidden', () => {
  const header = fc.constantFrom('authorization', 'x-api-key', 'cookie', 'set-cookie', 'x-auth-token', 'x-tenant-token', 'x-client-secret');
  fc.assert(
    fc.property(secretName, header, SECRET, fc.integer({ min: 0, max: 5 }), (name, h, secret, form) => {
      const text = [
        `failed on {"a":"1","${name}":"${secret}","b":2}`,
        `invalid ${name}="${secret}" given`,
        `invalid ${name}='${secret}' given`,
        `redirect url=http://staging.internal/p?x=1&${name}=${secret}`,
        `request: ${h}: ${secret}\naccept: */*`,
        `{"${h}":"Bearer ${secret}"}`,
      ][form]!;
      const out = r.text(text);
      assert.ok(!out.includes(secret), `${text} -> ${out}`);
    }),
  );
});

test('generated bodies: secret-named fields of a form or JSON body are hidden, others kept', () => {
  fc.assert(
    fc.property(secretName, SECRET, plain, fc.boolean(), (name, secret, other, json) => {
      const body = json
        ? Buffer.from(JSON.stringify({ [other]: 'kept', nested: [{ [name]: secret }], [name]: secret }))
        : Buffer.from(`${other}=kept&${encodeURIComponent(name)}=${secret}`);
      const out = r.body(json ? 'application/json; charset=utf-8' : 'application/x-www-form-urlencoded', body).toString();
      assert.ok(!out.includes(secret), out);
      assert.ok(out.includes('kept'), out);
    }),
  );
  // Another type is left alone; a body without secrets is the same bytes.
  const text = Buffer.from('password=x');
  assert.equal(r.body('text/plain', text), text);
  const clean = Buffer.from('{ "a" : 1 }');
  assert.equal(r.body('application/json', clean), clean);
});

test('redact.keep turns a name secret by its shape off', () => {
  const kept = new Redactor(redactionSettings({ keep: ['sort_key'] }));
  assert.equal(kept.target('/p?sort_key=a&api_key=b'), '/p?sort_key=a&api_key=[redacted]');
});

import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { DEFAULT_REDACTED_HEADERS, DEFAULT_REDACTED_QUERY_PARAMS, Redactor, loadConfig, redactionSettings } from '@mirrorplane/core';

const redactor = new Redactor(redactionSettings(undefined));
const SECRET = fc.stringMatching(/^[A-Za-z0-9._~-]{6,40}$/).map((s) => `S3CR${s}`);
const randomCase = (name: string) =>
  fc.array(fc.boolean(), { minLength: name.length, maxLength: name.length }).map((up) => [...name].map((c, i) => (up[i] ? c.toUpperCase() : c)).join(''));
const plainName = fc.stringMatching(/^[a-z][a-z0-9_]{0,11}$/).filter((n) => !redactor.isSecretParam(n));
const plainValue = fc.stringMatching(/^[A-Za-z0-9._~-]{0,20}$/);

test('fuzz: a default secret header, in any case, among any others, is hidden; the rest is kept in order', () => {
  fc.assert(
    fc.property(
      fc.constantFrom(...DEFAULT_REDACTED_HEADERS).chain(randomCase),
      SECRET,
      fc.array(fc.tuple(fc.constantFrom('accept', 'x-request-id', 'content-type'), plainValue)),
      fc.nat(),
      (name, secret, others, at) => {
        const flat = others.flat();
        const i = 2 * (at % (others.length + 1));
        const headers = [...flat.slice(0, i), name, secret, ...flat.slice(i)];
        const out = redactor.headers(headers);
        assert.ok(!out.includes(secret));
        assert.equal(out[i], name, 'names are kept');
        assert.equal(out[i + 1], '[redacted]');
        assert.deepEqual([...out.slice(0, i), ...out.slice(i + 2)], flat, 'the other headers byte for byte');
      },
    ),
  );
});

test('fuzz: a default secret query value, percent-encoded name or not, anywhere in the query, is hidden; the rest stays byte for byte', () => {
  fc.assert(
    fc.property(
      fc.constantFrom(...DEFAULT_REDACTED_QUERY_PARAMS),
      fc.boolean(),
      SECRET,
      fc.array(fc.tuple(plainName, plainValue), { maxLength: 4 }),
      fc.nat(),
      fc.constantFrom('', '#frag'),
      (name, encode, secret, others, at, hash) => {
        const raw = encode ? [...name].map((c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`).join('') : name;
        const parts = others.map(([n, v]) => `${n}=${v}`);
        const i = at % (parts.length + 1);
        parts.splice(i, 0, `${raw}=${secret}`);
        const target = `/p/a?${parts.join('&')}${hash}`;
        const out = redactor.target(target);
        assert.ok(!out.includes(secret), `${target} → ${out}`);
        const expected = [...parts];
        expected[i] = `${raw}=[redacted]`;
        assert.equal(out, `/p/a?${expected.join('&')}${hash}`);
        // Free text quoting the URL (an error message) is redacted too.
        assert.ok(!redactor.text(`staging refused GET ${target}: 400`).includes(secret));
      },
    ),
  );
});

test('text redaction hides a secret header quoted as "Name: value"', () => {
  const out = redactor.text('request failed: Authorization: Bearer abc.def, X-Api-Key: k-123\naccept: */*');
  assert.equal(out, 'request failed: Authorization: [redacted], X-Api-Key: [redacted]\naccept: */*');
});

test('redact: in the config file extends the defaults and turns one off', () => {
  const c = loadConfig({
    role: 'cli',
    env: {},
    file: { path: 'c.yaml', text: 'redact:\n  headers: [X-Tenant-Secret]\n  queryParams: [otp]\n  keep: [code, x-csrf-token]\n' },
  });
  assert.ok(c.redaction.headers.includes('x-tenant-secret'));
  assert.ok(c.redaction.headers.includes('authorization'));
  assert.ok(!c.redaction.headers.includes('x-csrf-token'));
  assert.ok(c.redaction.queryParams.includes('otp'));
  assert.ok(!c.redaction.queryParams.includes('code'));
  const r = new Redactor(c.redaction);
  assert.equal(r.target('/cb?code=AB12&otp=999&token=t'), '/cb?code=AB12&otp=[redacted]&token=[redacted]');
  assert.deepEqual(c.redactHeaders, c.redaction.headers);
  assert.throws(
    () => loadConfig({ role: 'cli', env: {}, file: { path: 'c.yaml', text: 'redact:\n  headers: ["bad name"]\n  other: 1\n' } }),
    /c\.yaml: redact\.headers\[0\]: expected a header name[\s\S]*c\.yaml: redact\.other: unknown key/,
  );
});

test('fuzz: an error code before its message (ERR_…, MP_ERR_…, UNABLE_TO_VERIFY_LEAF_SIGNATURE: …) keeps the message; secret-shaped names stay hidden', () => {
  const words = ['SIGNATURE', 'TOKEN', 'SECRET', 'PASSWORD', 'CREDENTIALS', 'APIKEY'];
  const code = fc
    .tuple(fc.constantFrom('ERR', 'MP_ERR'), fc.array(fc.stringMatching(/^[A-Z][A-Z0-9]{0,7}$/), { minLength: 0, maxLength: 3 }), fc.constantFrom(...words))
    .map(([head, parts, last]) => [head, ...parts, last].join('_'));
  const message = fc.stringMatching(/^[a-z][a-z ]{0,40}$/);
  fc.assert(
    fc.property(
      fc.oneof(
        code,
        fc.constantFrom('UNABLE_TO_VERIFY_LEAF_SIGNATURE', 'CERT_SIGNATURE_FAILURE', 'UNABLE_TO_DECODE_ISSUER_PUBLIC_KEY', 'ERR_TLS_CERT_ALTNAME_INVALID'),
      ),
      message,
      (name, text) => {
        const line = `MP_ERR_STAGING_TRANSPORT: ${name}: ${text}`;
        assert.equal(redactor.text(line), line);
      },
    ),
  );
  fc.assert(
    fc.property(
      fc.constantFrom(
        'X-Hub-Signature',
        'x-client-secret',
        'X-Foo-Token',
        'x_api_token',
        'DB_PASSWORD',
        'AWS_SECRET_ACCESS_KEY',
        'GITHUB_TOKEN',
        'x-secret-key',
        'X_API_KEY',
        'x-token-id',
      ),
      SECRET,
      (name, secret) => {
        assert.ok(!redactor.text(`failed: ${name}: ${secret}`).includes(secret));
      },
    ),
  );
});

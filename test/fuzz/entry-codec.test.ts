import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import fc from 'fast-check';
import {
  DataKeyError,
  EntryCipher,
  EntryDecodeError,
  decodeEntry,
  deserializeEntry,
  encodeEntryFields,
  openEntryFields,
  parseDataKeys,
  serializeEntry,
  type MirroredRequest,
} from '@mirrorplane/core';

// Property tests of the entry codec and its encryption: what the ingress writes, the worker
// reads back byte for byte; whatever else is in the stream is refused with EntryDecodeError,
// never with another error (which would stall the consumer group).

const RUNS = 400;

const TOKEN = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+-.^_`|~";
const token = fc.string({ unit: fc.constantFrom(...TOKEN), minLength: 1, maxLength: 20 });
/** Any latin1 character but LF: node's parser never passes LF in a name, value or target. */
const latin1NoLf = fc.string({
  unit: fc
    .integer({ min: 0, max: 255 })
    .filter((c) => c !== 10)
    .map((c) => String.fromCharCode(c)),
  maxLength: 60,
});

const mirrored: fc.Arbitrary<MirroredRequest> = fc
  .record({
    method: token,
    target: latin1NoLf.filter((s) => s.length > 0),
    rawHeaders: fc.array(fc.tuple(token, latin1NoLf), { maxLength: 12 }).map((pairs) => pairs.flat()),
    body: fc.uint8Array({ maxLength: 2048 }).map((a) => Buffer.from(a)),
    receivedAt: fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER }),
    requestId: fc.option(latin1NoLf, { nil: null }),
    clientAddress: fc.option(fc.ipV4(), { nil: null }),
    // Layout 2 (HTTP/2) and trailers are members of the same family: every property covers them.
    trailers: fc.option(
      fc.array(fc.tuple(token, latin1NoLf), { minLength: 1, maxLength: 4 }).map((pairs) => pairs.flat()),
      { nil: undefined },
    ),
    protocol: fc.option(fc.constant('HTTP/2' as const), { nil: undefined }),
  })
  // A plain object without the absent optional fields: fast-check's records have no prototype.
  .map((r) => Object.fromEntries(Object.entries(r).filter(([, v]) => v !== undefined)) as unknown as MirroredRequest);

/** Fields as Redis returns them to `xreadgroupBuffer`: every name and value a Buffer. */
function asReply(fields: readonly (string | Buffer)[]): Buffer[] {
  return fields.map((f) => (typeof f === 'string' ? Buffer.from(f, 'latin1') : f));
}

test('fuzz: every request survives encode and decode byte for byte', () => {
  fc.assert(
    fc.property(mirrored, (request) => {
      const entry = decodeEntry('1-1', asReply(encodeEntryFields(request)));
      assert.deepEqual(entry.request, request);
      // Retry jobs carry the same bytes.
      assert.deepEqual(deserializeEntry(JSON.parse(JSON.stringify(serializeEntry(entry)))), entry);
    }),
    { numRuns: RUNS },
  );
});

const fieldName = fc.oneof(fc.constantFrom('v', 'm', 'u', 'h', 'b', 't', 'r', 'a', 'k', 'e'), fc.string({ maxLength: 3 }));
const fieldValue = fc.oneof(
  fc.constantFrom('1', '2', 'GET', '/', '0', '-1', 'x\ny', ''),
  fc.uint8Array({ maxLength: 40 }).map((a) => Buffer.from(a).toString('latin1')),
);

test('fuzz: anything else in the stream is refused with EntryDecodeError, never another error', () => {
  const cipher = new EntryCipher(parseDataKeys(`k1:${randomBytes(32).toString('base64')}`));
  fc.assert(
    fc.property(fc.array(fc.oneof(fieldName, fieldValue), { maxLength: 20 }), fc.boolean(), (items, withKey) => {
      const fields = asReply(items);
      try {
        decodeEntry('2-2', openEntryFields('2-2', fields, withKey ? cipher : null));
      } catch (error) {
        assert.ok(error instanceof EntryDecodeError, `unexpected ${String(error)}`);
        assert.ok(error.message.length > 0);
      }
    }),
    { numRuns: RUNS * 5 },
  );
});

test('fuzz: an encrypted entry decrypts byte for byte with any key of the ring', () => {
  const k1 = `k1:${randomBytes(32).toString('base64')}`;
  const k2 = `k2:${randomBytes(32).toString('base64')}`;
  const old = new EntryCipher(parseDataKeys(k1));
  const rotated = new EntryCipher(parseDataKeys(`${k2},${k1}`));
  fc.assert(
    fc.property(mirrored, fc.boolean(), (request, before) => {
      const writer = before ? old : rotated;
      const sealed = asReply(writer.sealFields(encodeEntryFields(request)));
      const names = sealed.filter((_, i) => i % 2 === 0).map((b) => b.toString());
      assert.deepEqual(names, ['v', 'm', 't', 'k', 'e'], 'only method, time and key id in clear');
      assert.equal(sealed[7]!.toString(), before ? 'k1' : 'k2', 'the first key encrypts');
      const entry = decodeEntry('3-3', openEntryFields('3-3', sealed, rotated));
      assert.deepEqual(entry.request, request);
    }),
    { numRuns: RUNS },
  );
});

test('fuzz: a changed byte, a wrong key or a missing key is a clear EntryDecodeError', () => {
  const cipher = new EntryCipher(parseDataKeys(`k1:${randomBytes(32).toString('base64')}`));
  const other = new EntryCipher(parseDataKeys(`k1:${randomBytes(32).toString('base64')}`));
  const elsewhere = new EntryCipher(parseDataKeys(`k9:${randomBytes(32).toString('base64')}`));
  fc.assert(
    fc.property(mirrored, fc.nat(), fc.integer({ min: 1, max: 255 }), (request, at, flip) => {
      const sealed = asReply(cipher.sealFields(encodeEntryFields(request)));
      const payload = Buffer.from(sealed[9]!);
      payload[at % payload.length]! ^= flip;
      const tampered = [...sealed.slice(0, 9), payload];
      assert.throws(
        () => openEntryFields('4-4', tampered, cipher),
        (e: unknown) => e instanceof EntryDecodeError && /wrong key, or the entry was altered/.test(e.message),
      );
      // The method and time are authenticated too.
      const moved = sealed.slice();
      moved[5] = Buffer.from(String(request.receivedAt + 1));
      assert.throws(() => openEntryFields('4-4', moved, cipher), EntryDecodeError);
      assert.throws(() => openEntryFields('4-4', sealed, other), /cannot be decrypted with key id "k1"/);
      assert.throws(() => openEntryFields('4-4', sealed, elsewhere), /key id "k1", which MIRRORPLANE_DATA_KEY does not hold/);
      assert.throws(() => openEntryFields('4-4', sealed, null), /encrypted with key id "k1" and MIRRORPLANE_DATA_KEY is not set/);
    }),
    { numRuns: RUNS / 2 },
  );
});

test('fuzz: MIRRORPLANE_DATA_KEY parsing refuses bad input by item, never echoing key material', () => {
  fc.assert(
    fc.property(fc.string({ maxLength: 120 }), (spec) => {
      try {
        const keys = parseDataKeys(spec);
        assert.ok(keys.every((k) => k.key.length === 32));
      } catch (error) {
        assert.ok(error instanceof DataKeyError, `unexpected ${String(error)}`);
        const secretish = spec
          .split(',')
          .map((s) => s.slice(s.indexOf(':') + 1).trim())
          .filter((s) => s.length >= 8);
        for (const s of secretish) assert.ok(!error.message.includes(s), `message echoes input: ${error.message}`);
      }
    }),
    { numRuns: RUNS * 2 },
  );
  assert.throws(() => parseDataKeys('k1:c2hvcnQ='), /key "k1": expected 32 bytes in base64/);
  assert.throws(() => parseDataKeys(`k1:${randomBytes(32).toString('base64')},k1:${randomBytes(32).toString('base64')}`), /appears twice/);
});

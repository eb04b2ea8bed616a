import { createCipheriv, createDecipheriv, createHmac, randomBytes } from 'node:crypto';
import { DataKeyError, EntryDecodeError } from './errors.js';
import { ENTRY_VERSION, type RawFields } from './entry.js';

/**
 * Optional encryption of entry payloads at rest (AES-256-GCM). Redis otherwise holds every
 * mirrored body, header and query string in clear.
 *
 * An encrypted entry keeps only what is not personal in clear: `v`, `m` (method), `t`
 * (receive time), `k` (key id) and `e`, which holds `iv(12) | ciphertext | tag(16)` of the
 * target, headers, body, request id and client address. A plain entry has no `k`/`e` field,
 * so with encryption off the codec reads exactly what it read before, at the same speed.
 *
 * Keys come from `MIRRORPLANE_DATA_KEY=k2:<base64 32 bytes>,k1:<base64 32 bytes>`: the first
 * key encrypts, every key decrypts, so a key is rotated by putting the new one first and
 * dropping the old one once no entry written with it is left (stream, retry queue, failed set).
 */

const F_KEY_ID = 'k';
const F_SEALED = 'e';
const IV_BYTES = 12;
const TAG_BYTES = 16;
const KEY_BYTES = 32;
const NULL_LENGTH = 0xffffffff;
const KEY_ID = /^[A-Za-z0-9_.-]{1,32}$/;
/** Where each encrypted field goes in the payload: target, headers, body, request id, client. */
const SEALED_SLOTS: ReadonlyMap<string, number> = new Map([
  ['u', 0],
  ['h', 1],
  ['b', 2],
  ['r', 3],
  ['a', 4],
  // Written since trailers and the protocol field exist: a sealed entry keeps every field its
  // plain form has. Sealed payloads of 5 parts (before) still open.
  ['T', 5],
  ['p', 6],
]);
const SEALED_PARTS = 7;
const SEALED_PARTS_BEFORE_TRAILERS = 5;

/** One data key: its id (stored with each entry) and its 32 bytes. */
export interface DataKey {
  readonly id: string;
  readonly key: Buffer;
}

/**
 * Parses `id:base64key[,id:base64key…]`. Throws `DataKeyError` naming the faulty item by its
 * position and id; key material never appears in a message.
 */
export function parseDataKeys(spec: string): DataKey[] {
  const items = spec
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  if (items.length === 0) throw new DataKeyError('expected id:base64key[,id:base64key…], got nothing');
  const keys: DataKey[] = [];
  const seen = new Set<string>();
  items.forEach((item, i) => {
    const colon = item.indexOf(':');
    const id = colon === -1 ? '' : item.slice(0, colon);
    if (!KEY_ID.test(id)) {
      throw new DataKeyError(`item ${i + 1}: expected id:base64key with an id of 1-32 characters of A-Z a-z 0-9 _ . -`);
    }
    if (seen.has(id)) throw new DataKeyError(`item ${i + 1}: key id ${JSON.stringify(id)} appears twice`);
    seen.add(id);
    const text = item.slice(colon + 1);
    const key = Buffer.from(text, 'base64');
    if (!/^[A-Za-z0-9+/]+={0,2}$/.test(text) || key.length !== KEY_BYTES) {
      throw new DataKeyError(`key ${JSON.stringify(id)}: expected ${KEY_BYTES} bytes in base64 (openssl rand -base64 32), got ${key.length} bytes`);
    }
    keys.push({ id, key });
  });
  return keys;
}

function lengthPrefixed(parts: readonly (Buffer | null)[]): Buffer {
  let size = 0;
  for (const p of parts) size += 4 + (p?.length ?? 0);
  const out = Buffer.allocUnsafe(size);
  let at = 0;
  for (const p of parts) {
    if (p === null) {
      out.writeUInt32BE(NULL_LENGTH, at);
      at += 4;
      continue;
    }
    out.writeUInt32BE(p.length, at);
    p.copy(out, at + 4);
    at += 4 + p.length;
  }
  return out;
}

function readParts(buffer: Buffer, counts: readonly number[], id: string): (Buffer | null)[] {
  const out: (Buffer | null)[] = [];
  let at = 0;
  const count = Math.max(...counts);
  for (let i = 0; i < count; i++) {
    // A payload may end after any of the accepted part counts.
    if (at === buffer.length && counts.includes(i)) break;
    if (at + 4 > buffer.length) throw new EntryDecodeError(`entry ${id}: encrypted payload is cut short`);
    const length = buffer.readUInt32BE(at);
    at += 4;
    if (length === NULL_LENGTH) {
      out.push(null);
      continue;
    }
    if (at + length > buffer.length) throw new EntryDecodeError(`entry ${id}: encrypted payload is cut short`);
    out.push(buffer.subarray(at, at + length));
    at += length;
  }
  if (at !== buffer.length) throw new EntryDecodeError(`entry ${id}: encrypted payload has ${buffer.length - at} trailing bytes`);
  return out;
}

/** Authenticated data: the clear fields, so that a method or time cannot be swapped between entries. */
function aad(version: string, keyId: string, method: string, time: string): Buffer {
  return Buffer.from(`mirrorplane:${version}:${keyId}:${method}:${time}`, 'latin1');
}

const BLOB_MAGIC = Buffer.from('MPS1', 'latin1');
const BLOB_TEXT_PREFIX = 'mps1:';

function blobAad(keyId: string, context: string): Buffer {
  return Buffer.from(`mirrorplane:blob:${keyId}:${context}`, 'utf8');
}

/** Whether a stored value is a `sealBlob` output. */
export function isSealedBlob(value: Buffer): boolean {
  return value.length > BLOB_MAGIC.length && value.subarray(0, BLOB_MAGIC.length).equals(BLOB_MAGIC);
}

/** Whether raw entry fields (as Redis returns them) hold an encrypted payload. */
export function isSealedEntry(fields: RawFields): boolean {
  for (let i = 0; i < fields.length; i += 2) {
    const name = fields[i] as Buffer;
    // Field names are one letter; this check costs a few comparisons per entry.
    if (name.length === 1 && name[0] === 0x65 /* e */) return true;
  }
  return false;
}

/** Encrypts and decrypts entry payloads with a key ring; constructed once per process. */
export class EntryCipher {
  readonly #encrypt: DataKey;
  readonly #keys: ReadonlyMap<string, Buffer>;

  constructor(keys: readonly DataKey[]) {
    const first = keys[0];
    if (!first) throw new DataKeyError('at least one data key is needed');
    this.#encrypt = first;
    this.#keys = new Map(keys.map((k) => [k.id, k.key]));
  }

  /** A cipher from MIRRORPLANE_DATA_KEY, or null when it is unset (encryption off). */
  static fromSpec(spec: string | null | undefined): EntryCipher | null {
    return spec ? new EntryCipher(parseDataKeys(spec)) : null;
  }

  /** Key ids this process can decrypt, the encrypting one first (for logs; never the keys). */
  get keyIds(): string[] {
    return [...this.#keys.keys()];
  }

  /**
   * Encrypts the XADD field/value arguments of a plain entry (`encodeEntryFields`' layout,
   * which the ingress also writes) into those of an encrypted one.
   */
  sealFields(plain: readonly (string | Buffer)[]): (string | Buffer)[] {
    let method = '';
    let time = '';
    let version = ENTRY_VERSION;
    const parts: (Buffer | null)[] = new Array<Buffer | null>(SEALED_PARTS).fill(null);
    for (let i = 0; i + 1 < plain.length; i += 2) {
      const value = plain[i + 1] as string | Buffer;
      const slot = SEALED_SLOTS.get(plain[i] as string);
      if (slot !== undefined) parts[slot] = typeof value === 'string' ? Buffer.from(value, 'latin1') : value;
      else if (plain[i] === 'm') method = String(value);
      else if (plain[i] === 't') time = String(value);
      else if (plain[i] === 'v') version = String(value);
    }
    const { id, key } = this.#encrypt;
    const iv = randomBytes(IV_BYTES);
    const cipher = createCipheriv('aes-256-gcm', key, iv);
    cipher.setAAD(aad(version, id, method, time));
    const sealed = Buffer.concat([iv, cipher.update(lengthPrefixed(parts)), cipher.final(), cipher.getAuthTag()]);
    return ['v', version, 'm', method, 't', time, F_KEY_ID, id, F_SEALED, sealed];
  }

  /**
   * The plain fields of an encrypted entry, for `decodeEntry`. Throws `EntryDecodeError` with a
   * reason an operator can act on: an unknown key id, a wrong key, or a damaged payload.
   */
  openFields(id: string, fields: RawFields): Buffer[] {
    return openSealed(id, fields, this);
  }

  /**
   * Seals a payload other than an entry (a production response, a diff record, an ID mapping)
   * with the encrypting key: `MPS1 | id length (1) | key id | iv (12) | ciphertext | tag (16)`.
   * `context` (the record's kind and Redis key) is authenticated, so a sealed value cannot be
   * moved to another key or kind unnoticed.
   */
  sealBlob(plain: Buffer, context: string): Buffer {
    const { id, key } = this.#encrypt;
    const iv = randomBytes(IV_BYTES);
    const cipher = createCipheriv('aes-256-gcm', key, iv);
    cipher.setAAD(blobAad(id, context));
    const head = Buffer.alloc(BLOB_MAGIC.length + 1 + id.length);
    BLOB_MAGIC.copy(head);
    head[BLOB_MAGIC.length] = id.length;
    head.write(id, BLOB_MAGIC.length + 1, 'latin1');
    return Buffer.concat([head, iv, cipher.update(plain), cipher.final(), cipher.getAuthTag()]);
  }

  /**
   * Opens what `sealBlob` sealed under the same context. Throws `EntryDecodeError` naming the
   * context and the reason (not sealed, unknown key id, wrong key or altered).
   */
  openBlob(sealed: Buffer, context: string): Buffer {
    if (!isSealedBlob(sealed)) throw new EntryDecodeError(`${context}: not an encrypted value`);
    const idLength = sealed[BLOB_MAGIC.length] as number;
    const at = BLOB_MAGIC.length + 1 + idLength;
    const keyId = sealed.subarray(BLOB_MAGIC.length + 1, at).toString('latin1');
    const key = this.#keys.get(keyId);
    if (key === undefined) throw new EntryDecodeError(`${context}: encrypted with key id ${JSON.stringify(keyId)}, which MIRRORPLANE_DATA_KEY does not hold`);
    if (sealed.length < at + IV_BYTES + TAG_BYTES) throw new EntryDecodeError(`${context}: encrypted value is too short`);
    try {
      const decipher = createDecipheriv('aes-256-gcm', key, sealed.subarray(at, at + IV_BYTES));
      decipher.setAAD(blobAad(keyId, context));
      decipher.setAuthTag(sealed.subarray(sealed.length - TAG_BYTES));
      return Buffer.concat([decipher.update(sealed.subarray(at + IV_BYTES, sealed.length - TAG_BYTES)), decipher.final()]);
    } catch {
      throw new EntryDecodeError(`${context}: cannot be decrypted with key id ${JSON.stringify(keyId)}: wrong key, or the value was altered`);
    }
  }

  /** `sealBlob` as text for Redis string values: `mps1:<base64>`. */
  sealText(plain: string, context: string): string {
    return `${BLOB_TEXT_PREFIX}${this.sealBlob(Buffer.from(plain, 'utf8'), context).toString('base64')}`;
  }

  /** Opens `sealText`'s output; text that is not sealed (written before the key was set) is returned as is. */
  openText(text: string, context: string): string {
    if (!text.startsWith(BLOB_TEXT_PREFIX)) return text;
    return this.openBlob(Buffer.from(text.slice(BLOB_TEXT_PREFIX.length), 'base64'), context).toString('utf8');
  }

  /**
   * A keyed digest (HMAC-SHA-256, key derived from the LAST key of the ring) for values that
   * must be looked up by name, such as a production ID in an ID-mapping key: equal inputs give
   * equal names, and the name reveals nothing of the input. The last key is the oldest, so
   * during a rotation (`k2,k1` on some processes, `k1` on others) every process agrees; names
   * change once, when the old key is dropped.
   */
  digestName(value: string): string {
    this.#nameKey ??= createHmac('sha256', [...this.#keys.values()].at(-1) as Buffer)
      .update('mirrorplane:name-key')
      .digest();
    return createHmac('sha256', this.#nameKey).update(value, 'utf8').digest('base64url');
  }

  #nameKey: Buffer | undefined;

  /** @internal */
  key(id: string): Buffer | undefined {
    return this.#keys.get(id);
  }
}

/**
 * Turns raw fields into plain fields: unchanged when the entry is not encrypted; decrypted
 * with `cipher` when it is. A sealed entry and no cipher is an error that says what to set.
 */
export function openEntryFields(id: string, fields: RawFields, cipher: EntryCipher | null): RawFields {
  if (!isSealedEntry(fields)) return fields;
  return openSealed(id, fields, cipher);
}

function openSealed(id: string, fields: RawFields, cipher: EntryCipher | null): Buffer[] {
  let version: Buffer | undefined;
  let method: Buffer | undefined;
  let time: Buffer | undefined;
  let keyId: string | undefined;
  let sealed: Buffer | undefined;
  for (let i = 0; i + 1 < fields.length; i += 2) {
    const name = (fields[i] as Buffer).toString('latin1');
    const value = fields[i + 1] as Buffer;
    switch (name) {
      case 'v':
        version = value;
        break;
      case 'm':
        method = value;
        break;
      case 't':
        time = value;
        break;
      case F_KEY_ID:
        keyId = value.toString('latin1');
        break;
      case F_SEALED:
        sealed = value;
        break;
      default:
        throw new EntryDecodeError(`entry ${id} is encrypted and also has a clear field ${JSON.stringify(name)}`);
    }
  }
  if (keyId === undefined || sealed === undefined || method === undefined || time === undefined || version === undefined) {
    throw new EntryDecodeError(`entry ${id} is encrypted but lacks one of the fields v, m, t, k, e`);
  }
  if (cipher === null) {
    throw new EntryDecodeError(`entry ${id} is encrypted with key id ${JSON.stringify(keyId)} and MIRRORPLANE_DATA_KEY is not set in this worker`);
  }
  const key = cipher.key(keyId);
  if (key === undefined) {
    throw new EntryDecodeError(
      `entry ${id} is encrypted with key id ${JSON.stringify(keyId)}, which MIRRORPLANE_DATA_KEY does not hold (it holds ${cipher.keyIds.map((k) => JSON.stringify(k)).join(', ')})`,
    );
  }
  if (sealed.length < IV_BYTES + TAG_BYTES) throw new EntryDecodeError(`entry ${id}: encrypted payload is too short`);
  let plain: Buffer;
  try {
    const decipher = createDecipheriv('aes-256-gcm', key, sealed.subarray(0, IV_BYTES));
    decipher.setAAD(aad(version.toString('latin1'), keyId, method.toString('latin1'), time.toString('latin1')));
    decipher.setAuthTag(sealed.subarray(sealed.length - TAG_BYTES));
    plain = Buffer.concat([decipher.update(sealed.subarray(IV_BYTES, sealed.length - TAG_BYTES)), decipher.final()]);
  } catch {
    throw new EntryDecodeError(`entry ${id} cannot be decrypted with key id ${JSON.stringify(keyId)}: wrong key, or the entry was altered`);
  }
  const [target, headers, body, requestId, client, trailers, protocol] = readParts(plain, [SEALED_PARTS_BEFORE_TRAILERS, SEALED_PARTS], id);
  const out: Buffer[] = [
    Buffer.from('v'),
    version,
    Buffer.from('m'),
    method,
    Buffer.from('u'),
    target ?? Buffer.alloc(0),
    Buffer.from('h'),
    headers ?? Buffer.alloc(0),
    Buffer.from('b'),
    body ?? Buffer.alloc(0),
    Buffer.from('t'),
    time,
  ];
  if (requestId) out.push(Buffer.from('r'), requestId);
  if (client) out.push(Buffer.from('a'), client);
  if (trailers) out.push(Buffer.from('T'), trailers);
  if (protocol) out.push(Buffer.from('p'), protocol);
  return out;
}

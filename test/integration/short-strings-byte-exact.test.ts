import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { decodeEntry } from '@mirrorplane/core';
import { RedisServer, sendOneByOne, startIngress, waitFor } from '../helpers/index.js';
import { RawH2Connection, headersFrame, frame, FRAME, FLAG } from '../helpers/raw-h2.js';

/**
 * Issue #17: `EncodedXadd.toWritable` copies short ASCII strings (≤ 16 chars, UTF-8 length equal to
 * UTF-16 length) byte by byte. A 200 means the entry is in Redis exactly as received: method,
 * target, header names/case/order/duplicates, body, trailers. Values around the 16-character
 * bound, latin1 bytes and short non-ASCII values are sent over raw sockets (HTTP/1.1 and h2c)
 * and compared byte for byte with XRANGE read as Buffers.
 */

const L = (s: string) => Buffer.from(s, 'latin1');

/** Every string the cases draw on: around the 16-char bound, ASCII, latin1, mixed. */
const VALUES = [
  '',
  'a',
  '0123456789abcdef', // 16 ASCII
  '0123456789abcdefg', // 17 ASCII
  '0123456789abcde', // 15
  '\xe9', // é as one latin1 byte
  '\xff\xfe\x80\x81',
  'caf\xe9 cr\xe8me br\xfbl\xe9e', // latin1, 17 bytes
  '\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9', // 16 latin1 bytes
  '0123456789abcde\xe9', // 15 ASCII + 1 latin1 = 16 bytes
  '0123456789abcdef\xe9', // 17 bytes
  '\x80',
  'tab\there', // HTAB inside a value
  '~!@#$%^&*()_+{}|',
];

const METHODS = ['GET', 'POST', 'ABCDEFGHIJKLMNOP', 'ABCDEFGHIJKLMNOPQ', "X!#$%&'*+-.^_`|~", 'M0123456789abcde'];

interface Case {
  method: string;
  target: string;
  headers: string[];
  body: Buffer;
  trailers: string[];
  id: string;
}

function cases(): Case[] {
  const out: Case[] = [];
  let n = 0;
  for (const method of METHODS) {
    for (const value of VALUES) {
      const id = `${(n++).toString(16).padStart(4, '0')}${value}`.slice(0, 17);
      const chunked = n % 3 === 0;
      out.push({
        method,
        target: `/p/${L(value).toString('hex')}?q=${value.replaceAll(' ', '').replaceAll('\t', '')}`.slice(0, 40),
        headers: ['Host', 'x', 'X-Request-ID', id, 'X-Short', value, 'x-short', value + value, 'X-SHORT', '0123456789abcdef', 'Content-Type', 'a/b'],
        body: Buffer.concat([L(value), randomBytes(n % 40)]),
        trailers: chunked ? ['X-Trailer', value, 'x-trailer-2', '\xe9\xe9'] : [],
        id,
      });
    }
  }
  return out;
}

function http1Bytes(c: Case): { bytes: Buffer; headers: string[] } {
  let head = `${c.method} ${c.target} HTTP/1.1\r\n`;
  const headers = [...c.headers];
  if (c.trailers.length > 0) headers.push('Transfer-Encoding', 'chunked');
  else headers.push('Content-Length', String(c.body.length));
  for (let i = 0; i < headers.length; i += 2) head += `${headers[i]}: ${headers[i + 1]}\r\n`;
  head += '\r\n';
  let body = c.body;
  if (c.trailers.length > 0) {
    let trailer = '';
    for (let i = 0; i < c.trailers.length; i += 2) trailer += `${c.trailers[i]}: ${c.trailers[i + 1]}\r\n`;
    body = Buffer.concat([...(c.body.length > 0 ? [L(`${c.body.length.toString(16)}\r\n`), c.body, L('\r\n')] : []), L(`0\r\n${trailer}\r\n`)]);
  }
  return { bytes: Buffer.concat([L(head), body]), headers };
}

async function entries(redis: RedisServer, stream: string) {
  const client = redis.client();
  try {
    return (await client.xrangeBuffer(stream, '-', '+')).map(([id, fields]) => ({ fields, entry: decodeEntry(id.toString(), fields) }));
  } finally {
    client.disconnect();
  }
}

const field = (fields: Buffer[], name: string) => {
  for (let i = 0; i < fields.length; i += 2) if ((fields[i] as Buffer).toString() === name) return fields[i + 1] as Buffer;
  return undefined;
};

test('HTTP/1.1: methods, targets, header values, bodies and trailers around 16 characters (ASCII, latin1) are stored byte for byte', async () => {
  const redis = await RedisServer.start();
  const { ingress, port, stream } = await startIngress(redis.url);
  try {
    const all = cases();
    const wire = all.map(http1Bytes);
    const statuses = await sendOneByOne(port, wire.length, (i) => (wire[i] as { bytes: Buffer }).bytes);
    assert.deepEqual(
      statuses,
      all.map(() => 200),
    );
    const stored = await entries(redis, stream);
    assert.equal(stored.length, all.length);
    for (let i = 0; i < all.length; i++) {
      const c = all[i] as Case;
      const { fields, entry } = stored[i] as (typeof stored)[number];
      const r = entry.request;
      assert.deepEqual(field(fields, 'm'), L(c.method), `method of case ${i}`);
      assert.deepEqual(field(fields, 'u'), L(c.target), `target of case ${i}`);
      assert.deepEqual(field(fields, 'r'), L(c.id), `request id of case ${i}`);
      assert.deepEqual(L(r.rawHeaders.join('\n')), L((wire[i] as { headers: string[] }).headers.join('\n')), `headers of case ${i}`);
      assert.ok(r.body.equals(c.body), `body of case ${i}`);
      assert.deepEqual(r.trailers ?? [], c.trailers, `trailers of case ${i}`);
    }
  } finally {
    await ingress.stop('SIGKILL');
    await redis.close();
  }
});

test('h2c: methods of 16/17 characters and latin1 header values around 16 bytes are stored byte for byte', async () => {
  const redis = await RedisServer.start();
  const { ingress, port, stream } = await startIngress(redis.url);
  const conn = await RawH2Connection.open(port);
  try {
    const sent: { method: string; path: string; fields: [string, string][]; body: Buffer }[] = [];
    let streamId = 1;
    for (const method of METHODS) {
      for (const value of VALUES) {
        const path = `/h2/${L(value).toString('hex')}`;
        const fields: [string, string][] = [
          [':method', method],
          [':scheme', 'http'],
          [':path', path],
          [':authority', 'prod.example'],
          ['x-short', value],
          ['x-short', value + value],
          ['x-request-id', `h2-${streamId}`],
        ];
        const body = Buffer.concat([L(value), randomBytes(streamId % 7)]);
        sent.push({ method, path, fields, body });
        conn.write(Buffer.concat([headersFrame(streamId, fields), frame(FRAME.DATA, FLAG.END_STREAM, streamId, body)]));
        streamId += 2;
      }
    }
    const client = redis.client();
    try {
      await waitFor('every stream stored', async () => (await client.xlen(stream)) >= sent.length, 30_000);
    } finally {
      client.disconnect();
    }
    const stored = await entries(redis, stream);
    assert.equal(stored.length, sent.length);
    const byId = new Map(stored.map((s) => [field(s.fields, 'r')?.toString('latin1'), s]));
    for (let i = 0; i < sent.length; i++) {
      const s = sent[i] as (typeof sent)[number];
      const got = byId.get(`h2-${1 + 2 * i}`);
      assert.ok(got, `stream ${1 + 2 * i} stored`);
      assert.deepEqual(field(got.fields, 'm'), L(s.method), `method of stream ${1 + 2 * i}`);
      assert.deepEqual(field(got.fields, 'u'), L(s.path));
      const expected = s.fields.filter(([n]) => n !== ':method' && n !== ':path').flat();
      assert.deepEqual(L(got.entry.request.rawHeaders.join('\n')), L(expected.join('\n')), `headers of stream ${1 + 2 * i}`);
      assert.ok(got.entry.request.body.equals(s.body));
    }
  } finally {
    conn.close();
    await ingress.stop('SIGKILL');
    await redis.close();
  }
});

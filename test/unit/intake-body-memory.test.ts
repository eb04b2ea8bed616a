import { test } from 'node:test';
import assert from 'node:assert/strict';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { RequestParser } from '@mirrorplane/ingress';

// A body made of small chunks must not keep the buffers they arrived in alive: memory per
// request is bounded by MAX_BODY_BYTES (+ MAX_HEADER_BYTES), not by the bytes on the wire.

setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;

async function collected(refs: WeakRef<ArrayBuffer>[]): Promise<number> {
  // WeakRefs are only cleared after the current job: yield, collect, yield.
  await new Promise((r) => setImmediate(r));
  gc();
  await new Promise((r) => setImmediate(r));
  gc();
  return refs.filter((r) => r.deref() === undefined).length;
}

test('1-byte chunks that arrive as small views of large buffers: the buffers are not kept while the body is read', async () => {
  const parser = new RequestParser({ maxHeaderBytes: 64 * 1024, maxBodyBytes: 1 << 20 });
  parser.feed(Buffer.from('POST /c HTTP/1.1\r\nhost: a\r\ntransfer-encoding: chunked\r\n\r\n', 'latin1'));
  assert.equal(parser.next()?.kind, 'head');
  const refs: WeakRef<ArrayBuffer>[] = [];
  const n = 300;
  const feedOne = (i: number) => {
    // A 64 KiB read of which only one chunk is this request's (as a socket or TLS read may hand over).
    const big = new ArrayBuffer(64 * 1024);
    refs.push(new WeakRef(big));
    const piece = Buffer.from(big, 0, 6);
    piece.write(`1\r\n${String.fromCharCode(65 + (i % 26))}\r\n`, 'latin1');
    parser.feed(piece);
    assert.equal(parser.next(), null);
  };
  for (let i = 0; i < n; i++) feedOne(i);
  const freed = await collected(refs);
  // Kept by reference, all 300 × 64 KiB would stay alive until the request ends.
  assert.ok(freed >= n - 2, `${n - freed} of ${n} 64 KiB buffers are still alive while the body is being read`);
  parser.feed(Buffer.from('0\r\n\r\n', 'latin1'));
  const event = parser.next();
  assert.equal(event?.kind, 'request');
  if (event?.kind !== 'request') return;
  assert.equal(event.request.body.toString('latin1'), Array.from({ length: n }, (_, i) => String.fromCharCode(65 + (i % 26))).join(''));
});

test('a head split anywhere parses to the same request, and bytes after it (a pipelined body) are kept exactly', () => {
  // The growable buffer is compacted and grown while bytes are pending: split at every offset.
  const bytes = Buffer.from(
    'PUT /x HTTP/1.1\r\nhost: a\r\nx-long: ' + 'v'.repeat(5000) + '\r\ncontent-length: 5\r\n\r\nhello' + 'GET /y HTTP/1.1\r\nhost: b\r\n\r\n',
    'latin1',
  );
  for (const size of [1, 2, 3, 7, 16, 100, 4095, 4097]) {
    const parser = new RequestParser({ maxHeaderBytes: 64 * 1024, maxBodyBytes: 1024 });
    const got: string[] = [];
    for (let i = 0; i < bytes.length; i += size) {
      parser.feed(Buffer.from(bytes.subarray(i, i + size)));
      for (let e = parser.next(); e !== null; e = parser.next()) {
        if (e.kind === 'request') got.push(`${e.request.method} ${e.request.target} ${e.request.rawHeaders.length} ${e.request.body.toString('latin1')}`);
        if (e.kind === 'refused') got.push(`refused ${e.refusal.detail}`);
      }
    }
    assert.deepEqual(got, ['PUT /x 6 hello', 'GET /y 2 '], `pieces of ${size}`);
  }
});

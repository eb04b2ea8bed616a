import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { RecordingWriter, recordBody, redactLogValue } from '@mirrorplane/runtime';
import { waitFor } from '../helpers/index.js';

const logger = pino({ level: 'silent' });

function files(dir: string): string[] {
  return readdirSync(dir)
    .filter((f) => f.endsWith('.jsonl'))
    .sort()
    .map((f) => join(dir, f));
}

function withDir(fn: (dir: string) => Promise<void>): () => Promise<void> {
  return async () => {
    const dir = mkdtempSync(join(tmpdir(), 'mp-rotation-'));
    try {
      await fn(dir);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  };
}

test(
  'files rotate by size; every line is written once, in order',
  withDir(async (dir) => {
    const writer = new RecordingWriter({ dir: join(dir, 'nested'), maxFileBytes: 4096, maxFileAgeMs: 3_600_000, maxQueuedBytes: 1 << 20, logger });
    const lines = Array.from({ length: 600 }, (_, i) => JSON.stringify({ i, pad: 'p'.repeat(i % 90) }));
    try {
      for (const [i, line] of lines.entries()) {
        assert.equal(writer.write(line), true);
        // Some lines in separate ticks, so the writer sees both bursts and trickles.
        if (i % 50 === 0) await new Promise((r) => setImmediate(r));
      }
    } finally {
      await writer.close();
    }
    const written = files(join(dir, 'nested'));
    assert.ok(written.length > 5, `rotated into ${written.length} files`);
    for (const f of written) assert.ok(statSync(f).size <= 4096, `${f} is within maxFileBytes`);
    const read = written.flatMap((f) => readFileSync(f, 'utf8').split('\n').filter(Boolean));
    assert.deepEqual(read, lines);
    assert.equal(writer.written, lines.length);
    assert.equal(writer.lost, 0);
    assert.equal(writer.write('late'), false, 'a closed writer takes nothing');
    assert.equal(writer.lost, 1);
  }),
);

test(
  'an idle file is closed when it reaches its age; the next line begins a new file',
  withDir(async (dir) => {
    const writer = new RecordingWriter({ dir, maxFileBytes: 1 << 20, maxFileAgeMs: 1000, maxQueuedBytes: 1 << 20, logger });
    try {
      writer.write('{"n":1}');
      await waitFor('the first file', () => writer.currentFile);
      await waitFor('the first file to be closed by age', () => writer.currentFile === null, 20_000);
      writer.write('{"n":2}');
      await waitFor('a second file', () => files(dir).length === 2 && writer.written === 2, 20_000);
    } finally {
      await writer.close();
    }
    assert.deepEqual(
      files(dir).map((f) => readFileSync(f, 'utf8')),
      ['{"n":1}\n', '{"n":2}\n'],
    );
  }),
);

test(
  'writing never waits: past maxQueuedBytes lines are dropped and counted',
  withDir(async (dir) => {
    let lostReported = 0;
    const writer = new RecordingWriter({
      dir,
      maxFileBytes: 1 << 30,
      maxFileAgeMs: 3_600_000,
      maxQueuedBytes: 64 * 1024,
      logger,
      onLost: (n) => {
        lostReported += n;
      },
    });
    const line = 'x'.repeat(1023);
    let accepted = 0;
    try {
      // All in one tick: the disk cannot have taken anything yet.
      for (let i = 0; i < 200; i++) if (writer.write(line)) accepted += 1;
    } finally {
      await writer.close();
    }
    // What fits in the queue, plus the first line, which the writing loop took at once.
    assert.ok(accepted === 64 || accepted === 65, `accepted ${accepted}`);
    assert.equal(writer.written, accepted);
    assert.equal(writer.lost, 200 - accepted);
    assert.equal(lostReported, 200 - accepted);
    assert.equal(readFileSync(files(dir)[0]!, 'utf8').split('\n').filter(Boolean).length, accepted);
  }),
);

test('bodies are recorded as text when UTF-8, base64 otherwise, cut at the limit', () => {
  assert.deepEqual(recordBody(Buffer.from('héllo'), 100), { size: 6, text: 'héllo' });
  assert.deepEqual(recordBody(Buffer.from('héllo'), 2), {
    size: 6,
    text: Buffer.from('h\xc3', 'latin1').toString('base64'),
    encoding: 'base64',
    truncated: true,
  });
  assert.deepEqual(recordBody(Buffer.from([0, 1, 2]), 100), { size: 3, text: 'AAEC', encoding: 'base64' });
  assert.deepEqual(recordBody(Buffer.alloc(0), 100), { size: 0, text: '' });
  assert.deepEqual(recordBody(Buffer.from('ok'), 100, true), { size: 2, text: 'ok', truncated: true });
});

test('the hook logger redacts header arrays and header-named keys at any depth', () => {
  const names = new Set(['authorization', 'cookie', 'x-api-key']);
  assert.deepEqual(
    redactLogValue(
      { sent: ['Host', 'a', 'Authorization', 'Bearer t'], nested: { deeper: { Cookie: 's=1', ok: 1 } }, body: Buffer.from('abc'), list: [['x-api-key', 'k']] },
      names,
    ),
    {
      sent: ['Host', 'a', 'Authorization', '[redacted]'],
      nested: { deeper: { Cookie: '[redacted]', ok: 1 } },
      body: '[3 bytes]',
      list: [['x-api-key', '[redacted]']],
    },
  );
});

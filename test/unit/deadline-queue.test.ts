import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { DeadlineQueue } from '../../apps/worker/src/deadline-queue.js';

// The replay deadline is its own cancellation (no AbortController per replay): it must behave
// as the AbortSignal it replaced for what the HTTP client uses of it.

test('a deadline that passes aborts once, with a TimeoutError reason, and calls the listeners still attached', async () => {
  const queue = new DeadlineQueue(30);
  const d = queue.start();
  const signal = d.signal;
  const calls: string[] = [];
  const kept = () => calls.push('kept');
  const removed = () => calls.push('removed');
  signal.addEventListener('abort', kept);
  signal.addEventListener('abort', removed);
  signal.removeEventListener('abort', removed);
  assert.equal(signal.aborted, false);
  const deadline = Date.now() + 10_000;
  while (!signal.aborted && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
  assert.equal(signal.aborted, true);
  assert.ok(signal.reason instanceof Error);
  assert.equal((signal.reason as DOMException).name, 'TimeoutError');
  assert.deepEqual(calls, ['kept']);
  d.expire(); // a second expiry does nothing
  assert.deepEqual(calls, ['kept']);
  queue.close();
});

test('finished, expired, listened and unlistened in any order: a finished deadline never aborts, an expired one calls each attached listener once (attached twice is once, as on an EventTarget)', () => {
  fc.assert(
    fc.property(fc.array(fc.constantFrom('add-a', 'add-b', 'remove-a', 'remove-b', 'finish', 'expire'), { maxLength: 12 }), (ops) => {
      const queue = new DeadlineQueue(60_000);
      const d = queue.start();
      const calls = { a: 0, b: 0 };
      const listeners = { a: () => calls.a++, b: () => calls.b++ };
      const attached = { a: 0, b: 0 };
      let finished = false;
      let aborted = false;
      const expected = { a: 0, b: 0 };
      for (const op of ops) {
        const [verb, name] = op.split('-') as [string, 'a' | 'b'];
        if (verb === 'add') {
          d.signal.addEventListener('abort', listeners[name]);
          if (!finished) attached[name] = 1; // as on an EventTarget: once
        } else if (verb === 'remove') {
          d.signal.removeEventListener('abort', listeners[name]);
          attached[name] = 0;
        } else if (op === 'finish') {
          d.finish();
          if (!finished) attached.a = attached.b = 0;
          finished = true;
        } else {
          d.expire();
          if (!finished) {
            aborted = true;
            expected.a += attached.a;
            expected.b += attached.b;
            attached.a = attached.b = 0;
          }
          finished = true;
        }
      }
      queue.close();
      assert.equal(d.signal.aborted, aborted);
      assert.deepEqual(calls, expected);
    }),
  );
});

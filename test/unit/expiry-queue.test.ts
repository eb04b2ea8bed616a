import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { ExpiryQueue, type Expiring } from '@mirrorplane/runtime';

// One timer serves every append deadline of the ingress (and every replay deadline of the
// worker): an item expires once, only if it did not finish, and finished items do not pile up.

class Item implements Expiring {
  finished = false;
  expired = 0;
  constructor(readonly at: number) {}
  expire(): void {
    this.expired += 1;
    this.finished = true;
  }
}

async function until(check: () => boolean, what: string): Promise<void> {
  const deadline = Date.now() + 20_000;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

test('generated finish patterns: exactly the unfinished items expire, each once, and the queue empties', async () => {
  await fc.assert(
    fc.asyncProperty(fc.array(fc.boolean(), { minLength: 1, maxLength: 60 }), async (finishes) => {
      const queue = new ExpiryQueue<Item>(20);
      const items = finishes.map(() => {
        const item = new Item(queue.deadlineAt());
        queue.add(item);
        return item;
      });
      finishes.forEach((finish, i) => {
        if (finish) (items[i] as Item).finished = true;
      });
      await until(() => items.every((item) => item.finished), 'every item to finish or expire');
      items.forEach((item, i) => assert.equal(item.expired, finishes[i] ? 0 : 1, `item ${i}`));
      // A late check of the timer expires nothing twice.
      await new Promise((r) => setTimeout(r, 30));
      items.forEach((item, i) => assert.equal(item.expired, finishes[i] ? 0 : 1, `item ${i} after the timer ran again`));
      queue.add(new Item(queue.deadlineAt()));
      assert.equal(queue.size, 1, 'finished and expired items are dropped');
      queue.close();
    }),
    { numRuns: 25 },
  );
});

test('items finishing in the order they were added are dropped as new ones come, long before their deadline', () => {
  const queue = new ExpiryQueue<Item>(60_000);
  let previous: Item | null = null;
  for (let i = 0; i < 100_000; i++) {
    const item = new Item(queue.deadlineAt());
    queue.add(item);
    if (previous) previous.finished = true;
    previous = item;
  }
  assert.ok(queue.size <= 2, `held ${queue.size} items`);
  queue.close();
});

test('an unfinished item holds the ones behind it only until it expires; close() stops everything', async () => {
  const queue = new ExpiryQueue<Item>(30);
  const stuck = new Item(queue.deadlineAt());
  queue.add(stuck);
  const rest = Array.from({ length: 2000 }, () => {
    const item = new Item(queue.deadlineAt());
    queue.add(item);
    item.finished = true;
    return item;
  });
  assert.equal(queue.size, 2001);
  await until(() => stuck.expired === 1, 'the stuck item to expire');
  queue.add(new Item(queue.deadlineAt()));
  assert.equal(queue.size, 1);
  assert.ok(rest.every((item) => item.expired === 0));
  queue.close();
  assert.equal(queue.size, 0);
});

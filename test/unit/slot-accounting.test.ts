import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { SlotAccounting } from '../../apps/worker/src/slot-accounting.js';

// Model-based test of the worker's slot accounting (issue 11, fault 1): reads, finishes, claims
// (an entry delivered again), refreshes racing finishes, retry jobs beyond capacity, and close,
// in random orders. The model is the set of entries whose replay runs in this process.

interface Model {
  capacity: number;
  /** Entries whose replay runs now. */
  running: Set<string>;
  closed: boolean;
  /** Pending refreshes: the stale lists they captured, touched when they complete. */
  refreshes: string[][];
}

type Real = { slots: SlotAccounting; now: number };
type Cmd = fc.Command<Model, Real>;

function check(m: Model, r: Real): void {
  assert.equal(r.slots.held, m.running.size, 'held = running replays');
  assert.equal(r.slots.free, m.capacity - m.running.size);
  assert.deepEqual(new Set(r.slots.keys()), m.running, 'a slot is held exactly for each running replay');
}

/** The read loop delivers a new entry (only while slots are free, as it reads no more than that). */
class Read implements Cmd {
  constructor(readonly key: string) {}
  check(m: Readonly<Model>) {
    return !m.running.has(this.key);
  }
  run(m: Model, r: Real) {
    const ok = r.slots.acquire(this.key, r.now);
    const expected = !m.closed && m.running.size < m.capacity;
    assert.equal(ok, expected);
    if (ok) m.running.add(this.key);
    check(m, r);
  }
  toString() {
    return `read(${this.key})`;
  }
}

/** XAUTOCLAIM returns an entry again: counted once if it already runs here. */
class Claim implements Cmd {
  constructor(
    readonly key: string,
    readonly over: boolean,
  ) {}
  check() {
    return true;
  }
  run(m: Model, r: Real) {
    const ok = this.over ? r.slots.acquireOver(this.key, r.now) : r.slots.acquire(this.key, r.now);
    const expected = !m.running.has(this.key) && (this.over || (!m.closed && m.running.size < m.capacity));
    assert.equal(ok, expected, 'an entry already running is never counted twice');
    if (ok) m.running.add(this.key);
    check(m, r);
  }
  toString() {
    return `claim(${this.key}${this.over ? ', over' : ''})`;
  }
}

/** A replay finishes (or a duplicate finish arrives): idempotent. */
class Finish implements Cmd {
  constructor(readonly key: string) {}
  check() {
    return true;
  }
  run(m: Model, r: Real) {
    assert.equal(r.slots.release(this.key), m.running.has(this.key));
    m.running.delete(this.key);
    check(m, r);
  }
  toString() {
    return `finish(${this.key})`;
  }
}

/** A refresh begins: it captures the stale entries and sends XCLAIM. */
class RefreshStart implements Cmd {
  check() {
    return true;
  }
  run(m: Model, r: Real) {
    const stale = r.slots.stale(r.now + 1);
    assert.deepEqual(new Set(stale), m.running);
    m.refreshes.push(stale);
    check(m, r);
  }
  toString() {
    return 'refresh-start';
  }
}

/** Redis answers the refresh: the captured entries are touched, finished or not. */
class RefreshEnd implements Cmd {
  check(m: Readonly<Model>) {
    return m.refreshes.length > 0;
  }
  run(m: Model, r: Real) {
    const stale = m.refreshes.shift() as string[];
    r.now += 10;
    for (const key of stale) r.slots.touch(key, r.now);
    // The leak of fault 1: touching an entry that finished meanwhile must not bring its slot back.
    check(m, r);
  }
  toString() {
    return 'refresh-end';
  }
}

class Tick implements Cmd {
  constructor(readonly ms: number) {}
  check() {
    return true;
  }
  run(_m: Model, r: Real) {
    r.now += this.ms;
  }
  toString() {
    return `tick(${this.ms})`;
  }
}

class Close implements Cmd {
  check() {
    return true;
  }
  run(m: Model, r: Real) {
    r.slots.close();
    m.closed = true;
    check(m, r);
  }
  toString() {
    return 'close';
  }
}

test('slot accounting follows the model under any interleaving of read, claim, finish, refresh and close', () => {
  const key = fc.constantFrom('e1', 'e2', 'e3', 'e4', 'e5', 'e6', 'job:e1', 'e1~1');
  const commands = [
    key.map((k) => new Read(k)),
    fc.tuple(key, fc.boolean()).map(([k, over]) => new Claim(k, over)),
    key.map((k) => new Finish(k)),
    fc.constant(new RefreshStart()),
    fc.constant(new RefreshEnd()),
    fc.integer({ min: 0, max: 500 }).map((ms) => new Tick(ms)),
    fc.constant(new Close()),
  ];
  fc.assert(
    fc.property(fc.integer({ min: 1, max: 4 }), fc.commands(commands, { maxCommands: 60 }), (capacity, cmds) => {
      const model: Model = { capacity, running: new Set(), closed: false, refreshes: [] };
      const real: Real = { slots: new SlotAccounting(capacity), now: 1_000_000 };
      fc.modelRun(() => ({ model, real }), cmds);
    }),
    { numRuns: 500 },
  );
});

test('slot accounting: waiters wake on release and on close; whenEmpty resolves at the last release', async () => {
  const slots = new SlotAccounting(2);
  assert.ok(slots.acquire('a'));
  assert.ok(slots.acquire('b'));
  assert.equal(slots.acquire('c'), false, 'full');
  const woke = slots.changed();
  slots.release('a');
  await woke;
  slots.close();
  await slots.changed();
  assert.equal(slots.acquire('c'), false, 'closed');
  let empty = false;
  const done = slots.whenEmpty().then(() => {
    empty = true;
  });
  await Promise.resolve();
  assert.equal(empty, false);
  slots.release('b');
  await done;
  assert.equal(slots.held, 0);
  assert.throws(() => new SlotAccounting(0), { code: 'MP_ERR_INTERNAL' });
});

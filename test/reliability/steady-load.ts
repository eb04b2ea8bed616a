import assert from 'node:assert/strict';
import { header, requestHead, sendRaw, waitFor, type Received, type RecordingServer, type Stack } from '../helpers/index.js';

/** Kept here for the tests that import it from this module; written once, in test/helpers/ingress.ts. */
export { metric } from '../helpers/index.js';

export interface SteadyLoadOptions {
  port: number;
  /** Requests started per second (bounded by `maxInFlight`). */
  rate: number;
  /** Prefix of each request's X-Request-ID, unique per test. */
  tag: string;
  maxInFlight?: number;
  bodyBytes?: number;
  /** Hard bound: the load never sends more than this many requests. */
  maxRequests?: number;
}

/**
 * A bounded, steady stream of POSTs to the ingress, one fresh connection each, each with its
 * own X-Request-ID. Only a 200 counts as accepted (acknowledged); everything else (503, a
 * refused or reset connection) is recorded as not accepted, with its reason.
 */
export class SteadyLoad {
  readonly accepted = new Set<string>();
  readonly refused = new Map<string, number>();
  sent = 0;
  #inFlight = new Set<Promise<void>>();
  #timer: NodeJS.Timeout | null = null;
  readonly #options: Required<SteadyLoadOptions>;
  readonly #body: Buffer;

  constructor(options: SteadyLoadOptions) {
    this.#options = { maxInFlight: 32, bodyBytes: 64, maxRequests: 20_000, ...options };
    this.#body = Buffer.alloc(this.#options.bodyBytes, 'm');
  }

  static start(options: SteadyLoadOptions): SteadyLoad {
    const load = new SteadyLoad(options);
    load.start();
    return load;
  }

  start(): void {
    const tick = 20;
    let owed = 0;
    this.#timer = setInterval(() => {
      owed += (this.#options.rate * tick) / 1000;
      while (owed >= 1 && this.#inFlight.size < this.#options.maxInFlight && this.sent < this.#options.maxRequests) {
        owed -= 1;
        this.#sendOne();
      }
      // Capacity not used in a tick is not saved up: the load stays steady after a stall.
      owed = Math.min(owed, 1);
    }, tick);
  }

  #sendOne(): void {
    const id = `${this.#options.tag}-${this.sent++}`;
    const p = sendRaw(this.#options.port, requestHead('POST', `/load/${id}`, ['Host', 'load.example', 'X-Request-ID', id], this.#body.length), this.#body)
      .then(
        (r) => {
          if (r.status === 200) this.accepted.add(id);
          else this.#refuse(`status ${r.status}`);
        },
        (error: Error) => this.#refuse((error as NodeJS.ErrnoException).code ?? 'no answer'),
      )
      .finally(() => this.#inFlight.delete(p));
    this.#inFlight.add(p);
  }

  #refuse(reason: string): void {
    this.refused.set(reason, (this.refused.get(reason) ?? 0) + 1);
  }

  /** Stops sending and waits for every request in flight to be answered. */
  async stop(): Promise<void> {
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = null;
    while (this.#inFlight.size > 0) await Promise.all([...this.#inFlight]);
  }

  get refusedCount(): number {
    let n = 0;
    for (const count of this.refused.values()) n += count;
    return n;
  }
}

/** Staging's copies by X-Request-ID. */
export function copiesByRequestId(received: readonly Received[]): Map<string, Received[]> {
  const out = new Map<string, Received[]>();
  for (const r of received) {
    const id = header(r.rawHeaders, 'x-request-id');
    if (id === undefined) continue;
    const list = out.get(id);
    if (list) list.push(r);
    else out.set(id, [r]);
  }
  return out;
}

/** Accepted ids that staging has not received yet. */
export function missing(staging: RecordingServer, accepted: ReadonlySet<string>): string[] {
  const seen = copiesByRequestId(staging.received);
  return [...accepted].filter((id) => !seen.has(id));
}

/**
 * At-least-once, checked: every accepted request reached staging; every copy of one request
 * carries the same x-mirrorplane-id, and every copy but one is a later attempt. Returns how many
 * requests staging received more than once.
 */
export function assertAtLeastOnce(staging: RecordingServer, accepted: ReadonlySet<string>): number {
  const seen = copiesByRequestId(staging.received);
  const lost = [...accepted].filter((id) => !seen.has(id));
  assert.deepEqual(lost, [], `accepted requests that never reached staging: ${lost.length}`);
  let repeated = 0;
  for (const [id, copies] of seen) {
    if (copies.length === 1) continue;
    repeated += 1;
    const entryIds = new Set(copies.map((c) => header(c.rawHeaders, 'x-mirrorplane-id')));
    assert.equal(entryIds.size, 1, `copies of ${id} carry one x-mirrorplane-id: ${[...entryIds].join(', ')}`);
    // Copies can reach staging out of order (a killed worker's last bytes may land after the
    // new worker's try), so the check is on the set: the repeats are later attempts.
    const attempts = copies.map((c) => Number(header(c.rawHeaders, 'x-mirrorplane-attempt'))).sort((a, b) => a - b);
    assert.ok(
      attempts.slice(1).every((a) => a >= 2),
      `a repeat of ${id} is a later attempt: ${attempts.join(', ')}`,
    );
  }
  return repeated;
}

/**
 * Waits until the ingress accepts a request (it answers 503 until it has reached Redis). The
 * probe is a GET without X-Request-ID, so the load's bookkeeping never counts it.
 */
export async function untilAccepting(port: number): Promise<void> {
  await waitFor(
    'the ingress to accept',
    async () => (await sendRaw(port, requestHead('GET', '/ready-probe', ['Host', 'probe.example']))).status === 200,
    30_000,
    100,
  );
}

/**
 * Waits until nothing is left to replay (backlog, pending and retrying all 0), then checks
 * that nothing ended in the failed set. Resolves with the deployment's status.
 */
export async function drainedWithoutFailures(stack: Stack, timeoutMs = 60_000): Promise<Awaited<ReturnType<Stack['status']>>> {
  const status = await waitFor(
    'the stream and the retry queue to drain',
    async () => {
      const s = await stack.status();
      return s.backlog === 0 && s.pending === 0 && s.retrying === 0 ? s : null;
    },
    timeoutMs,
  );
  assert.equal(status.failed, 0, 'nothing in the failed set');
  return status;
}

/** How many copies of each request (by X-Request-ID) staging received. */
export function countCopies(received: readonly Received[]): Map<string, number> {
  const out = new Map<string, number>();
  for (const [id, copies] of copiesByRequestId(received)) out.set(id, copies.length);
  return out;
}

/** When each try of each request (by X-Request-ID) reached staging (`receivedAt`, ms), in arrival order. */
export function tryTimes(received: readonly Received[]): Map<string, number[]> {
  const out = new Map<string, number[]>();
  for (const [id, copies] of copiesByRequestId(received))
    out.set(
      id,
      copies.map((c) => c.receivedAt),
    );
  return out;
}

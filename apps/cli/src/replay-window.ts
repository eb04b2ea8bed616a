import { formatCount, formatDuration } from './format.js';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  createPartitioner,
  decodeEntry,
  encodeEntryFields,
  EntryCipher,
  errorMessage,
  headerObject,
  InvalidValueError,
  openEntryFields,
  parseAmplify,
  parseDuration,
  qualifyId,
  someHeader,
  streamIdTime,
  type CompiledPipeline,
  type Config,
  type Entry,
  type Keys,
  type MirroredRequest,
} from '@mirrorplane/core';
import { createLogger, RateLimiter, type RedisClient } from '@mirrorplane/runtime';
import type { RecordedBody, RecordedExchange } from '@mirrorplane/runtime';
import { StagingClient } from '@mirrorplane/worker';
import { UsageError } from './process.js';

/**
 * `mirrorplane replay --from <time> --to <time>`: replays a window of accepted traffic again,
 * with its original inter-arrival timing scaled by `--speed`. The window comes from the
 * stream (kept there by STREAM_RETENTION) or from recording files (`--file`).
 *
 * - Without `--staging`, the window is appended to the stream again, as new entries: the
 *   workers replay it to their staging through their pipeline, with retries and the
 *   failed set, like live traffic.
 * - With `--staging URL`, this process replays the window itself to that origin (a new
 *   staging build, say) through the configured pipeline, and reports what it answered.
 */

/** `2026-11-26T10:00:00Z`, `1764151200000` (epoch ms), `now`, `-15m`, `2h ago`. */
export function parseTime(text: string, now = Date.now()): number {
  const t = text.trim();
  if (t === 'now') return now;
  const relative = /^-(.+)$/.exec(t) ?? /^(.+?)\s+ago$/i.exec(t);
  if (relative) {
    const ms = parseDuration(relative[1] as string);
    if (ms !== null) return now - ms;
  }
  if (/^\d{10,16}$/.test(t)) return Number(t);
  // A date and time; without a zone it would depend on the operator's TZ, so one is required.
  if (/^\d{4}-\d\d-\d\d[T ]\d\d:\d\d(:\d\d(\.\d+)?)?(Z|[+-]\d\d:?\d\d)$/i.test(t)) {
    const ms = Date.parse(t.replace(' ', 'T'));
    if (Number.isFinite(ms)) return ms;
  }
  throw new InvalidValueError(`expected a time like 2026-11-26T10:00:00Z, epoch milliseconds, now, -15m or "2h ago"; got ${JSON.stringify(text)}`);
}

/** `2x`, `0.5x`, `3`, or `max` (no pacing): the factor real time is divided by. */
export function parseSpeed(text: string): number {
  const t = text.trim().toLowerCase();
  if (t === 'max') return Infinity;
  const m = /^(\d+(?:\.\d+)?)x?$/.exec(t);
  const n = m ? Number(m[1]) : NaN;
  if (!(n > 0) || n > 10_000) throw new InvalidValueError(`expected a speed like 2x, 0.5x or max; got ${JSON.stringify(text)}`);
  return n;
}

/** What a filter sees of a request. */
export interface FilterSubject {
  method: string;
  target: string;
  rawHeaders: readonly string[];
}

/**
 * `method=POST,PUT path=^/api header.x-tenant=^acme`: every term must match. `method` takes a
 * comma list (case-insensitive), `path` and `header.<name>` a regular expression.
 */
export function parseFilter(text: string): (r: FilterSubject) => boolean {
  const tests: ((r: FilterSubject) => boolean)[] = [];
  for (const term of text.trim().split(/\s+/).filter(Boolean)) {
    const eq = term.indexOf('=');
    if (eq <= 0) throw new InvalidValueError(`filter term ${JSON.stringify(term)}: expected key=value (method=, path=, header.<name>=)`);
    const key = term.slice(0, eq).toLowerCase();
    const value = term.slice(eq + 1);
    const regex = () => {
      try {
        return new RegExp(value);
      } catch (error) {
        throw new InvalidValueError(`filter term ${JSON.stringify(term)}: ${errorMessage(error)}`);
      }
    };
    if (key === 'method') {
      const methods = new Set(
        value
          .split(',')
          .map((m) => m.trim().toUpperCase())
          .filter(Boolean),
      );
      tests.push((r) => methods.has(r.method.toUpperCase()));
    } else if (key === 'path') {
      const re = regex();
      tests.push((r) => re.test(r.target));
    } else if (key.startsWith('header.') && key.length > 'header.'.length) {
      const name = key.slice('header.'.length);
      const re = regex();
      tests.push((r) => someHeader(r.rawHeaders, name, (value) => re.test(value)));
    } else {
      throw new InvalidValueError(`filter term ${JSON.stringify(term)}: unknown key ${JSON.stringify(key)} (method, path, header.<name>)`);
    }
  }
  return (r) => tests.every((t) => t(r));
}

/** One request of the window. */
interface WindowItem {
  /** When production received it (ms since the epoch): the timing to reproduce. */
  time: number;
  /** The stream entry id, or the recording's entry id. */
  id: string;
  request: MirroredRequest;
  /** The stream entry's fields as stored (sealed when encryption is on), to append them as they are. */
  rawFields?: Buffer[];
}

type StreamPage = [string, Buffer[]][];

/** Merges the windows of several partitions into one, in time order. */
async function* mergeByTime(sources: AsyncGenerator<WindowItem>[]): AsyncGenerator<WindowItem> {
  const heads = await Promise.all(sources.map((g) => g.next()));
  for (;;) {
    let best = -1;
    for (let i = 0; i < heads.length; i++) {
      const h = heads[i] as IteratorResult<WindowItem>;
      if (!h.done && (best === -1 || h.value.time < (heads[best] as IteratorYieldResult<WindowItem>).value.time)) best = i;
    }
    if (best === -1) return;
    yield (heads[best] as IteratorYieldResult<WindowItem>).value;
    heads[best] = await (sources[best] as AsyncGenerator<WindowItem>).next();
  }
}

/** Reads the stream's entries between two times, a page at a time. */
async function* readStreamWindow(
  redis: RedisClient,
  keys: Keys,
  partition: number,
  from: number,
  to: number,
  cipher: EntryCipher | null,
  onUndecodable: (id: string, why: string) => void,
): AsyncGenerator<WindowItem> {
  let start = `${from}-0`;
  for (;;) {
    const page = (
      await (redis as unknown as { xrangeBuffer(...a: (string | number)[]): Promise<[Buffer, Buffer[]][]> }).xrangeBuffer(
        keys.stream,
        start,
        String(to),
        'COUNT',
        200,
      )
    ).map(([id, f]) => [id.toString(), f]) as StreamPage;
    for (const [id, fields] of page) {
      let entry: Entry;
      try {
        entry = decodeEntry(qualifyId(id, partition), openEntryFields(id, fields, cipher));
      } catch (error) {
        onUndecodable(id, errorMessage(error));
        continue;
      }
      yield { time: streamIdTime(id), id: entry.id, request: entry.request, rawFields: fields };
    }
    const last = page[page.length - 1];
    if (!last || page.length < 200) return;
    start = `(${last[0]}`;
  }
}

function recordedBody(body: RecordedBody): Buffer {
  return body.encoding === 'base64' ? Buffer.from(body.text, 'base64') : Buffer.from(body.text, 'utf8');
}

/** A recording's line as the request production received (headers as recorded: secrets redacted). */
export function requestFromRecording(r: RecordedExchange): MirroredRequest {
  return {
    method: r.mirrored.method,
    target: r.mirrored.target,
    rawHeaders: r.mirrored.headers.flat(),
    body: recordedBody(r.mirrored.body),
    receivedAt: Date.parse(r.receivedAt),
    requestId: r.requestId,
    clientAddress: r.mirrored.clientAddress,
    ...(r.protocol === 'HTTP/2' && { protocol: 'HTTP/2' as const }),
  };
}

export interface ReplayWindowOptions {
  config: Config;
  redis: RedisClient;
  /** Every partition's keys (one without partitions). */
  keys: readonly Keys[];
  from: number;
  to: number;
  speed: number;
  filter: ((r: FilterSubject) => boolean) | null;
  /** Recordings to replay instead of the stream (already read and checked). */
  recordings: readonly RecordedExchange[] | null;
  /** Replay to this origin from here, instead of appending to the stream. */
  direct: { pipeline: CompiledPipeline } | null;
  /** Requests in flight at once when replaying directly. */
  concurrency: number;
  /** Copies of each request sent when replaying directly (`--amplify`; 1: one), on top of a rule's `amplify`. */
  amplify?: number;
  progress: (fraction: number, sent: number) => void;
}

export interface ReplayWindowSummary {
  from: string;
  to: string;
  speed: number | 'max';
  source: 'stream' | 'file';
  target: 'stream' | string;
  /** Requests of the window read. */
  read: number;
  /** Read but left out by the filter. */
  filteredOut: number;
  /** Recorded bodies cut at the recording's limit: not replayed, they would not be the request. */
  truncated: number;
  undecodable: number;
  /** Appended to the stream, or sent to staging. */
  sent: number;
  /** Only when replaying directly: staging's answers by status class, and failures (copy 1 of amplified requests). */
  statuses: Record<string, number>;
  /** Only when amplifying directly: the extra copies (2…N) sent, by status class or `error`. */
  copies: Record<string, number>;
  errors: number;
  dropped: number;
  /** Wall time of the replay, and the window's own span. */
  seconds: number;
  windowSeconds: number;
  firstError: string | null;
}

/** Replays the window; resolves with the summary when the last request was appended or answered. */
export async function replayWindow(o: ReplayWindowOptions): Promise<ReplayWindowSummary> {
  const cipher = EntryCipher.fromSpec(o.config.dataKey);
  const summary: ReplayWindowSummary = {
    from: new Date(o.from).toISOString(),
    to: new Date(o.to).toISOString(),
    speed: o.speed === Infinity ? 'max' : o.speed,
    source: o.recordings ? 'file' : 'stream',
    target: o.direct ? (o.config.stagingUrl ?? '') : 'stream',
    read: 0,
    filteredOut: 0,
    truncated: 0,
    undecodable: 0,
    sent: 0,
    statuses: {},
    copies: {},
    errors: 0,
    dropped: 0,
    seconds: 0,
    windowSeconds: 0,
    firstError: null,
  };
  // Recordings without --from: the window starts at the first recording, not at the epoch.
  if (o.recordings && o.from === 0) summary.from = o.recordings[0] ? new Date(o.recordings[0].sentAt).toISOString() : summary.to;
  const items: AsyncIterable<WindowItem> | Iterable<WindowItem> = o.recordings
    ? o.recordings
        .flatMap((r): WindowItem[] => {
          const time = Date.parse(r.receivedAt);
          if (!(time >= o.from && time <= o.to)) return [];
          if (r.mirrored.body.truncated) {
            summary.read += 1;
            summary.truncated += 1;
            return [];
          }
          return [{ time, id: r.entryId, request: requestFromRecording(r) }];
        })
        .sort((a, b) => a.time - b.time)
    : mergeByTime(
        o.keys.map((keys, p) =>
          readStreamWindow(o.redis, keys, p, o.from, o.to, cipher, (id, why) => {
            summary.undecodable += 1;
            summary.firstError ??= `${id}: ${why}`;
          }),
        ),
      );
  // Appended again, a request goes to the partition the ingress would have chosen.
  const partitionOf = o.keys.length === 1 ? null : createPartitioner(o.keys.length, o.config.partitionKey);
  // Sent directly, requests take the deployment's rate tokens like the workers' replays do.
  const rate = o.direct
    ? new RateLimiter({ redis: o.redis, prefix: o.config.prefix, limits: o.config.rateLimits, logger: createLogger({ logLevel: 'silent' }, 'cli') })
    : null;
  await rate?.start();
  const staging = o.direct ? new StagingClient(o.config, o.direct.pipeline, rate) : null;
  const inFlight = new Set<Promise<void>>();
  const started = performance.now();
  let first: number | null = null;
  let lastTime = o.from;
  const span = Math.max(1, o.to - o.from);
  try {
    for await (const item of items) {
      summary.read += 1;
      if (o.filter && !o.filter(item.request)) {
        summary.filteredOut += 1;
        continue;
      }
      first ??= item.time;
      lastTime = item.time;
      // The original gaps between requests, divided by the speed.
      if (o.speed !== Infinity) {
        const due = started + (item.time - first) / o.speed;
        const wait = due - performance.now();
        if (wait > 1) await sleep(wait);
      }
      if (staging) {
        while (inFlight.size >= o.concurrency) await Promise.race(inFlight);
        const entry: Entry = { id: item.id, request: item.request };
        const p: Promise<void> = staging
          .replay(entry, 1, {
            amplify: o.amplify ?? 1,
            onCopy: (c) => {
              const cls = 'status' in c ? `${Math.floor(c.status / 100)}xx` : 'error';
              summary.copies[cls] = (summary.copies[cls] ?? 0) + 1;
            },
          })
          .then(
            (outcome) => {
              if (outcome.kind === 'dropped') summary.dropped += 1;
              else {
                const cls = `${Math.floor(outcome.status / 100)}xx`;
                summary.statuses[cls] = (summary.statuses[cls] ?? 0) + 1;
              }
            },
            (error: unknown) => {
              summary.errors += 1;
              summary.firstError ??= `${item.id}: ${errorMessage(error)}`;
            },
          )
          .finally(() => {
            inFlight.delete(p);
          });
        inFlight.add(p);
      } else {
        // Stream entries are appended as stored (sealed ones stay sealed); recordings are encoded anew.
        const fields = item.rawFields ?? (cipher ? cipher.sealFields(encodeEntryFields(item.request)) : encodeEntryFields(item.request));
        const keys = o.keys[partitionOf === null ? 0 : partitionOf(headerObject(item.request.rawHeaders))] as Keys;
        await o.redis.xadd(keys.stream, '*', ...(fields as (string | Buffer)[]));
      }
      summary.sent += 1;
      o.progress(Math.min(1, (item.time - o.from) / span), summary.sent);
    }
    await Promise.all(inFlight);
  } finally {
    rate?.close();
    await staging?.close();
  }
  summary.seconds = (performance.now() - started) / 1000;
  summary.windowSeconds = first === null ? 0 : (lastTime - first) / 1000;
  o.progress(1, summary.sent);
  return summary;
}

/** Draws a progress bar on a terminal, or a line every tenth of the way elsewhere. */
export function progressReporter(write: (s: string) => void, tty: boolean): { update: (fraction: number, sent: number) => void; done: () => void } {
  // Progress is for a person watching: never drawn into a pipe or a log file.
  if (!tty) return { update: () => undefined, done: () => undefined };
  let lastDraw = 0;
  let lastTenth = -1;
  const started = Date.now();
  const line = (fraction: number, sent: number) => {
    const width = 30;
    const full = Math.round(fraction * width);
    const elapsed = Math.round((Date.now() - started) / 1000);
    return `[${'#'.repeat(full)}${'-'.repeat(width - full)}] ${String(Math.floor(fraction * 100)).padStart(3)}%  ${sent} sent  ${elapsed} s`;
  };
  return {
    update(fraction, sent) {
      if (tty) {
        const now = Date.now();
        if (now - lastDraw < 100 && fraction < 1) return;
        lastDraw = now;
        write(`\r${line(fraction, sent)}`);
        return;
      }
      const tenth = Math.floor(fraction * 10);
      if (tenth > lastTenth) {
        lastTenth = tenth;
        write(`${line(fraction, sent)}\n`);
      }
    },
    done() {
      if (tty) write('\n');
    },
  };
}

export function formatSummary(s: ReplayWindowSummary): string {
  const lines = [
    `replayed ${s.from} → ${s.to} from the ${s.source} at ${s.speed === 'max' ? 'full speed' : `${s.speed}x`}`,
    `  read ${formatCount(s.read)}, filtered out ${formatCount(s.filteredOut)}${s.truncated ? `, skipped ${formatCount(s.truncated)} with truncated bodies` : ''}${s.undecodable ? `, ${formatCount(s.undecodable)} undecodable` : ''}`,
    s.target === 'stream'
      ? `  appended ${formatCount(s.sent)} to the stream for the workers, in ${formatDuration(s.seconds * 1000)} (the window spans ${formatDuration(s.windowSeconds * 1000)})`
      : `  sent ${formatCount(s.sent)} to ${s.target} in ${formatDuration(s.seconds * 1000)} (the window spans ${formatDuration(s.windowSeconds * 1000)})`,
  ];
  if (s.target !== 'stream') {
    const classes = Object.entries(s.statuses)
      .sort()
      .map(([k, v]) => `${k} ${formatCount(v)}`)
      .join('  ');
    lines.push(
      `  ${classes || 'no answers'}${s.errors ? `  errors ${formatCount(s.errors)}` : ''}${s.dropped ? `  dropped by the pipeline ${formatCount(s.dropped)}` : ''}`,
    );
  }
  const copies = Object.entries(s.copies).sort();
  if (copies.length > 0) lines.push(`  extra copies (amplified): ${copies.map(([k, v]) => `${k} ${formatCount(v)}`).join('  ')}`);
  if (s.firstError) lines.push(`  first error: ${s.firstError}`);
  if (s.read === 0 && s.source === 'stream') lines.push('  nothing in that window: finished entries stay in the stream only with STREAM_RETENTION set');
  return `${lines.join('\n')}\n`;
}

/** Checks the flags of `mirrorplane replay`; every bad one is named. */
export function parseReplayFlags(
  options: { from?: string; to?: string; speed?: string; filter?: string; file?: string[]; concurrency?: string; amplify?: string; staging?: string },
  now = Date.now(),
): { from: number; to: number; speed: number; filter: ((r: FilterSubject) => boolean) | null; concurrency: number; amplify: number } {
  const check = <T>(flag: string, fn: () => T): T => {
    try {
      return fn();
    } catch (error) {
      // A bad value becomes a usage error naming the flag; anything else is not the operator's doing.
      if (!(error instanceof InvalidValueError)) throw error;
      throw new UsageError(`${flag}: ${error.message}`, { cause: error });
    }
  };
  if (options.from === undefined && !options.file?.length) throw new UsageError('replay: --from is required (or --file to replay recordings)');
  const from = options.from === undefined ? 0 : check('--from', () => parseTime(options.from as string, now));
  const to = options.to === undefined ? now : check('--to', () => parseTime(options.to as string, now));
  if (to < from) throw new UsageError(`--to (${new Date(to).toISOString()}) is before --from (${new Date(from).toISOString()})`);
  const speed = check('--speed', () => parseSpeed(options.speed ?? '1x'));
  const filter = options.filter === undefined ? null : check('--filter', () => parseFilter(options.filter as string));
  const concurrency = Number(options.concurrency ?? '64');
  if (!Number.isInteger(concurrency) || concurrency < 1 || concurrency > 10_000)
    throw new UsageError(`--concurrency: expected an integer from 1 to 10000, got ${JSON.stringify(options.concurrency)}`);
  // Appended to the stream, an entry carries no factor for the workers: there a rule's `amplify` does it.
  if (options.amplify !== undefined && options.staging === undefined)
    throw new UsageError('--amplify: needs --staging (to amplify what the workers replay from the stream, give a rule the amplify action)');
  const amplify = options.amplify === undefined ? 1 : check('--amplify', () => parseAmplify(options.amplify as string));
  return { from, to, speed, filter, concurrency, amplify };
}

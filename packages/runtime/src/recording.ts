import { isUtf8 } from 'node:buffer';
import { mkdir, open, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import {
  contentCodings,
  EntryCipher,
  errorMessage,
  headerEntries,
  headerValue,
  Redactor,
  type Config,
  type OutgoingRequest,
  type Pipeline,
  type PipelineContext,
  type RecordingSettings,
  type ReplayResponse,
} from '@mirrorplane/core';
import type { Logger } from './logger.js';

/**
 * Recording: one JSON line per finished replay (the request as mirrored, as sent, staging's
 * answer, timings, rules applied, tags), written to rotating JSONL files. Replays only
 * enqueue a line; one background loop writes, so a slow disk never slows a replay. Lines
 * beyond `maxQueuedBytes` are dropped and counted rather than held without bound.
 */

/** Version of the recording line layout. */
export const RECORDING_VERSION = 1;

/** A body as recorded: UTF-8 text as is, anything else base64 (the shape of HAR's `content`). */
export interface RecordedBody {
  /** Bytes of the body before the limit cut it. */
  size: number;
  text: string;
  encoding?: 'base64';
  truncated?: true;
}

/** Headers as `[name, value]` pairs, order and duplicates kept, secrets redacted. */
export type RecordedHeaders = [string, string][];

/** One line of a recording. */
export interface RecordedExchange {
  v: typeof RECORDING_VERSION;
  entryId: string;
  requestId: string | null;
  attempt: number;
  /** When the ingress received the mirrored request. */
  receivedAt: string;
  /** When the request was sent to staging. */
  sentAt: string;
  /** Milliseconds from sending to the end of staging's answer. */
  ms: number;
  origin: { name: string; url: string };
  rules: string[];
  tags: Record<string, string>;
  mirrored: { method: string; target: string; clientAddress: string | null; headers: RecordedHeaders; body: RecordedBody };
  sent: { method: string; path: string; headers: RecordedHeaders; body: RecordedBody };
  /** `trailers`: HTTP/2 only (`grpc-status`, `grpc-message` of a gRPC answer). */
  response: { status: number; headers: RecordedHeaders; body: RecordedBody; trailers?: RecordedHeaders };
  /** Present for a request that arrived (and was replayed) over HTTP/2; absent: HTTP/1.1. */
  protocol?: 'HTTP/2';
}

/** Text is valid UTF-8 without control characters other than tab, CR and LF. */
function isText(body: Buffer): boolean {
  for (let i = 0; i < body.length; i++) {
    const b = body[i] as number;
    if ((b < 0x20 && b !== 0x09 && b !== 0x0a && b !== 0x0d) || b === 0x7f) return false;
  }
  return isUtf8(body);
}

export function recordBody(body: Buffer, limit: number, alreadyTruncated = false): RecordedBody {
  const cut = body.length > limit;
  const kept = cut ? body.subarray(0, limit) : body;
  // A cut can split a multi-byte character; such a prefix is recorded as base64, exactly.
  const out: RecordedBody = isText(kept)
    ? { size: body.length, text: kept.toString('utf8') }
    : { size: body.length, text: kept.toString('base64'), encoding: 'base64' };
  if (cut || alreadyTruncated) out.truncated = true;
  return out;
}

/**
 * A body as recorded: a form or JSON body (by its Content-Type) with secret-named fields
 * hidden (`Redactor.body`), its size still the size sent. A body with a Content-Encoding is
 * kept as sent (its bytes are not text to redact).
 */
export function recordRedactedBody(flatHeaders: readonly string[], body: Buffer, limit: number, redactor: Redactor, alreadyTruncated = false): RecordedBody {
  if (contentCodings(flatHeaders).length > 0) return recordBody(body, limit, alreadyTruncated);
  const shown = redactor.body(headerValue(flatHeaders, 'content-type') ?? undefined, body);
  return shown === body ? recordBody(body, limit, alreadyTruncated) : { ...recordBody(shown, limit, alreadyTruncated), size: body.length };
}

function pairs(flat: readonly string[], redactor: Redactor): RecordedHeaders {
  return headerEntries(redactor.headers(flat));
}

interface OpenFile {
  handle: FileHandle;
  path: string;
  size: number;
  openedAt: number;
}

export interface RecordingWriterOptions {
  dir: string;
  maxFileBytes: number;
  maxFileAgeMs: number;
  maxQueuedBytes: number;
  logger: Logger;
  /** Called with the number of lines written, and of lines lost (queue full or disk error). */
  onWritten?: (lines: number) => void;
  onLost?: (lines: number) => void;
}

/**
 * Appends lines to `<dir>/mirrorplane-<time>-<pid>-<n>.jsonl`, beginning a new file when the
 * current one reaches `maxFileBytes` or `maxFileAgeMs`. Several workers can share a directory:
 * each writes its own files. `close()` writes every queued line before it resolves.
 */
export class RecordingWriter {
  readonly #options: RecordingWriterOptions;
  #queue: string[] = [];
  #queuedBytes = 0;
  #draining: Promise<void> | null = null;
  #file: OpenFile | null = null;
  #sequence = 0;
  #closed = false;
  readonly #timer: NodeJS.Timeout;
  #written = 0;
  #lost = 0;
  #dirReady = false;

  constructor(options: RecordingWriterOptions) {
    this.#options = options;
    // An idle file is closed once it is old enough, so readers see complete files.
    this.#timer = setInterval(
      () => {
        if (this.#file && !this.#draining && Date.now() - this.#file.openedAt >= options.maxFileAgeMs) {
          this.#draining = this.#closeFile().finally(() => {
            this.#draining = null;
            this.#schedule();
          });
        }
      },
      Math.max(250, Math.min(options.maxFileAgeMs / 4, 60_000)),
    );
    this.#timer.unref();
  }

  get written(): number {
    return this.#written;
  }

  get lost(): number {
    return this.#lost;
  }

  /** The file being written now, or null. */
  get currentFile(): string | null {
    return this.#file?.path ?? null;
  }

  /** Enqueues one line (without its newline); false when it was dropped. Never waits. */
  write(line: string): boolean {
    const bytes = Buffer.byteLength(line) + 1;
    if (this.#closed || this.#queuedBytes + bytes > this.#options.maxQueuedBytes) {
      this.#lose(1, this.#closed ? 'recording is closed' : 'the disk is not keeping up (maxQueuedBytes reached)');
      return false;
    }
    this.#queue.push(line);
    this.#queuedBytes += bytes;
    this.#schedule();
    return true;
  }

  #lossWarnedAt = 0;

  #lose(lines: number, why: string): void {
    this.#lost += lines;
    this.#options.onLost?.(lines);
    // Once a minute at most: a full queue would otherwise log at the rate of replays.
    if (Date.now() - this.#lossWarnedAt > 60_000) {
      this.#lossWarnedAt = Date.now();
      this.#options.logger.warn({ lost: this.#lost }, `recording lines lost: ${why}`);
    }
  }

  #schedule(): void {
    if (this.#draining || this.#queue.length === 0) return;
    this.#draining = this.#drain().finally(() => {
      this.#draining = null;
      this.#schedule();
    });
  }

  async #drain(): Promise<void> {
    const max = this.#options.maxFileBytes;
    while (this.#queue.length > 0) {
      const lines = this.#queue;
      this.#queue = [];
      this.#queuedBytes = 0;
      let i = 0;
      while (i < lines.length) {
        const start = i;
        try {
          const file = await this.#fileFor(Buffer.byteLength(lines[i] as string) + 1);
          // As many lines as fit in this file, at least one (a line is never split across files).
          const chunk: string[] = [];
          let bytes = 0;
          while (i < lines.length) {
            const size = Buffer.byteLength(lines[i] as string) + 1;
            if (chunk.length > 0 && file.size + bytes + size > max) break;
            chunk.push(lines[i] as string);
            bytes += size;
            i += 1;
          }
          await file.handle.write(`${chunk.join('\n')}\n`, null, 'utf8');
          file.size += bytes;
          this.#written += chunk.length;
          this.#options.onWritten?.(chunk.length);
        } catch (error) {
          this.#lose(lines.length - start, `cannot write to ${this.#options.dir}: ${errorMessage(error)}`);
          await this.#closeFile();
          break;
        }
      }
    }
  }

  async #fileFor(bytes: number): Promise<OpenFile> {
    const now = Date.now();
    if (
      this.#file &&
      (this.#file.size + bytes > this.#options.maxFileBytes || now - this.#file.openedAt >= this.#options.maxFileAgeMs) &&
      this.#file.size > 0
    ) {
      await this.#closeFile();
    }
    if (!this.#file) {
      if (!this.#dirReady) {
        await mkdir(this.#options.dir, { recursive: true });
        this.#dirReady = true;
      }
      const stamp = new Date(now)
        .toISOString()
        .replace(/[-:]/g, '')
        .replace(/\.\d+Z$/, 'Z');
      this.#sequence += 1;
      const path = join(this.#options.dir, `mirrorplane-${stamp}-${process.pid}-${String(this.#sequence).padStart(6, '0')}.jsonl`);
      // 'a', not 'w': a name reused after a restart within the same second must not lose lines.
      // Owner-only: a recording holds request bodies.
      const handle = await open(path, 'a', 0o600);
      this.#file = { handle, path, size: 0, openedAt: now };
    }
    return this.#file;
  }

  async #closeFile(): Promise<void> {
    const file = this.#file;
    this.#file = null;
    if (file) await file.handle.close().catch(() => undefined);
  }

  /** Writes every queued line, closes the file. Lines written after this are counted as lost. */
  async close(): Promise<void> {
    this.#closed = true;
    clearInterval(this.#timer);
    while (this.#draining) await this.#draining;
    if (this.#queue.length > 0) await this.#drain();
    await this.#closeFile();
  }
}

/** What a sealed recording line is bound to (lines may move between files, not to other records). */
export const RECORDING_CONTEXT = 'mirrorplane:recording';

export interface RecorderOptions {
  settings: RecordingSettings;
  config: Config;
  logger: Logger;
  onWritten?: (lines: number) => void;
  onLost?: (lines: number) => void;
}

/** The recording stage: a `post` that turns each finished replay into one line. */
export function createRecorder(options: RecorderOptions): Pipeline & { writer: RecordingWriter } {
  const { settings, config } = options;
  // Secret headers and query values are hidden (config.redaction); bodies are kept up to bodyLimit.
  const redactor = new Redactor(config.redaction);
  const cipher = settings.encrypt ? EntryCipher.fromSpec(config.dataKey) : null;
  const writer = new RecordingWriter({
    dir: settings.dir,
    maxFileBytes: settings.maxFileBytes,
    maxFileAgeMs: settings.maxFileAgeMs,
    maxQueuedBytes: settings.maxQueuedBytes,
    logger: options.logger,
    ...(options.onWritten && { onWritten: options.onWritten }),
    ...(options.onLost && { onLost: options.onLost }),
  });
  const limit = settings.bodyLimit;
  return {
    name: 'recording',
    writer,
    needsResponseBody: limit > 0,
    post(response: ReplayResponse, request: OutgoingRequest, ctx: PipelineContext) {
      const m = ctx.mirrored;
      const now = Date.now();
      const line: RecordedExchange = {
        v: RECORDING_VERSION,
        entryId: ctx.entryId,
        requestId: ctx.requestId,
        attempt: ctx.attempt,
        receivedAt: new Date(m.receivedAt).toISOString(),
        sentAt: new Date(now - response.ms).toISOString(),
        ms: Math.round(response.ms * 1000) / 1000,
        origin: { name: request.origin, url: config.origins[request.origin] ?? '' },
        rules: ctx.rules.slice(),
        tags: { ...ctx.tags },
        mirrored: {
          method: m.method,
          target: redactor.target(m.target),
          clientAddress: m.clientAddress,
          headers: pairs(m.rawHeaders, redactor),
          body: recordRedactedBody(m.rawHeaders, m.body, limit, redactor),
        },
        sent: {
          method: request.method,
          path: redactor.target(request.path),
          headers: pairs(request.headers, redactor),
          body: recordRedactedBody(request.headers, request.body, limit, redactor),
        },
        response: {
          status: response.status,
          headers: pairs(response.headers, redactor),
          body: recordRedactedBody(response.headers, response.body, limit, redactor, response.truncated),
          ...(response.trailers !== undefined && { trailers: pairs(response.trailers, redactor) }),
        },
        ...(m.protocol === 'HTTP/2' && { protocol: 'HTTP/2' as const }),
      };
      const text = JSON.stringify(line);
      writer.write(cipher ? cipher.sealText(text, RECORDING_CONTEXT) : text);
    },
    close: () => writer.close(),
  };
}

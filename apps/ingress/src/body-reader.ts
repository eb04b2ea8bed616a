/**
 * A bounded body: chunks kept as they came, joined once at the end. Shared by the traffic
 * port's parser and the admin port's production-response intake, so both bound a body the
 * same way and neither copies a large chunk twice.
 *
 * Memory: at most about 2 × `max` bytes whatever the chunking. A chunk that is most of the
 * memory behind it is kept by reference; a chunk that is a small view of a larger buffer
 * (a 1-byte chunk of a 64 KiB socket read), or one the caller will reuse, is copied into a
 * coalescing buffer, so a body of many small pieces neither keeps its sources alive nor costs
 * a Buffer object per piece.
 */
export class BoundedBody {
  readonly #max: number;
  #chunks: Buffer[] = [];
  #size = 0;
  /** Coalescing buffer for copied pieces: `#tail[0, #tailUsed)` is body, after the chunks. */
  #tail: Buffer | null = null;
  #tailUsed = 0;

  /** `max`: the most bytes kept; a push past it is refused. */
  constructor(max: number) {
    this.#max = max;
  }

  /** Bytes pushed so far. */
  get size(): number {
    return this.#size;
  }

  /**
   * Adds a chunk; false (and nothing kept) when the body would grow past `max`. `mustCopy`:
   * the caller reuses the chunk's memory, so its bytes are copied now. `total`: the body's
   * final size in bytes when the caller knows it (Content-Length), else -1. A chunk that is the
   * whole body is kept by reference (no copy: the common case of a request read in one piece);
   * copied pieces go to a buffer of the known size, not a 64 KiB one per body.
   */
  push(chunk: Buffer, mustCopy = false, total = -1): boolean {
    if (this.#size + chunk.length > this.#max) return false;
    if (chunk.length === 0) return true;
    if (!mustCopy && ((this.#size === 0 && chunk.length === total) || (chunk.length >= 4096 && chunk.length * 2 >= chunk.buffer.byteLength))) {
      this.#flushTail();
      this.#chunks.push(chunk);
    } else {
      this.#copy(chunk, total);
    }
    this.#size += chunk.length;
    return true;
  }

  #copy(chunk: Buffer, total: number): void {
    let at = 0;
    while (at < chunk.length) {
      if (this.#tail === null || this.#tailUsed === this.#tail.length) {
        this.#flushTail();
        // Sized to what the body will (or may still) hold (`#size` does not count this chunk yet), 64 KiB at most.
        const room = (total >= 0 && total <= this.#max ? total : this.#max) - this.#size - at;
        this.#tail = Buffer.allocUnsafeSlow(Math.max(1, Math.min(64 * 1024, room)));
        this.#tailUsed = 0;
      }
      const n = chunk.copy(this.#tail, this.#tailUsed, at);
      this.#tailUsed += n;
      at += n;
    }
  }

  #flushTail(): void {
    if (this.#tail !== null && this.#tailUsed > 0) {
      // Mostly empty: keep an exact copy, not the whole coalescing buffer (memory stays under 2 × body).
      const used = this.#tail.subarray(0, this.#tailUsed);
      this.#chunks.push(this.#tailUsed * 2 >= this.#tail.length ? used : Buffer.from(used));
    }
    this.#tail = null;
    this.#tailUsed = 0;
  }

  /** The whole body in one Buffer (no copy for a single chunk); the reader is empty after. */
  take(): Buffer {
    this.#flushTail();
    const chunks = this.#chunks;
    const body = chunks.length === 0 ? Buffer.alloc(0) : chunks.length === 1 ? (chunks[0] as Buffer) : Buffer.concat(chunks, this.#size);
    this.#chunks = [];
    this.#size = 0;
    return body;
  }
}

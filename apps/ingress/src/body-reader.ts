/**
 * A bounded body: chunks kept as they came, joined once at the end. Shared by the traffic
 * port's parser and the admin port's production-response intake, so both bound a body the
 * same way and neither copies a chunk twice.
 */
export class BoundedBody {
  readonly #max: number;
  #chunks: Buffer[] = [];
  #size = 0;

  /** `max`: the most bytes kept; a push past it is refused. */
  constructor(max: number) {
    this.#max = max;
  }

  /** Bytes pushed so far. */
  get size(): number {
    return this.#size;
  }

  /** Adds a chunk; false (and nothing kept) when the body would grow past `max`. */
  push(chunk: Buffer): boolean {
    if (this.#size + chunk.length > this.#max) return false;
    if (chunk.length === 0) return true;
    this.#chunks.push(chunk);
    this.#size += chunk.length;
    return true;
  }

  /** The whole body in one Buffer (no copy for a single chunk); the reader is empty after. */
  take(): Buffer {
    const chunks = this.#chunks;
    const body = chunks.length === 1 ? (chunks[0] as Buffer) : Buffer.concat(chunks, this.#size);
    this.#chunks = [];
    this.#size = 0;
    return body;
  }
}

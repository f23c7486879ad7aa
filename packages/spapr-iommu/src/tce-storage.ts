/** log2 of the entries per storage chunk: 16384 entries, 128 KiB. */
export const TCE_CHUNK_SHIFT = 14;
const CHUNK_ENTRIES = 1 << TCE_CHUNK_SHIFT;
const CHUNK_MASK = CHUNK_ENTRIES - 1;

/**
 * The entries of one TCE table: raw 64-bit TCEs kept as interleaved big-endian-order halves
 * (high word, low word) in lazily allocated chunks, so a 2^31-entry window costs what is written
 * and the hot paths never build a BigInt. Untouched entries read as zero.
 */
export class TceStorage {
  readonly #chunks: (Uint32Array | undefined)[];

  constructor(readonly entries: number) {
    this.#chunks = new Array(Math.ceil(entries / CHUNK_ENTRIES));
  }

  /** Number of chunks holding entries. */
  get residentChunks(): number {
    let n = 0;
    for (const c of this.#chunks) if (c) n++;
    return n;
  }

  get residentBytes(): number {
    return this.residentChunks * CHUNK_ENTRIES * 8;
  }

  high(index: number): number {
    return this.#chunks[index >>> TCE_CHUNK_SHIFT]?.[(index & CHUNK_MASK) << 1] ?? 0;
  }

  low(index: number): number {
    return this.#chunks[index >>> TCE_CHUNK_SHIFT]?.[((index & CHUNK_MASK) << 1) | 1] ?? 0;
  }

  get(index: number): bigint {
    const chunk = this.#chunks[index >>> TCE_CHUNK_SHIFT];
    if (!chunk) return 0n;
    const at = (index & CHUNK_MASK) << 1;
    return (BigInt(chunk[at]!) << 32n) | BigInt(chunk[at + 1]!);
  }

  /** Stores a TCE given as its two 32-bit halves. */
  setHalves(index: number, high: number, low: number): void {
    let chunk = this.#chunks[index >>> TCE_CHUNK_SHIFT];
    if (!chunk) {
      if (high === 0 && low === 0) return;
      chunk = new Uint32Array(CHUNK_ENTRIES * 2);
      this.#chunks[index >>> TCE_CHUNK_SHIFT] = chunk;
    }
    const at = (index & CHUNK_MASK) << 1;
    chunk[at] = high;
    chunk[at + 1] = low;
  }

  set(index: number, tce: bigint): void {
    this.setHalves(index, Number(tce >> 32n) >>> 0, Number(tce & 0xffffffffn) >>> 0);
  }

  /** Zeroes every entry. */
  clear(): void {
    this.#chunks.fill(undefined);
  }

  /** Calls `fn` for every non-zero entry, in index order (for replay, migration, inspection). */
  forEachNonZero(fn: (index: number, high: number, low: number) => void): void {
    for (let c = 0; c < this.#chunks.length; c++) {
      const chunk = this.#chunks[c];
      if (!chunk) continue;
      const base = c * CHUNK_ENTRIES;
      const count = Math.min(CHUNK_ENTRIES, this.entries - base);
      for (let i = 0; i < count; i++) {
        const high = chunk[i << 1]!;
        const low = chunk[(i << 1) | 1]!;
        if (high !== 0 || low !== 0) fn(base + i, high, low);
      }
    }
  }
}

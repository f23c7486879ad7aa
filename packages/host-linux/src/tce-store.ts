import { RunTable, runEntryHalves, TWO_32 } from '@ddw/memory';

/** Entries per RunTable of a window: a larger table (2^34 4K pages of a 64 TiB window) has several. */
const PART_SHIFT = 30;
const PART = 2 ** PART_SHIFT;

/** Hardware TCE permission bits (TCE_PCI_READ, TCE_PCI_WRITE). */
export const TCE_READ = 1;
export const TCE_WRITE = 2;
export const TCE_PERM = TCE_READ | TCE_WRITE;

/**
 * One entry as its two 32-bit halves (high, low): entryHalves and entryHalvesBig leave an entry
 * here, and the writers read it back, so building an entry allocates nothing.
 */
export const halves = new Uint32Array(2);

/**
 * The TCEs of one window as the v2 driver keeps its userspace copy of them (it_userspace): entry =
 * userspace address of the IOMMU page | permission bits (TCE_READ, TCE_WRITE), 0 when empty. The
 * addresses are page aligned, so consecutive pages form one progression whose stride is the page
 * size and are stored as one run (RunTable, from @ddw/memory): a window costs what was written into
 * it, not its size. v1 keeps the same entries (its pins are per page, as the kernel's).
 */
export class TceStore {
  /** RunTables of PART entries each, made on first write. */
  readonly #parts: (RunTable | undefined)[];

  constructor(readonly entries: number) {
    this.#parts = new Array<RunTable | undefined>(Math.ceil(entries / PART)).fill(undefined);
  }

  /** The raw entry `index` (0n when empty). */
  get(index: number): bigint {
    const pi = Math.floor(index / PART);
    return this.#parts[pi]?.get(index - pi * PART) ?? 0n;
  }

  /** Entries first + k (k < count) become (high:low) + k * stride; a zero run clears. */
  setRun(first: number, count: number, high: number, low: number, stride: number): void {
    let at = first;
    let left = count;
    let h = high;
    let l = low;
    while (left > 0) {
      const pi = Math.floor(at / PART);
      const off = at - pi * PART;
      const n = Math.min(left, PART - off);
      let part = this.#parts[pi];
      if (!part && !(h === 0 && l === 0 && stride === 0)) {
        part = new RunTable(Math.min(PART, this.entries - pi * PART));
        this.#parts[pi] = part;
      }
      part?.setRun(off, n, h, l, stride);
      left -= n;
      at += n;
      if (left > 0 && stride !== 0) {
        runEntryHalves(h, l, stride, n, halves);
        h = halves[0]!;
        l = halves[1]!;
      }
    }
  }

  clearRange(first: number, count: number): void {
    this.setRun(first, count, 0, 0, 0);
  }

  /** Entries first + k (k < count) become the big-endian u64 values at view[8k] (RunTable.setList). */
  setList(first: number, count: number, view: DataView): void {
    let at = first;
    let done = 0;
    while (done < count) {
      const pi = Math.floor(at / PART);
      const off = at - pi * PART;
      const n = Math.min(count - done, PART - off);
      let part = this.#parts[pi];
      if (!part) {
        part = new RunTable(Math.min(PART, this.entries - pi * PART));
        this.#parts[pi] = part;
      }
      part.setList(off, n, view, done * 8);
      done += n;
      at += n;
    }
  }

  /** The non-zero entries of [from, to) as runs, in index order (see RunTable.forEachRun). */
  forEachRun(
    fn: (first: number, count: number, high: number, low: number, stride: number) => void,
    from = 0,
    to = this.entries,
  ): void {
    const start = Math.max(0, from);
    const end = Math.min(this.entries, to);
    for (let pi = Math.floor(start / PART); pi * PART < end; pi++) {
      const part = this.#parts[pi];
      if (!part) continue;
      const base = pi * PART;
      part.forEachRun(
        (first, count, high, low, stride) => fn(base + first, count, high, low, stride),
        Math.max(start - base, 0),
        Math.min(end - base, PART),
      );
    }
  }

  /** How many entries of [from, to) are non-zero. */
  countNonZero(from: number, to: number): number {
    const start = Math.max(0, from);
    const end = Math.min(this.entries, to);
    let n = 0;
    for (let pi = Math.floor(start / PART); pi * PART < end; pi++) {
      const base = pi * PART;
      n += this.#parts[pi]?.countNonZero(Math.max(start - base, 0), Math.min(end - base, PART)) ?? 0;
    }
    return n;
  }

  get denseChunks(): number {
    let n = 0;
    for (const part of this.#parts) n += part?.denseChunks ?? 0;
    return n;
  }

  get residentBytes(): number {
    let n = 0;
    for (const part of this.#parts) n += part?.residentBytes ?? 0;
    return n;
  }
}

/** The entry (ua | perm) of a page at host address `ua` (exact, below 2^53) into `halves`. */
export function entryHalves(ua: number, perm: number): void {
  const high = Math.floor(ua / TWO_32);
  halves[0] = high;
  halves[1] = ua - high * TWO_32 + perm;
}

/** The entry (ua | perm) of a page at host address `ua` into `halves`. */
export function entryHalvesBig(ua: bigint, perm: number): void {
  const v = ua | BigInt(perm);
  halves[0] = Number(v >> 32n);
  halves[1] = Number(v & 0xffffffffn);
}

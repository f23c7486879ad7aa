/**
 * A table of raw 64-bit entries (an IOMMU's page table: the TCEs of a window) that costs what it
 * was told, not how large it is. Guests write their tables as progressions (a direct window maps
 * page i to base + i * page size), so entries are kept as runs, entry `first + k` being
 * (high:low) + k * stride modulo 2^64, in chunks of 2^14 entries; a chunk is materialised into one
 * 8-byte slot per entry only when its writes stop following a few progressions. Reads see the raw
 * values exactly as stored, whatever the representation.
 */

import { TWO_32 } from './constants.js';

/** Visits a run: entry `first + k` (k < count) is (high:low) + k * stride, modulo 2^64. */
export type EntryRunVisitor = (
  first: number,
  count: number,
  high: number,
  low: number,
  stride: number,
) => void;

/** Visits `count` entries from `first` as slots: entry first + k is (slots[2k]:slots[2k + 1]). */
export type EntrySlotsVisitor = (first: number, count: number, slots: Uint32Array) => void;

/** log2 of the entries per chunk (equal to a snapshot VARRAY block, so whole chunks are whole blocks). */
export const RUN_TABLE_CHUNK_SHIFT = 14;
const CHUNK = 1 << RUN_TABLE_CHUNK_SHIFT;
const CHUNK_MASK = CHUNK - 1;
/** Runs an affine chunk holds before it is materialised. */
const MAX_RUNS = 8;
/** Strides are below 2^36, so that low + k * stride stays exact within a chunk (k < 2^14). */
export const MAX_RUN_STRIDE = 2 ** 36;
/** Non-zero entries of one list in one chunk that make the chunk one slot per entry at once. */
const LITERAL_MATERIALISES = 16;
/** Fields per run in an affine chunk's array: start, count, high, low, stride. */
const F = 5;

/** Entry `k` of the run (high:low) + k * stride, written to `out` as [high, low]. */
export function runEntryHalves(high: number, low: number, stride: number, k: number, out: Uint32Array): void {
  if (stride === 0 || k === 0) {
    out[0] = high;
    out[1] = low;
    return;
  }
  const sum = low + k * stride;
  if (Number.isSafeInteger(sum)) {
    const carry = Math.floor(sum / TWO_32);
    out[0] = (high + carry) >>> 0;
    out[1] = sum - carry * TWO_32;
    return;
  }
  const v = BigInt.asUintN(64, ((BigInt(high) << 32n) | BigInt(low)) + BigInt(k) * BigInt(stride));
  out[0] = Number(v >> 32n);
  out[1] = Number(v & 0xffffffffn);
}

/**
 * The stride from (h0:l0) to (h1:l1), when the step is a usable stride (0 <= d < MAX_RUN_STRIDE);
 * -1 otherwise.
 */
export function strideBetween(h0: number, l0: number, h1: number, l1: number): number {
  const d = (h1 - h0) * TWO_32 + (l1 - l0);
  return d >= 0 && d < MAX_RUN_STRIDE ? d : -1;
}

/** An affine chunk: its runs, sorted by start, not overlapping, every entry of a run non-zero. */
class AffineChunk {
  /** start, count, high, low, stride per run. */
  runs: number[] = [];
}

type Chunk = AffineChunk | Uint32Array | undefined;

const scratch = new Uint32Array(2);

export class RunTable {
  readonly #chunks: Chunk[];
  /** Chunks materialised so far (one 8-byte slot per entry). */
  #dense = 0;

  constructor(readonly entries: number) {
    if (!Number.isSafeInteger(entries) || entries < 0) throw new RangeError(`bad entry count ${entries}`);
    this.#chunks = new Array(Math.ceil(entries / CHUNK));
  }

  /** Chunks holding one slot per entry. */
  get denseChunks(): number {
    return this.#dense;
  }

  /** An estimate of the memory the entries take: slots of materialised chunks plus runs. */
  get residentBytes(): number {
    let runs = 0;
    for (const c of this.#chunks) if (c instanceof AffineChunk) runs += c.runs.length / F;
    return this.#dense * CHUNK * 8 + runs * F * 8;
  }

  high(index: number): number {
    this.#read(index);
    return scratch[0]!;
  }

  low(index: number): number {
    this.#read(index);
    return scratch[1]!;
  }

  get(index: number): bigint {
    this.#read(index);
    return (BigInt(scratch[0]!) << 32n) | BigInt(scratch[1]!);
  }

  #read(index: number): void {
    scratch[0] = 0;
    scratch[1] = 0;
    if (!(index >= 0 && index < this.entries)) return;
    const c = this.#chunks[index >>> RUN_TABLE_CHUNK_SHIFT];
    if (c === undefined) return;
    const off = index & CHUNK_MASK;
    if (c instanceof Uint32Array) {
      scratch[0] = c[off << 1]!;
      scratch[1] = c[(off << 1) | 1]!;
      return;
    }
    const r = c.runs;
    for (let i = 0; i < r.length; i += F) {
      const start = r[i]!;
      if (off < start) return;
      if (off < start + r[i + 1]!) {
        runEntryHalves(r[i + 2]!, r[i + 3]!, r[i + 4]!, off - start, scratch);
        return;
      }
    }
  }

  /** Stores one raw entry given as its halves. */
  setHalves(index: number, high: number, low: number): void {
    this.setRun(index, 1, high, low, 0);
  }

  set(index: number, value: bigint): void {
    const v = BigInt.asUintN(64, value);
    this.setRun(index, 1, Number(v >> 32n), Number(v & 0xffffffffn), 0);
  }

  /**
   * Stores `count` entries from `first`: entry first + k becomes (high:low) + k * stride (mod 2^64).
   * The range must lie inside the table; a zero run clears.
   */
  setRun(first: number, count: number, high: number, low: number, stride: number): void {
    if (count <= 0) return;
    if (!(first >= 0 && first + count <= this.entries)) {
      throw new RangeError(`entries ${first}..${first + count - 1} are outside a table of ${this.entries}`);
    }
    if (!(stride >= 0 && stride < MAX_RUN_STRIDE && Number.isInteger(stride))) {
      throw new RangeError(`stride ${stride} is not an integer in [0, 2^36)`);
    }
    let at = first;
    let left = count;
    let h = high;
    let l = low;
    while (left > 0) {
      const ci = at >>> RUN_TABLE_CHUNK_SHIFT;
      const off = at & CHUNK_MASK;
      const n = Math.min(left, CHUNK - off);
      this.#setInChunk(ci, off, n, h, l, stride);
      left -= n;
      at += n;
      if (left > 0 && stride !== 0) {
        runEntryHalves(h, l, stride, n, scratch);
        h = scratch[0]!;
        l = scratch[1]!;
      }
    }
  }

  /**
   * Stores `count` raw entries read from `view` at `byteOffset`, each big-endian (high word
   * first), as a TCE list holds them: entries that follow no progression. A stretch of a chunk
   * long enough is copied into the chunk's slots; a few entries are stored as runs of one.
   */
  setList(first: number, count: number, view: DataView, byteOffset = 0): void {
    if (count <= 0) return;
    if (!(first >= 0 && first + count <= this.entries)) {
      throw new RangeError(`entries ${first}..${first + count - 1} are outside a table of ${this.entries}`);
    }
    let k = 0;
    while (k < count) {
      const at = first + k;
      const ci = at >>> RUN_TABLE_CHUNK_SHIFT;
      const off = at & CHUNK_MASK;
      const n = Math.min(count - k, CHUNK - off);
      let p = byteOffset + k * 8;
      const chunk = this.#chunks[ci];
      if (
        chunk instanceof Uint32Array ||
        countNonZero(view, p, n, LITERAL_MATERIALISES) >= LITERAL_MATERIALISES
      ) {
        const dense = this.#materialise(ci);
        for (let q = off << 1, end = (off + n) << 1; q < end; q += 2, p += 8) {
          dense[q] = view.getUint32(p);
          dense[q + 1] = view.getUint32(p + 4);
        }
      } else {
        // A few entries: runs of one, so a sparse chunk stays small.
        for (let q = 0; q < n; q++, p += 8) {
          const high = view.getUint32(p);
          const low = view.getUint32(p + 4);
          if (high !== 0 || low !== 0 || this.#chunks[ci] !== undefined)
            this.#setInChunk(ci, off + q, 1, high, low, 0);
        }
      }
      k += n;
    }
  }

  /** Zeroes `count` entries from `first` (clipped to the table). */
  clearRange(first: number, count: number): void {
    const from = Math.max(0, first);
    const to = Math.min(this.entries, first + count);
    if (to > from) this.setRun(from, to - from, 0, 0, 0);
  }

  /** Zeroes every entry. */
  clear(): void {
    this.#chunks.fill(undefined);
    this.#dense = 0;
  }

  #setInChunk(ci: number, off: number, n: number, high: number, low: number, stride: number): void {
    const chunk = this.#chunks[ci];
    const zero = high === 0 && low === 0 && stride === 0;
    if (chunk instanceof Uint32Array) {
      if (off === 0 && n === this.#chunkLength(ci) && this.#isCleanRun(high, low, stride, n)) {
        // A whole chunk rewritten as one progression goes back to being one run.
        this.#chunks[ci] = zero ? undefined : runChunk(0, n, high, low, stride);
        this.#dense--;
        return;
      }
      writeDense(chunk, off, n, high, low, stride);
      return;
    }
    if (chunk === undefined && zero) return;
    if (!this.#isCleanRun(high, low, stride, n)) {
      // A run that starts at or wraps through zero: entry by entry in a materialised chunk.
      writeDense(this.#materialise(ci), off, n, high, low, stride);
      return;
    }
    if (chunk === undefined) {
      this.#chunks[ci] = runChunk(off, n, high, low, stride);
      return;
    }
    const r = chunk.runs;
    // The common case: the next entries of the last run's progression.
    const last = r.length - F;
    if (last >= 0 && !zero && r[last]! + r[last + 1]! === off) {
      const s = joinedStride(r[last + 1]!, r[last + 2]!, r[last + 3]!, r[last + 4]!, n, high, low, stride);
      if (s >= 0) {
        r[last + 1] = r[last + 1]! + n;
        r[last + 4] = s;
        return;
      }
    }
    // Rewriting entries with the values they hold (a guest re-mapping the same pages) changes nothing.
    if (!zero && holdsAlready(r, off, n, high, low, stride)) return;
    const next = cutRuns(r, off, n);
    if (!zero) insertRun(next, off, n, high, low, stride);
    if (next.length === 0) {
      this.#chunks[ci] = undefined;
      return;
    }
    if (next.length > MAX_RUNS * F) {
      chunk.runs = next;
      this.#materialise(ci);
      return;
    }
    chunk.runs = next;
  }

  /** Whether n entries of the run are all non-zero and do not wrap past 2^64. */
  #isCleanRun(high: number, low: number, stride: number, n: number): boolean {
    if (high === 0 && low === 0) return stride === 0;
    if (stride === 0 || n === 1) return true;
    runEntryHalves(high, low, stride, n - 1, scratch);
    // Wrapping is the only way for an increasing run to reach zero or come back below its start.
    const lastHigh = scratch[0]!;
    return lastHigh > high || (lastHigh === high && scratch[1]! >= low);
  }

  #chunkLength(ci: number): number {
    return Math.min(CHUNK, this.entries - ci * CHUNK);
  }

  /** The chunk as one slot per entry (created empty, or expanded from its runs). */
  #materialise(ci: number): Uint32Array {
    const chunk = this.#chunks[ci];
    if (chunk instanceof Uint32Array) return chunk;
    const dense = new Uint32Array(CHUNK * 2);
    if (chunk !== undefined) {
      const r = chunk.runs;
      for (let i = 0; i < r.length; i += F)
        writeDense(dense, r[i]!, r[i + 1]!, r[i + 2]!, r[i + 3]!, r[i + 4]!);
    }
    this.#chunks[ci] = dense;
    this.#dense++;
    return dense;
  }

  /**
   * Visits the non-zero entries of [from, to) as maximal runs, in index order: runs continuing a
   * progression across chunks are visited once.
   */
  forEachRun(fn: EntryRunVisitor, from = 0, to = this.entries): void {
    const start = Math.max(0, from);
    const end = Math.min(this.entries, to);
    if (end <= start) return;
    let pFirst = -1;
    let pCount = 0;
    let pHigh = 0;
    let pLow = 0;
    let pStride = 0;
    const emit = (first: number, count: number, high: number, low: number, stride: number) => {
      if (pCount > 0 && pFirst + pCount === first) {
        const s = joinedStride(pCount, pHigh, pLow, pStride, count, high, low, stride);
        if (s >= 0) {
          pStride = s;
          pCount += count;
          return;
        }
      }
      if (pCount > 0) fn(pFirst, pCount, pHigh, pLow, pCount === 1 ? 0 : pStride);
      pFirst = first;
      pCount = count;
      pHigh = high;
      pLow = low;
      pStride = stride;
    };
    for (let ci = start >>> RUN_TABLE_CHUNK_SHIFT; ci * CHUNK < end; ci++) {
      const chunk = this.#chunks[ci];
      if (chunk === undefined) continue;
      const base = ci * CHUNK;
      const lo = Math.max(start - base, 0);
      const hi = Math.min(end - base, CHUNK);
      if (chunk instanceof Uint32Array) {
        denseRuns(chunk, base, lo, hi, emit);
        continue;
      }
      const r = chunk.runs;
      for (let i = 0; i < r.length; i += F) {
        const s = r[i]!;
        const e = s + r[i + 1]!;
        const a = Math.max(s, lo);
        const b = Math.min(e, hi);
        if (a >= b) continue;
        runEntryHalves(r[i + 2]!, r[i + 3]!, r[i + 4]!, a - s, scratch);
        emit(base + a, b - a, scratch[0]!, scratch[1]!, r[i + 4]!);
      }
    }
    if (pCount > 0) fn(pFirst, pCount, pHigh, pLow, pCount === 1 ? 0 : pStride);
  }

  /**
   * Visits every entry in index order as it is held: the runs of affine chunks through `onRun`,
   * and each materialised chunk whole through `onSlots` (its slots: entry first + k has halves
   * slots[2k], slots[2k + 1], zeros included). Empty stretches are skipped. This is how the table
   * is copied out without an entry-by-entry walk (a snapshot of a random table).
   */
  forEachSpan(onRun: EntryRunVisitor, onSlots: EntrySlotsVisitor): void {
    for (let ci = 0; ci < this.#chunks.length; ci++) {
      const chunk = this.#chunks[ci];
      if (chunk === undefined) continue;
      const base = ci * CHUNK;
      if (chunk instanceof Uint32Array) {
        onSlots(base, this.#chunkLength(ci), chunk);
        continue;
      }
      const r = chunk.runs;
      for (let i = 0; i < r.length; i += F) onRun(base + r[i]!, r[i + 1]!, r[i + 2]!, r[i + 3]!, r[i + 4]!);
    }
  }

  /** Calls `fn` for every non-zero entry, in index order. */
  forEachNonZero(fn: (index: number, high: number, low: number) => void): void {
    const out = new Uint32Array(2);
    this.forEachRun((first, count, high, low, stride) => {
      for (let k = 0; k < count; k++) {
        runEntryHalves(high, low, stride, k, out);
        fn(first + k, out[0]!, out[1]!);
      }
    });
  }

  /** How many entries are non-zero in [from, to): runs by their lengths, slots one by one. */
  countNonZero(from = 0, to = this.entries): number {
    const start = Math.max(0, from);
    const end = Math.min(this.entries, to);
    let n = 0;
    for (let ci = start >>> RUN_TABLE_CHUNK_SHIFT; ci * CHUNK < end; ci++) {
      const chunk = this.#chunks[ci];
      if (chunk === undefined) continue;
      const base = ci * CHUNK;
      const lo = Math.max(start - base, 0);
      const hi = Math.min(end - base, CHUNK);
      if (chunk instanceof Uint32Array) {
        for (let i = lo << 1, e = hi << 1; i < e; i += 2) if ((chunk[i]! | chunk[i + 1]!) !== 0) n++;
        continue;
      }
      const r = chunk.runs;
      for (let i = 0; i < r.length; i += F) {
        const a = Math.max(r[i]!, lo);
        const b = Math.min(r[i]! + r[i + 1]!, hi);
        if (b > a) n += b - a;
      }
    }
    return n;
  }
}

/**
 * The stride of run p (pCount entries from (pHigh:pLow), stride pStride) followed directly by run
 * q, when q continues p's progression; -1 when it does not. A run of one entry takes any stride.
 */
function joinedStride(
  pCount: number,
  pHigh: number,
  pLow: number,
  pStride: number,
  count: number,
  high: number,
  low: number,
  stride: number,
): number {
  let s: number;
  if (pCount > 1 && count > 1) s = pStride === stride ? stride : -1;
  else if (pCount > 1) s = pStride;
  else if (count > 1) s = stride;
  else s = strideBetween(pHigh, pLow, high, low);
  if (s < 0) return -1;
  runEntryHalves(pHigh, pLow, s, pCount, scratch);
  return scratch[0] === high && scratch[1] === low ? s : -1;
}

/** The non-zero big-endian u64 entries among `n` at `p`, counted up to `limit`. */
function countNonZero(view: DataView, p: number, n: number, limit: number): number {
  let found = 0;
  for (let q = 0; q < n && found < limit; q++, p += 8)
    if (view.getUint32(p) !== 0 || view.getUint32(p + 4) !== 0) found++;
  return found;
}

function runChunk(off: number, n: number, high: number, low: number, stride: number): AffineChunk {
  const c = new AffineChunk();
  c.runs = [off, n, high, low, stride];
  return c;
}

/** Writes n entries of a progression into a materialised chunk from `off`. */
function writeDense(
  chunk: Uint32Array,
  off: number,
  n: number,
  high: number,
  low: number,
  stride: number,
): void {
  if (stride === 0) {
    for (let k = 0; k < n; k++) {
      chunk[(off + k) << 1] = high;
      chunk[((off + k) << 1) | 1] = low;
    }
    return;
  }
  let h = high;
  let l = low;
  for (let k = 0; k < n; k++) {
    chunk[(off + k) << 1] = h;
    chunk[((off + k) << 1) | 1] = l;
    l += stride;
    if (l >= TWO_32) {
      const carry = Math.floor(l / TWO_32);
      h = (h + carry) >>> 0;
      l -= carry * TWO_32;
    }
  }
}

/** The runs of a materialised chunk's entries in [lo, hi), as progressions found in its slots. */
function denseRuns(chunk: Uint32Array, base: number, lo: number, hi: number, emit: EntryRunVisitor): void {
  let i = lo;
  while (i < hi) {
    const h0 = chunk[i << 1]!;
    const l0 = chunk[(i << 1) | 1]!;
    if (h0 === 0 && l0 === 0) {
      i++;
      continue;
    }
    let j = i + 1;
    let stride = 0;
    if (j < hi) {
      const h1 = chunk[j << 1]!;
      const l1 = chunk[(j << 1) | 1]!;
      stride = h1 === 0 && l1 === 0 ? -1 : strideBetween(h0, l0, h1, l1);
      if (stride >= 0) {
        let h = h1;
        let l = l1;
        j++;
        for (; j < hi; j++) {
          l += stride;
          if (l >= TWO_32) {
            const carry = Math.floor(l / TWO_32);
            h = (h + carry) >>> 0;
            l -= carry * TWO_32;
          }
          if (chunk[j << 1] !== h || chunk[(j << 1) | 1] !== l || (h === 0 && l === 0)) break;
        }
      } else stride = 0;
    }
    emit(base + i, j - i, h0, l0, j - i === 1 ? 0 : stride);
    i = j;
  }
}

/** Whether one run of `r` covers [off, off + n) with exactly the entries of the given run. */
function holdsAlready(
  r: number[],
  off: number,
  n: number,
  high: number,
  low: number,
  stride: number,
): boolean {
  for (let i = 0; i < r.length; i += F) {
    const s = r[i]!;
    if (s > off) return false;
    if (off + n > s + r[i + 1]!) continue;
    if (n > 1 && r[i + 4] !== stride) return false;
    runEntryHalves(r[i + 2]!, r[i + 3]!, r[i + 4]!, off - s, scratch);
    return scratch[0] === high && scratch[1] === low;
  }
  return false;
}

/** The runs with [off, off + n) cut out of them (trimmed or split). */
function cutRuns(r: number[], off: number, n: number): number[] {
  const end = off + n;
  const out: number[] = [];
  for (let i = 0; i < r.length; i += F) {
    const s = r[i]!;
    const e = s + r[i + 1]!;
    const high = r[i + 2]!;
    const low = r[i + 3]!;
    const stride = r[i + 4]!;
    if (e <= off || s >= end) {
      out.push(s, e - s, high, low, stride);
      continue;
    }
    if (s < off) out.push(s, off - s, high, low, stride);
    if (e > end) {
      runEntryHalves(high, low, stride, end - s, scratch);
      out.push(end, e - end, scratch[0]!, scratch[1]!, stride);
    }
  }
  return out;
}

/**
 * Inserts a run (whose range is free) in start order, joined with its neighbours where it
 * continues their progression (rewriting a table in place keeps it one run).
 */
function insertRun(r: number[], off: number, n: number, high: number, low: number, stride: number): void {
  let at = 0;
  while (at < r.length && r[at]! < off) at += F;
  r.splice(at, 0, off, n, high, low, stride);
  if (at + F < r.length) joinRuns(r, at);
  if (at >= F) joinRuns(r, at - F);
}

/** Joins the run at `at` with the next one when they touch and the next continues it. */
function joinRuns(r: number[], at: number): void {
  const next = at + F;
  if (r[at]! + r[at + 1]! !== r[next]) return;
  const s = joinedStride(
    r[at + 1]!,
    r[at + 2]!,
    r[at + 3]!,
    r[at + 4]!,
    r[next + 1]!,
    r[next + 2]!,
    r[next + 3]!,
    r[next + 4]!,
  );
  if (s < 0) return;
  r[at + 1] = r[at + 1]! + r[next + 1]!;
  r[at + 4] = s;
  r.splice(next, F);
}

// Encoding a uint64 VARRAY from runs and slots: affine records where blocks are progressions.

import { runEntryHalves, TWO_32 } from '@ddw/memory';
import { Malformed } from '../errors.js';
import type { StreamWriter } from '../streams.js';
import {
  BLOCK_MASK,
  BLOCK_SHIFT,
  VARRAY_AFFINE,
  VARRAY_BLOCK_ELEMENTS,
  VARRAY_LITERAL,
  VARRAY_STRIDE_LIMIT,
  VARRAY_ZERO_RUN,
} from './format.js';
import { nonZeroStretches, wrappingStrideBetween } from './halves.js';

/** Runs whose values may reach 2^64 within this margin are checked exactly for a zero element. */
const WRAP_MARGIN = 2 ** 64 - 2 ** 40;
/** Where runEntryHalves puts the entry a progression reaches: [high, low]. */
const reached = new Uint32Array(2);

/**
 * Turns runs into blocks. Which encoding a block gets depends on its elements only (not on how
 * the source cuts its runs), so the same table always encodes the same way: a block whose
 * elements are all non-zero and one progression (stride < 2^36) is affine, and consecutive affine
 * blocks continuing one progression are one record; an empty block is part of a zero run; any
 * other block is literal. A block's runs are followed as one progression for as long as they are
 * one; the first element that breaks it opens the literal block, which gets what was followed so
 * far and then every element as it comes, straight into the output buffer.
 */
export class RunEncoder {
  private readonly blocks: number;
  /** Blocks written to the stream (the pending record not included). */
  private emitted = 0;

  // The pending affine record: blocks recFirst.. recFirst+recBlocks-1.
  private recBlocks = 0;
  private recFirst = 0;
  private recHigh = 0;
  private recLow = 0;
  private recStride = 0;
  /** The value the record's progression gives the first element after it. */
  private recEndHigh = 0;
  private recEndLow = 0;

  // The current block.
  private cur = -1;
  private blockLength = 0;
  /** Its literal block is open (at litAt in the writer's buffer). */
  private literal = false;
  private litAt = 0;
  /** Elements from its start followed as one progression (while not literal). */
  private covered = 0;
  private firstHigh = 0;
  private firstLow = 0;
  /** The progression's stride; -1 while only one element is known. */
  private stride = -1;
  private lastHigh = 0;
  private lastLow = 0;

  /** Where the next run may start. */
  private next = 0;

  constructor(
    private readonly w: StreamWriter,
    private readonly name: string,
    private readonly count: number,
  ) {
    this.blocks = Math.ceil(count / VARRAY_BLOCK_ELEMENTS);
  }

  run(first: number, n: number, high: number, low: number, stride: number): void {
    // The hot path, small enough to be inlined into the source's loop: one element of the open literal block.
    if (
      n === 1 &&
      this.literal &&
      first >>> BLOCK_SHIFT === this.cur &&
      first >= this.next &&
      first < this.count &&
      first >>> 0 === first &&
      high >>> 0 === high &&
      low >>> 0 === low &&
      stride >= 0 &&
      stride < VARRAY_STRIDE_LIMIT &&
      Math.floor(stride) === stride
    ) {
      this.next = first + 1;
      const view = this.w.view;
      const p = this.litAt + (first & BLOCK_MASK) * 8;
      view.setUint32(p, high);
      view.setUint32(p + 4, low);
      return;
    }
    this.anyRun(first, n, high, low, stride);
  }

  /**
   * Elements given as slots (see VarraySource.forEachSpan). A whole block is classified by its
   * elements, as runs would be (empty, one progression of non-zero elements, or literal), and a
   * literal one is copied straight in; a part of a block goes element by element.
   */
  slots(first: number, n: number, slots: Uint32Array): void {
    if (
      !(first >= this.next && n >= 1 && first + n <= this.count) ||
      first >>> 0 !== first ||
      n >>> 0 !== n ||
      !(slots.length >= 2 * n)
    )
      throw new Malformed(`VARRAY ${this.name}: ${n} slots at ${first} are out of order or out of range`);
    let i = 0;
    while (i < n) {
      const at = first + i;
      const b = at >>> BLOCK_SHIFT;
      const offset = at & BLOCK_MASK;
      const blockLength = Math.min(VARRAY_BLOCK_ELEMENTS, this.count - b * VARRAY_BLOCK_ELEMENTS);
      const c = Math.min(n - i, blockLength - offset);
      if (offset === 0 && c === blockLength) {
        this.wholeBlock(b, c, slots, i);
        this.next = at + c;
      } else {
        for (let k = 0; k < c; k++) {
          const high = slots[2 * (i + k)]!;
          const low = slots[2 * (i + k) + 1]!;
          if (high !== 0 || low !== 0) this.anyRun(at + k, 1, high, low, 0);
        }
        this.next = at + c;
      }
      i += c;
    }
  }

  /** Block `b` (c elements) from slots[2 * from]. */
  private wholeBlock(b: number, c: number, slots: Uint32Array, from: number): void {
    const s = 2 * from;
    const h0 = slots[s]!;
    const l0 = slots[s + 1]!;
    if (h0 === 0 && l0 === 0) {
      // Not a progression of non-zero elements: empty, or literal.
      let any = false;
      for (let k = 2; k < 2 * c && !any; k++) any = slots[s + k] !== 0;
      if (!any) return;
    } else {
      const stride = c === 1 ? 0 : wrappingStrideBetween(h0, l0, slots[s + 2]!, slots[s + 3]!);
      if (stride >= 0 && isNonZeroProgression(slots, s, c, h0, l0, stride)) {
        this.moveTo(b);
        this.segment(0, c, h0, l0, stride);
        return;
      }
    }
    this.moveTo(b);
    this.openLiteral();
    const view = this.w.view;
    let p = this.litAt;
    for (let k = s, end = s + 2 * c; k < end; k += 2, p += 8) {
      view.setUint32(p, slots[k]!);
      view.setUint32(p + 4, slots[k + 1]!);
    }
  }

  private anyRun(first: number, n: number, high: number, low: number, stride: number): void {
    if (
      !(first >= this.next && n >= 1 && first + n <= this.count) ||
      first >>> 0 !== first ||
      n >>> 0 !== n ||
      high >>> 0 !== high ||
      low >>> 0 !== low ||
      !(stride >= 0 && stride < VARRAY_STRIDE_LIMIT) ||
      Math.floor(stride) !== stride
    )
      this.refuse(first, n, high, low, stride);
    this.next = first + n;
    if (n === 1) {
      if (high === 0 && low === 0) return;
      const b = first >>> BLOCK_SHIFT;
      if (b !== this.cur) this.moveTo(b);
      if (this.literal) {
        const view = this.w.view;
        const p = this.litAt + (first & BLOCK_MASK) * 8;
        view.setUint32(p, high);
        view.setUint32(p + 4, low);
      } else {
        this.segment(first & BLOCK_MASK, 1, high, low, 0);
      }
      return;
    }
    if (stride === 0) {
      if (high === 0 && low === 0) return; // a run of zeros
    } else if ((high === 0 && low === 0) || high * TWO_32 + low + (n - 1) * stride >= WRAP_MARGIN) {
      // It may wrap through zero: only its non-zero stretches are elements to write.
      nonZeroStretches(high, low, stride, n, (start, c, h, l) => this.spread(first + start, c, h, l, stride));
      return;
    }
    this.spread(first, n, high, low, stride);
  }

  private refuse(first: number, n: number, high: number, low: number, stride: number): never {
    const name = this.name;
    if (!(first >= this.next && n >= 1 && first + n <= this.count) || first >>> 0 !== first || n >>> 0 !== n)
      throw new Malformed(
        `VARRAY ${name}: a run of ${n} elements at ${first} is out of order or out of range`,
      );
    if (high >>> 0 !== high || low >>> 0 !== low)
      throw new Malformed(`VARRAY ${name}: element ${first} does not fit in a uint64`);
    throw new Malformed(
      `VARRAY ${name}: the run at ${first} has stride ${stride}, not an integer in [0, 2^36)`,
    );
  }

  /** A run of non-zero elements, cut at block boundaries. */
  private spread(first: number, n: number, high: number, low: number, stride: number): void {
    let i = first;
    let left = n;
    let h = high;
    let l = low;
    for (;;) {
      const b = i >>> BLOCK_SHIFT;
      if (b !== this.cur) this.moveTo(b);
      const offset = i & BLOCK_MASK;
      const c = Math.min(left, this.blockLength - offset);
      this.segment(offset, c, h, l, stride);
      left -= c;
      if (left === 0) return;
      i += c;
      runEntryHalves(h, l, stride, c, reached);
      h = reached[0]!;
      l = reached[1]!;
    }
  }

  /** `c` elements of the current block from `offset`, a progression from high:low. */
  private segment(offset: number, c: number, high: number, low: number, stride: number): void {
    if (this.literal) {
      this.writeLiteral(offset, c, high, low, stride);
      return;
    }
    const covered = this.covered;
    if (offset === covered) {
      let follows = covered === 0;
      if (follows) {
        this.firstHigh = high;
        this.firstLow = low;
        this.stride = c > 1 ? stride : -1;
      } else {
        const d = wrappingStrideBetween(this.lastHigh, this.lastLow, high, low);
        const known = this.stride;
        follows =
          d >= 0 && (known === -1 ? c === 1 || stride === d : d === known && (c === 1 || stride === known));
        if (follows && known === -1) this.stride = d;
      }
      if (follows) {
        this.covered = covered + c;
        if (c > 1) {
          runEntryHalves(high, low, stride, c - 1, reached);
          this.lastHigh = reached[0]!;
          this.lastLow = reached[1]!;
        } else {
          this.lastHigh = high;
          this.lastLow = low;
        }
        return;
      }
    }
    this.openLiteral();
    this.writeLiteral(offset, c, high, low, stride);
  }

  private moveTo(b: number): void {
    if (this.cur >= 0) this.finish();
    this.cur = b;
    this.blockLength = Math.min(VARRAY_BLOCK_ELEMENTS, this.count - b * VARRAY_BLOCK_ELEMENTS);
    this.literal = false;
    this.covered = 0;
    this.stride = -1;
  }

  /** The current block is complete: it is literal (written), empty, affine, or literal with zeros. */
  private finish(): void {
    if (this.literal || this.covered === 0) return;
    if (this.covered === this.blockLength) this.affine();
    else this.openLiteral();
  }

  private affine(): void {
    const b = this.cur;
    const high = this.firstHigh;
    const low = this.firstLow;
    const stride = this.stride;
    const continues =
      this.recBlocks > 0 &&
      this.recFirst + this.recBlocks === b &&
      high === this.recEndHigh &&
      low === this.recEndLow &&
      (stride === -1 || stride === this.recStride);
    if (continues) {
      this.recBlocks++;
    } else {
      this.flushRecord();
      this.zerosTo(b);
      this.recFirst = b;
      this.recBlocks = 1;
      this.recHigh = high;
      this.recLow = low;
      this.recStride = stride === -1 ? 0 : stride;
      this.recEndHigh = high;
      this.recEndLow = low;
    }
    runEntryHalves(this.recEndHigh, this.recEndLow, this.recStride, VARRAY_BLOCK_ELEMENTS, reached);
    this.recEndHigh = reached[0]!;
    this.recEndLow = reached[1]!;
  }

  private flushRecord(): void {
    if (this.recBlocks === 0) return;
    const w = this.w;
    w.u8(VARRAY_AFFINE);
    w.u32(this.recBlocks);
    w.u64Halves(this.recHigh, this.recLow);
    w.u64Halves(Math.floor(this.recStride / TWO_32), this.recStride % TWO_32);
    this.emitted = this.recFirst + this.recBlocks;
    this.recBlocks = 0;
  }

  private zerosTo(b: number): void {
    if (b <= this.emitted) return;
    this.w.u8(VARRAY_ZERO_RUN);
    this.w.u32(b - this.emitted);
    this.emitted = b;
  }

  /** Opens the current block's literal block, with the progression followed so far. */
  private openLiteral(): void {
    this.flushRecord();
    this.zerosTo(this.cur);
    this.w.u8(VARRAY_LITERAL);
    this.litAt = this.w.reserve(this.blockLength * 8);
    this.emitted = this.cur + 1;
    this.literal = true;
    if (this.covered > 0)
      this.writeLiteral(0, this.covered, this.firstHigh, this.firstLow, this.stride === -1 ? 0 : this.stride);
  }

  private writeLiteral(offset: number, c: number, high: number, low: number, stride: number): void {
    const view = this.w.view;
    let p = this.litAt + offset * 8;
    if (c === 1) {
      view.setUint32(p, high);
      view.setUint32(p + 4, low);
      return;
    }
    const sh = Math.floor(stride / TWO_32);
    const sl = stride % TWO_32;
    let h = high;
    let l = low;
    for (let k = 0; k < c; k++) {
      view.setUint32(p, h);
      view.setUint32(p + 4, l);
      p += 8;
      l += sl;
      let carry = 0;
      if (l >= TWO_32) {
        l -= TWO_32;
        carry = 1;
      }
      h = (h + sh + carry) >>> 0;
    }
  }

  end(): void {
    if (this.cur >= 0) this.finish();
    this.flushRecord();
    this.zerosTo(this.blocks);
  }
}

/** Whether the c slot pairs from s are the progression (h0:l0) + k * stride with no zero element. */
function isNonZeroProgression(
  slots: Uint32Array,
  s: number,
  c: number,
  h0: number,
  l0: number,
  stride: number,
): boolean {
  const last = s + 2 * (c - 1);
  runEntryHalves(h0, l0, stride, c - 1, reached);
  if (slots[last] !== reached[0] || slots[last + 1] !== reached[1]) return false;
  const sh = Math.floor(stride / TWO_32);
  const sl = stride % TWO_32;
  let h = h0;
  let l = l0;
  for (let k = s + 2; k <= last; k += 2) {
    l += sl;
    let carry = 0;
    if (l >= TWO_32) {
      l -= TWO_32;
      carry = 1;
    }
    h = (h + sh + carry) >>> 0;
    if (slots[k] !== h || slots[k + 1] !== l || (h === 0 && l === 0)) return false;
  }
  return true;
}

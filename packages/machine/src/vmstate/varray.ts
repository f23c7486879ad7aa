// VARRAY values (VMSTATE_VARRAY_UINT32_ALLOC): what they are saved from, how they are encoded in
// blocks (zero runs, literal blocks, affine blocks), and the view a load gives.

import { ELEMENT_BYTES, type VMStateElementType, type VMStateVarrayField } from './description.js';
import { describe, Malformed } from './errors.js';
import type { ByteReader, StreamWriter } from './streams.js';

/** Elements per block of an encoded VARRAY (see the module comment of vmstate.ts). */
export const VARRAY_BLOCK_ELEMENTS = 1 << 14;
/** The bound (exclusive) of a run's or an affine record's stride: 2^36. */
export const VARRAY_STRIDE_LIMIT = 2 ** 36;

const BLOCK_SHIFT = 14;
const BLOCK_MASK = VARRAY_BLOCK_ELEMENTS - 1;
const VARRAY_ZERO_RUN = 0x00;
const VARRAY_LITERAL = 0x01;
const VARRAY_AFFINE = 0x02;
const TWO_32 = 0x1_0000_0000;
/** A stride's high half is below this (stride < 2^36). */
const STRIDE_HIGH_LIMIT = 16;
/** Runs whose values may reach 2^64 within this margin are checked exactly for a zero element. */
const WRAP_MARGIN = 2 ** 64 - 2 ** 40;

/**
 * What a VARRAY is saved from: its length and its non-zero elements in increasing index order,
 * each as two 32-bit halves (high is 0 for elements narrower than 64 bits). A TCE table's sparse
 * storage is one directly: saving aliases the live entries, as QEMU's pre_save does.
 */
export interface VarraySource {
  readonly length: number;
  forEachNonZero(fn: (index: number, high: number, low: number) => void): void;
  /**
   * Visits the non-zero elements as runs, in increasing index order, runs not overlapping:
   * element first+k (k < count) is the 64-bit value (high:low) + k*stride, modulo 2^64. stride is
   * an integer 0 <= stride < 2^36. Optional: a uint64 VARRAY whose source has it is saved from its
   * runs, and a block that is one progression costs 21 bytes, however long.
   */
  forEachRun?(fn: (first: number, count: number, high: number, low: number, stride: number) => void): void;
  /**
   * Visits every element in index order as the source holds it: runs (as forEachRun, but they
   * need not be maximal) and stretches of plain slots (element first + k is
   * (slots[2k]:slots[2k + 1]), zeros included). Optional, uint64 only: preferred over forEachRun,
   * so a table of random entries is copied out a block at a time. The encoding is the same.
   */
  forEachSpan?(
    onRun: (first: number, count: number, high: number, low: number, stride: number) => void,
    onSlots: (first: number, count: number, slots: Uint32Array) => void,
  ): void;
}

/** A VarraySource over an array of numbers or bigints. */
export function varrayOf(values: ArrayLike<number> | ArrayLike<bigint>): VarraySource {
  return {
    length: values.length,
    forEachNonZero(fn) {
      for (let i = 0; i < values.length; i++) {
        const v = values[i]!;
        if (typeof v === 'bigint') {
          const u = BigInt.asUintN(64, v);
          if (u !== 0n) fn(i, Number(u >> 32n), Number(u & 0xffffffffn));
        } else if (v !== 0) {
          fn(i, Math.floor(v / TWO_32) >>> 0, v >>> 0);
        }
      }
    },
  };
}

// ---------------------------------------------------------------------------------------------
// 64-bit arithmetic on (high, low) halves, without BigInt on the hot paths.

/** The result of advance(): module-level, as a pair would allocate. */
let outHigh = 0;
let outLow = 0;

/** (high:low) + n modulo 2^64 into outHigh:outLow; n a non-negative integer below 2^53. */
function advance(high: number, low: number, n: number): void {
  let l = low + (n % TWO_32);
  let h = high + Math.floor(n / TWO_32);
  if (l >= TWO_32) {
    l -= TWO_32;
    h += 1;
  }
  outHigh = h % TWO_32;
  outLow = l;
}

/** (high:low) - (lastHigh:lastLow) modulo 2^64 if it is a valid stride (< 2^36), else -1. */
function strideBetween(lastHigh: number, lastLow: number, high: number, low: number): number {
  let dl = low - lastLow;
  let dh = high - lastHigh;
  if (dl < 0) {
    dl += TWO_32;
    dh -= 1;
  }
  if (dh < 0) dh += TWO_32;
  return dh < STRIDE_HIGH_LIMIT ? dh * TWO_32 + dl : -1;
}

const big = (high: number, low: number): bigint => (BigInt(high) << 32n) | BigInt(low);

/** Sets outHigh:outLow to v modulo 2^64. */
function fromBig(v: bigint): void {
  const u = BigInt.asUintN(64, v);
  outHigh = Number(u >> 32n);
  outLow = Number(u & 0xffffffffn);
}

/** The k in [0, n) with v + k*s = 0 modulo 2^64, increasing (s > 0: at most 17 of them). */
function zeroPositions(v: bigint, s: bigint, n: number): number[] {
  const out: number[] = [];
  const last = v + BigInt(n - 1) * s;
  for (let m = v === 0n ? 0n : 1n; m << 64n <= last; m++) {
    const t = (m << 64n) - v;
    if (t % s === 0n) out.push(Number(t / s));
  }
  return out;
}

/**
 * Calls `each(start, count, high, low)` for the stretches of a progression (value v, stride s,
 * n elements) between its zero elements (where it wraps through 2^64).
 */
function nonZeroStretches(
  high: number,
  low: number,
  stride: number,
  n: number,
  each: (start: number, count: number, high: number, low: number) => void,
): void {
  const v = big(high, low);
  const s = BigInt(stride);
  if (s === 0n) {
    if (v !== 0n) each(0, n, high, low);
    return;
  }
  let from = 0;
  for (const zero of [...zeroPositions(v, s, n), n]) {
    if (zero > from) {
      fromBig(v + BigInt(from) * s);
      each(from, zero - from, outHigh, outLow);
    }
    from = zero + 1;
  }
}

// ---------------------------------------------------------------------------------------------
// Encoding

/**
 * Writes a VARRAY's elements (QEMU-shaped, big-endian in index order) in blocks of
 * VARRAY_BLOCK_ELEMENTS: zero runs for empty blocks, affine records for blocks that are one
 * progression (uint64 elements of a source with forEachRun), literal blocks for the rest.
 */
export function putVarray(w: StreamWriter, field: VMStateVarrayField, value: unknown, count: number): void {
  const name = field.name;
  if (count === 0) {
    if (value !== null && value !== undefined && (value as VarraySource).length !== 0)
      throw new Malformed(`VARRAY ${name}: its count is 0 but it holds elements`);
    return;
  }
  const source: VarraySource | undefined =
    value !== null &&
    typeof value === 'object' &&
    typeof (value as VarraySource).forEachNonZero === 'function'
      ? (value as VarraySource)
      : value !== null && typeof value === 'object' && typeof (value as ArrayLike<number>).length === 'number'
        ? varrayOf(value as ArrayLike<number>)
        : undefined;
  if (!source) throw new Malformed(`VARRAY ${name}: ${describe(value)} is not an array`);
  if (source.length !== count)
    throw new Malformed(`VARRAY ${name}: it holds ${source.length} elements, its count says ${count}`);
  if (field.element === 'uint64' && typeof source.forEachSpan === 'function')
    putSpans(w, name, source, count);
  else if (field.element === 'uint64' && typeof source.forEachRun === 'function')
    putRuns(w, name, source, count);
  else putElements(w, field, source, count);
}

/** The elements of a source without runs: literal blocks written in place, zero runs between. */
function putElements(w: StreamWriter, field: VMStateVarrayField, source: VarraySource, count: number): void {
  const encoder = new ElementEncoder(w, field, count);
  const outer = elements;
  elements = encoder;
  try {
    source.forEachNonZero(onElement);
  } finally {
    elements = outer;
  }
  encoder.end();
}

// The callbacks given to sources are always the same two functions, small, so that a source's
// loop sees one target and inlines it: a call that is not inlined boxes its uint32 arguments,
// one allocation per element. They hand the element to the encoder being written.
let elements: ElementEncoder | undefined;
let runs: RunEncoder | undefined;
const onElement = (index: number, high: number, low: number): void => elements!.element(index, high, low);
const onRun = (first: number, n: number, high: number, low: number, stride: number): void =>
  runs!.run(first, n, high, low, stride);

/** Literal blocks, each opened by its first non-zero element and filled in place. */
class ElementEncoder {
  private readonly width: number;
  private readonly maxLow: number;
  private readonly blocks: number;
  private emitted = 0;
  private last = -1;
  private literalBlock = -1;
  private literalAt = 0;
  private view: DataView;
  private buf: Uint8Array;

  constructor(
    private readonly w: StreamWriter,
    private readonly field: VMStateVarrayField,
    private readonly count: number,
  ) {
    this.width = ELEMENT_BYTES[field.element];
    this.maxLow = this.width >= 4 ? 0xffffffff : this.width === 2 ? 0xffff : 0xff;
    this.blocks = Math.ceil(count / VARRAY_BLOCK_ELEMENTS);
    this.view = w.view;
    this.buf = w.buf;
  }

  element(index: number, high: number, low: number): void {
    if (
      !(index > this.last && index < this.count) ||
      index >>> 0 !== index ||
      high >>> 0 !== high ||
      low >>> 0 !== low ||
      low > this.maxLow ||
      (high !== 0 && this.width < 8)
    )
      this.refuse(index);
    this.last = index;
    const block = index >>> BLOCK_SHIFT;
    if (block !== this.literalBlock) this.open(block);
    const width = this.width;
    const p = this.literalAt + (index & BLOCK_MASK) * width;
    if (width === 8) {
      this.view.setUint32(p, high);
      this.view.setUint32(p + 4, low);
    } else if (width === 4) this.view.setUint32(p, low);
    else if (width === 2) this.view.setUint16(p, low);
    else this.buf[p] = low;
  }

  private refuse(index: number): never {
    const name = this.field.name;
    if (!(index > this.last && index < this.count) || index >>> 0 !== index)
      throw new Malformed(`VARRAY ${name}: element index ${index} is out of order or out of range`);
    throw new Malformed(`VARRAY ${name}: element ${index} does not fit in a ${this.field.element}`);
  }

  private open(block: number): void {
    const w = this.w;
    if (block > this.emitted) {
      w.u8(VARRAY_ZERO_RUN);
      w.u32(block - this.emitted);
    }
    w.u8(VARRAY_LITERAL);
    this.literalAt = w.reserve(
      Math.min(VARRAY_BLOCK_ELEMENTS, this.count - block * VARRAY_BLOCK_ELEMENTS) * this.width,
    );
    this.view = w.view;
    this.buf = w.buf;
    this.literalBlock = block;
    this.emitted = block + 1;
  }

  end(): void {
    if (this.blocks > this.emitted) {
      this.w.u8(VARRAY_ZERO_RUN);
      this.w.u32(this.blocks - this.emitted);
    }
  }
}

/** The elements of a uint64 source with runs. */
function putRuns(w: StreamWriter, name: string, source: VarraySource, count: number): void {
  const encoder = new RunEncoder(w, name, count);
  const outer = runs;
  runs = encoder;
  try {
    source.forEachRun!(onRun);
  } finally {
    runs = outer;
  }
  encoder.end();
}

/** The elements of a uint64 source with spans. */
function putSpans(w: StreamWriter, name: string, source: VarraySource, count: number): void {
  const encoder = new RunEncoder(w, name, count);
  const outer = runs;
  runs = encoder;
  try {
    source.forEachSpan!(onRun, onSlots);
  } finally {
    runs = outer;
  }
  encoder.end();
}

const onSlots = (first: number, n: number, slots: Uint32Array): void => runs!.slots(first, n, slots);

/**
 * Turns runs into blocks. Which encoding a block gets depends on its elements only (not on how
 * the source cuts its runs), so the same table always encodes the same way: a block whose
 * elements are all non-zero and one progression (stride < 2^36) is affine, and consecutive affine
 * blocks continuing one progression are one record; an empty block is part of a zero run; any
 * other block is literal. A block's runs are followed as one progression for as long as they are
 * one; the first element that breaks it opens the literal block, which gets what was followed so
 * far and then every element as it comes, straight into the output buffer.
 */
class RunEncoder {
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
      const stride = c === 1 ? 0 : strideBetween(h0, l0, slots[s + 2]!, slots[s + 3]!);
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
      advance(h, l, c * stride);
      h = outHigh;
      l = outLow;
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
        const d = strideBetween(this.lastHigh, this.lastLow, high, low);
        const known = this.stride;
        follows =
          d >= 0 && (known === -1 ? c === 1 || stride === d : d === known && (c === 1 || stride === known));
        if (follows && known === -1) this.stride = d;
      }
      if (follows) {
        this.covered = covered + c;
        if (c > 1) {
          advance(high, low, (c - 1) * stride);
          this.lastHigh = outHigh;
          this.lastLow = outLow;
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
    advance(this.recEndHigh, this.recEndLow, VARRAY_BLOCK_ELEMENTS * this.recStride);
    this.recEndHigh = outHigh;
    this.recEndLow = outLow;
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
  advance(h0, l0, (c - 1) * stride);
  if (slots[last] !== outHigh || slots[last + 1] !== outLow) return false;
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

// ---------------------------------------------------------------------------------------------
// Decoding

/** The affine records of a loaded VARRAY, one entry per record. */
interface AffineRecords {
  /** The first block. */
  readonly block: number[];
  /** How many blocks. */
  readonly blocks: number[];
  readonly high: number[];
  readonly low: number[];
  readonly stride: number[];
}

/** Reads a VARRAY of `count` elements; null for 0 (the ALLOC flag allocates only for a non-zero size). */
export function getVarray(r: ByteReader, field: VMStateVarrayField, count: number): VarrayView | null {
  if (count === 0) return null;
  const name = field.name;
  const width = ELEMENT_BYTES[field.element];
  const total = Math.ceil(count / VARRAY_BLOCK_ELEMENTS);
  const blocks = new Float64Array(total);
  const records: AffineRecords = { block: [], blocks: [], high: [], low: [], stride: [] };
  let b = 0;
  while (b < total) {
    const tag = r.u8(`VARRAY ${name} block tag`);
    if (tag === VARRAY_ZERO_RUN) {
      const run = r.u32(`VARRAY ${name} zero run`);
      if (run === 0 || run > total - b)
        throw new Malformed(`VARRAY ${name}: a run of ${run} zero blocks at block ${b} of ${total}`);
      blocks.fill(-1, b, b + run);
      b += run;
    } else if (tag === VARRAY_LITERAL) {
      const n = Math.min(VARRAY_BLOCK_ELEMENTS, count - b * VARRAY_BLOCK_ELEMENTS);
      r.need(n * width, `VARRAY ${name} block ${b}`);
      blocks[b] = r.pos;
      r.pos += n * width;
      b++;
    } else if (tag === VARRAY_AFFINE && r.formatVersion >= 2) {
      if (width !== 8)
        throw new Malformed(`VARRAY ${name}: affine blocks at block ${b} in a VARRAY of ${field.element}`);
      const run = r.u32(`VARRAY ${name} affine run`);
      if (run === 0 || run > total - b)
        throw new Malformed(`VARRAY ${name}: a run of ${run} affine blocks at block ${b} of ${total}`);
      const high = r.u32(`VARRAY ${name} affine value`);
      const low = r.u32(`VARRAY ${name} affine value`);
      const strideHigh = r.u32(`VARRAY ${name} affine stride`);
      const strideLow = r.u32(`VARRAY ${name} affine stride`);
      if (strideHigh >= STRIDE_HIGH_LIMIT)
        throw new Malformed(
          `VARRAY ${name}: affine blocks at block ${b} have stride 0x${big(strideHigh, strideLow).toString(16)}, 2^36 or more`,
        );
      const index = records.block.length;
      records.block.push(b);
      records.blocks.push(run);
      records.high.push(high);
      records.low.push(low);
      records.stride.push(strideHigh * TWO_32 + strideLow);
      blocks.fill(-2 - index, b, b + run);
      b += run;
    } else {
      throw new Malformed(`VARRAY ${name}: unknown block tag 0x${tag.toString(16)} at block ${b}`);
    }
  }
  return new VarrayView(r.buf, r.view, field.element, count, blocks, records);
}

const NO_RECORDS: AffineRecords = { block: [], blocks: [], high: [], low: [], stride: [] };

/**
 * A loaded VARRAY: a view into the snapshot bytes (nothing is copied until a section applies it).
 * Elements read as bigint; forEachNonZero and forEachRun walk the populated blocks only, and an
 * affine record is one run however long.
 */
export class VarrayView implements VarraySource {
  /** @internal Built by the decoder. */
  constructor(
    private readonly bytes: Uint8Array,
    private readonly view: DataView,
    readonly element: VMStateElementType,
    readonly length: number,
    /** Per block: where its elements start in `bytes`, -1 for an all-zero block, -2-r for affine record r. */
    private readonly blocks: Float64Array,
    private readonly records: AffineRecords = NO_RECORDS,
  ) {}

  private get width(): number {
    return ELEMENT_BYTES[this.element];
  }

  get(index: number): bigint {
    if (!Number.isInteger(index) || index < 0 || index >= this.length) return 0n;
    const at = this.blocks[index >>> BLOCK_SHIFT]!;
    if (at === -1) return 0n;
    if (at < 0) {
      const r = -2 - at;
      const k = index - this.records.block[r]! * VARRAY_BLOCK_ELEMENTS;
      const { high, low, stride } = this.records;
      return BigInt.asUintN(64, big(high[r]!, low[r]!) + BigInt(k) * BigInt(stride[r]!));
    }
    const p = at + (index & BLOCK_MASK) * this.width;
    switch (this.element) {
      case 'uint8':
        return BigInt(this.bytes[p]!);
      case 'uint16':
        return BigInt(this.view.getUint16(p));
      case 'uint32':
        return BigInt(this.view.getUint32(p));
      case 'uint64':
        return this.view.getBigUint64(p);
    }
  }

  /** The elements of affine record `r`: first index, element count. */
  private recordSpan(r: number): [number, number] {
    const first = this.records.block[r]! * VARRAY_BLOCK_ELEMENTS;
    const end = Math.min(
      this.length,
      (this.records.block[r]! + this.records.blocks[r]!) * VARRAY_BLOCK_ELEMENTS,
    );
    return [first, end - first];
  }

  /** Calls `literal(base, at, n)` for each literal block and `affine(r)` for each record, in order. */
  private walk(literal: (base: number, at: number, n: number) => void, affine: (r: number) => void): void {
    const blocks = this.blocks;
    for (let b = 0; b < blocks.length; ) {
      const at = blocks[b]!;
      if (at === -1) {
        b++;
      } else if (at < 0) {
        const r = -2 - at;
        affine(r);
        b = this.records.block[r]! + this.records.blocks[r]!;
      } else {
        const base = b * VARRAY_BLOCK_ELEMENTS;
        literal(base, at, Math.min(VARRAY_BLOCK_ELEMENTS, this.length - base));
        b++;
      }
    }
  }

  /** Calls `fn` for the non-zero elements of the literal block of n elements at `at` (index base). */
  private literalElements(
    base: number,
    at: number,
    n: number,
    fn: (index: number, high: number, low: number) => void,
  ): void {
    const width = this.width;
    const view = this.view;
    const bytes = this.bytes;
    for (let i = 0; i < n; i++) {
      const p = at + i * width;
      let high = 0;
      let low: number;
      if (width === 8) {
        high = view.getUint32(p);
        low = view.getUint32(p + 4);
      } else if (width === 4) low = view.getUint32(p);
      else if (width === 2) low = view.getUint16(p);
      else low = bytes[p]!;
      if (high !== 0 || low !== 0) fn(base + i, high, low);
    }
  }

  forEachNonZero(fn: (index: number, high: number, low: number) => void): void {
    this.walk(
      (base, at, n) => this.literalElements(base, at, n, fn),
      (r) => {
        const [first, n] = this.recordSpan(r);
        const stride = this.records.stride[r]!;
        const sh = Math.floor(stride / TWO_32);
        const sl = stride % TWO_32;
        let h = this.records.high[r]!;
        let l = this.records.low[r]!;
        for (let i = first; i < first + n; i++) {
          if (h !== 0 || l !== 0) fn(i, h, l);
          l += sl;
          let carry = 0;
          if (l >= TWO_32) {
            l -= TWO_32;
            carry = 1;
          }
          h = (h + sh + carry) >>> 0;
        }
      },
    );
  }

  /**
   * The non-zero elements as runs (see VarraySource.forEachRun): an affine record is one run (cut
   * where it wraps through zero), and literal elements that continue a progression join it, so
   * consecutive runs are never one progression.
   */
  forEachRun(fn: (first: number, count: number, high: number, low: number, stride: number) => void): void {
    const out = new RunCoalescer(fn);
    const element = (index: number, high: number, low: number) => out.element(index, high, low);
    this.walk(
      (base, at, n) => this.literalElements(base, at, n, element),
      (r) => {
        const [first, n] = this.recordSpan(r);
        const stride = this.records.stride[r]!;
        nonZeroStretches(this.records.high[r]!, this.records.low[r]!, stride, n, (start, c, h, l) =>
          out.run(first + start, c, h, l, stride),
        );
      },
    );
    out.end();
  }

  /**
   * Every element as stored, for copying the array into a table without an element-by-element
   * walk: affine records as runs (cut where they wrap through zero), literal blocks as their
   * big-endian bytes (element first + k at byteOffset + 8k, zeros included). uint64 only; other
   * widths come as runs.
   */
  forEachStored(
    onRun: (first: number, count: number, high: number, low: number, stride: number) => void,
    onLiteral: (first: number, count: number, view: DataView, byteOffset: number) => void,
  ): void {
    if (this.element !== 'uint64') {
      this.forEachRun(onRun);
      return;
    }
    this.walk(
      (base, at, n) => onLiteral(base, n, this.view, at),
      (r) => {
        const [first, n] = this.recordSpan(r);
        const stride = this.records.stride[r]!;
        nonZeroStretches(this.records.high[r]!, this.records.low[r]!, stride, n, (start, c, h, l) =>
          onRun(first + start, c, h, l, stride),
        );
      },
    );
  }

  /** Every element, for small arrays (tests, inspection). */
  toArray(): bigint[] {
    const out = new Array<bigint>(this.length).fill(0n);
    this.forEachNonZero((i, high, low) => {
      out[i] = (BigInt(high) << 32n) | BigInt(low);
    });
    return out;
  }
}

/** Joins elements and runs that continue one progression into one run before passing it on. */
class RunCoalescer {
  private count = 0;
  private first = 0;
  private high = 0;
  private low = 0;
  private stride = 0;
  private lastHigh = 0;
  private lastLow = 0;

  constructor(
    private readonly fn: (first: number, count: number, high: number, low: number, stride: number) => void,
  ) {}

  element(i: number, high: number, low: number): void {
    if (this.count > 0 && i === this.first + this.count) {
      const d = strideBetween(this.lastHigh, this.lastLow, high, low);
      if (d >= 0 && (this.count === 1 || d === this.stride)) {
        this.stride = d;
        this.count++;
        this.lastHigh = high;
        this.lastLow = low;
        return;
      }
    }
    this.emit();
    this.first = i;
    this.count = 1;
    this.high = high;
    this.low = low;
    this.stride = 0;
    this.lastHigh = high;
    this.lastLow = low;
  }

  /** `n` non-zero elements from high:low by `stride`. */
  run(first: number, n: number, high: number, low: number, stride: number): void {
    if (n === 1) {
      this.element(first, high, low);
      return;
    }
    fromBig(big(high, low) + BigInt(n - 1) * BigInt(stride));
    const lastHigh = outHigh;
    const lastLow = outLow;
    if (this.count > 0 && first === this.first + this.count) {
      const d = strideBetween(this.lastHigh, this.lastLow, high, low);
      if (d === stride && (this.count === 1 || this.stride === stride)) {
        this.stride = stride;
        this.count += n;
        this.lastHigh = lastHigh;
        this.lastLow = lastLow;
        return;
      }
    }
    this.emit();
    this.first = first;
    this.count = n;
    this.high = high;
    this.low = low;
    this.stride = stride;
    this.lastHigh = lastHigh;
    this.lastLow = lastLow;
  }

  end(): void {
    this.emit();
  }

  private emit(): void {
    if (this.count === 0) return;
    this.fn(this.first, this.count, this.high, this.low, this.count === 1 ? 0 : this.stride);
    this.count = 0;
  }
}

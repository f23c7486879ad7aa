// A loaded VARRAY: the view a load gives of the snapshot's bytes.

import { TWO_32 } from '@ddw/memory';
import { ELEMENT_BYTES, type VMStateElementType } from '../description.js';
import { BLOCK_MASK, BLOCK_SHIFT, VARRAY_BLOCK_ELEMENTS } from './format.js';
import { big, nonZeroStretches } from './halves.js';
import { RunCoalescer } from './run-coalescer.js';
import type { VarraySource } from './source.js';

/** The affine records of a loaded VARRAY, one entry per record. */
export interface AffineRecords {
  /** The first block. */
  readonly block: number[];
  /** How many blocks. */
  readonly blocks: number[];
  readonly high: number[];
  readonly low: number[];
  readonly stride: number[];
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

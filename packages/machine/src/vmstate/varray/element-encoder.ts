// Encoding a VARRAY from its non-zero elements.

import { ELEMENT_BYTES, type VMStateVarrayField } from '../description.js';
import { Malformed } from '../errors.js';
import type { StreamWriter } from '../streams.js';
import { BLOCK_MASK, BLOCK_SHIFT, VARRAY_BLOCK_ELEMENTS, VARRAY_LITERAL, VARRAY_ZERO_RUN } from './format.js';

/** Literal blocks, each opened by its first non-zero element and filled in place. */
export class ElementEncoder {
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

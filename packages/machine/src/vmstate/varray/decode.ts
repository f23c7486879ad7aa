// Decoding a VARRAY: its blocks read and checked, the elements left in place for the view.

import { formatHex, TWO_32 } from '@ddw/memory';
import { ELEMENT_BYTES, type VMStateVarrayField } from '../description.js';
import { Malformed } from '../errors.js';
import type { ByteReader } from '../streams.js';
import {
  STRIDE_HIGH_LIMIT,
  VARRAY_AFFINE,
  VARRAY_BLOCK_ELEMENTS,
  VARRAY_LITERAL,
  VARRAY_ZERO_RUN,
} from './format.js';
import { big } from './halves.js';
import { type AffineRecords, VarrayView } from './view.js';

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
          `VARRAY ${name}: affine blocks at block ${b} have stride ${formatHex(big(strideHigh, strideLow))}, 2^36 or more`,
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
      throw new Malformed(`VARRAY ${name}: unknown block tag ${formatHex(tag)} at block ${b}`);
    }
  }
  return new VarrayView(r.buf, r.view, field.element, count, blocks, records);
}

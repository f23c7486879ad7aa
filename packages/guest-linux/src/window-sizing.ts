/**
 * How enable_ddw sizes a DDW: the IOMMU page size it picks from the query's page-size mask, and
 * the window's length from the address RAM must be covered to and what the largest block holds.
 */
import type { WindowSizing } from './negotiation-record.js';
import { orderBase2 } from './ram.js';

/** Query page-size bits and the shifts they stand for (LoPAR order; 2M came last, as bit 8). */
const QUERY_PAGE_BITS: readonly [number, number][] = [
  [0x1, 12],
  [0x2, 16],
  [0x4, 24],
  [0x8, 25],
  [0x10, 26],
  [0x20, 27],
  [0x40, 28],
  [0x80, 34],
  [0x100, 21],
];

/** The page shifts a query's page mask names, smallest first. */
export function pageShiftsIn(mask: number): number[] {
  return QUERY_PAGE_BITS.filter(([bit]) => (mask & bit) !== 0)
    .map(([, shift]) => shift)
    .sort((a, b) => a - b);
}

/** 6.1 and 6.12: the largest page size the mask offers; undefined when it names none. */
export function largestPageShift(mask: number): number | undefined {
  let best = 0;
  for (const [bit, shift] of QUERY_PAGE_BITS) if (mask & bit && shift > best) best = shift;
  return best === 0 ? undefined : best;
}

/** 4.x: the first of 16M, 64K and 4K the mask offers; undefined when it offers none of them. */
export function firstPageShift4x(mask: number): number | undefined {
  return mask & 0x4 ? 24 : mask & 0x2 ? 16 : mask & 0x1 ? 12 : undefined;
}

/** log2 of the bytes the largest block covers, the product wrapping at 64 bits as in the kernel. */
export function blockShiftOf(largestBlock: bigint, pageShift: number): number {
  return orderBase2(BigInt.asUintN(64, largestBlock << BigInt(pageShift)));
}

/**
 * 6.1 and 6.12: a window covering RAM up to `maxAddress` (direct) when the largest block is that
 * large, else one as large as the block (dynamic). 6.12 first caps the block at the DMA mask.
 */
export function sizeWindow(
  basis: WindowSizing['basis'],
  maxAddress: bigint,
  largestBlock: bigint,
  pageShift: number,
  maskBits?: number,
): WindowSizing {
  const ramShift = orderBase2(maxAddress);
  const blockShift = blockShiftOf(largestBlock, pageShift);
  const ddwSize = maskBits === undefined ? blockShift : Math.min(blockShift, maskBits);
  const dynamic = ddwSize < ramShift;
  return { basis, maxAddress, ramShift, blockShift, windowShift: dynamic ? ddwSize : ramShift, dynamic };
}

/** RTAS page-size bits as ibm,query-pe-dma-window reports them (LoPAPR), by IOMMU page shift. */
export const RTAS_DDW_PGSIZE: ReadonlyArray<{ shift: number; bit: number; since71?: boolean }> = [
  { shift: 12, bit: 0x01 },
  { shift: 16, bit: 0x02 },
  { shift: 21, bit: 0x100, since71: true },
  { shift: 24, bit: 0x04 },
  { shift: 25, bit: 0x08 },
  { shift: 26, bit: 0x10 },
  { shift: 27, bit: 0x20 },
  { shift: 28, bit: 0x40 },
  { shift: 34, bit: 0x80 },
];

/**
 * Translates a PHB page_size_mask (a bit per page size) into the query's page-size bits. Shifts
 * with no RTAS bit are dropped silently; before QEMU 7.1 the 2M bit did not exist.
 */
export function pageMaskToQueryMask(pageSizeMask: bigint, with2M: boolean): number {
  let mask = 0;
  for (const { shift, bit, since71 } of RTAS_DDW_PGSIZE) {
    if (since71 && !with2M) continue;
    if ((pageSizeMask >> BigInt(shift)) & 1n) mask |= bit;
  }
  return mask;
}

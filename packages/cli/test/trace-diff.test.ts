import { describe, expect, it } from 'vitest';
import { compareTraces } from '../src/index.js';

const put = (ioba: number, ret = 0) =>
  `spapr_iommu_pci_put liobn=0x80000000 ioba=0x${ioba.toString(16)} tce=0x3 ret=${ret}`;

describe('compareTraces', () => {
  it('shows one missing line as one line, not as every line after it', () => {
    const expected = [put(0), put(0x1000), put(0x2000), put(0x3000)];
    const actual = [put(0), put(0x2000), put(0x3000)];
    expect(compareTraces(expected, actual)).toEqual({ compared: 4, differ: 1, diff: [`-2: ${put(0x1000)}`] });
  });

  it('numbers QEMU lines and model lines each in their own sequence', () => {
    const cmp = compareTraces([put(0), put(0x1000)], [put(0), put(0x1000, -4), put(0x2000)]);
    expect(cmp.differ).toBe(3);
    expect(cmp.diff).toEqual([`-2: ${put(0x1000)}`, `+2: ${put(0x1000, -4)}`, `+3: ${put(0x2000)}`]);
  });

  it('ignores host pointers and fds, and timestamps', () => {
    const cmp = compareTraces(
      ['1234@1700000000.000001:spapr_iommu_new_table liobn=0x80000000 table=0x5566 fd=-1'],
      ['spapr_iommu_new_table liobn=0x80000000 table=0x7f0000000000 fd=3'],
    );
    expect(cmp).toEqual({ compared: 1, differ: 0, diff: [] });
  });
});

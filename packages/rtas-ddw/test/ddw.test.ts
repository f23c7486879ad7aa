import { createMachine, H_GET_TCE, H_PUT_TCE, H_SUCCESS, type Machine } from '@ddw/machine';
import { spaprIommu } from '@ddw/spapr-iommu';
import { type PhbDmaProperties, SpaprPciTokens, spaprPci } from '@ddw/spapr-pci';
import { afterEach, describe, expect, it } from 'vitest';
import { QEMU_7_2_DDW, type RtasDdwCompat, rtasDdw } from '../src/index.js';

const BUID_HI = 0x08000000;
const BUID_LO = 0x20000000;
const W0 = 0x80000000;
const W1 = 0x80000001;

/** pseries-2.7 as QEMU 2.7 ran it: nret 5 only, largest block from RAM, no 2M bit, no auto reset. */
const QEMU_2_7_DDW = (maxRamAddress: bigint): RtasDdwCompat => ({
  queryNret6: false,
  pgsize2M: false,
  resetOnLastRemove: false,
  largestBlock: { kind: 'max-ram', maxRamAddress },
});
const QEMU_2_7_PHB: PhbDmaProperties = {
  dma_win_addr: 0n,
  dma_win_size: 0x40000000n,
  dma64_win_addr: 0x800000000000000n,
  pgsz: 0x11000n,
  ddw: true,
};

const machines: Machine[] = [];
afterEach(() => {
  for (const m of machines.splice(0)) m.dispose();
});

async function pseries(
  options: { v27?: boolean; phb?: Record<string, unknown>; ram?: string; maxRam?: bigint } = {},
) {
  const ram = options.ram ?? '4G';
  const m = await createMachine(
    [
      spaprIommu(),
      spaprPci(options.v27 ? { defaults: QEMU_2_7_PHB, compat: { ddwExtensions: [0x2029] } } : {}),
      rtasDdw({ compat: options.v27 ? QEMU_2_7_DDW(options.maxRam ?? 0x100000000n) : QEMU_7_2_DDW }),
    ],
    { ram, phbs: [{ id: 'pci', index: 0, ...options.phb }] },
  );
  machines.push(m);
  const phb = m.get(SpaprPciTokens.Phbs).list[0]!;
  const rtas = (name: string, args: number[], nret: number) =>
    m.guest.rtasCall(name, args, nret).rets.map((r) => r | 0);
  return {
    m,
    phb,
    query: (nret = 5) => rtas('ibm,query-pe-dma-window', [0, BUID_HI, BUID_LO], nret),
    create: (ps: number, ws: number, args: number[] = [0, BUID_HI, BUID_LO, ps, ws], nret = 4) =>
      rtas('ibm,create-pe-dma-window', args, nret),
    remove: (liobn: number, args: number[] = [liobn], nret = 1) =>
      rtas('ibm,remove-pe-dma-window', args, nret),
    reset: () => rtas('ibm,reset-pe-dma-window', [0, BUID_HI, BUID_LO], 1),
  };
}

describe('boot state and query (T1, T3, T4)', () => {
  it('starts with the default window only and reports it in a 5-cell query', async () => {
    const { phb, query } = await pseries({ phb: { pgsz: '0x11000' } });
    expect([
      phb.windows[0]!.enabled,
      phb.windows[0]!.busOffset,
      phb.windows[0]!.pageShift,
      phb.windows[0]!.nbTable,
    ]).toEqual([true, 0n, 12, 0x40000]);
    expect(phb.windows[1]!.enabled).toBe(false);
    expect(query()).toEqual([0, 1, 0x80000000 | 0, 0x03, 0]);
  });

  it('reports 4K|64K|16M|2M as 0x107 on 7.2, and as 0x07 without the 2M bit on 2.7', async () => {
    expect((await pseries()).query()[3]).toBe(0x107);
    expect((await pseries({ v27: true, phb: { pgsz: '0x1211000' } })).query()[3]).toBe(0x07);
  });

  it('answers nret 6 with the 64-bit block count and refuses nret 4 and 7 (T3)', async () => {
    const { m, query } = await pseries();
    m.trace.enable('spapr_iommu_ddw_*');
    const out = m.trace.collect();
    expect(query(6)).toEqual([0, 1, 0x20, 0, 0x107, 0]);
    expect(query(4)).toEqual([-3, 0, 0, 0]);
    expect(query(7)).toEqual([-3, 0, 0, 0, 0, 0, 0]);
    // As in the real v1-basic.trace: the trace keeps the 32-bit figure.
    expect(out.lines).toEqual([
      'spapr_iommu_ddw_query buid=0x800000020000000 addr=0x0, 1 windows available, max window size=0x80000000, mask=0x107',
    ]);
  });

  it('maps every page-size bit, drops shifts it has no bit for (T4)', async () => {
    const all = [12, 16, 21, 24, 25, 26, 27, 28, 34].reduce((acc, s) => acc | (1n << BigInt(s)), 0n);
    expect((await pseries({ phb: { pgsz: `0x${all.toString(16)}` } })).query()[3]).toBe(0x1ff);
    expect((await pseries({ v27: true, phb: { pgsz: `0x${all.toString(16)}` } })).query()[3]).toBe(0xff);
    expect((await pseries({ phb: { pgsz: '0x40000000' } })).query()[3]).toBe(0);
  });

  it('reports the largest block from the maximum RAM address on pseries-2.7 (T2)', async () => {
    const { m, query } = await pseries({ v27: true, maxRam: 0x100000000n });
    m.trace.enable('spapr_iommu_ddw_query');
    const out = m.trace.collect();
    expect(query()).toEqual([0, 1, 0x100000, 0x03, 0]);
    expect(query(6)).toEqual([-3, 0, 0, 0, 0, 0]);
    expect(out.lines).toEqual([
      'spapr_iommu_ddw_query buid=0x800000020000000 addr=0x0, 1 windows available, max window size=0x100000000, mask=0x3',
    ]);
  });
});

describe('create (T5-T9, T13, T21)', () => {
  it('creates a 64K-page 32 GiB window at 2^59 and traces it (T5)', async () => {
    const { m, phb, create, query } = await pseries();
    m.trace.enable('spapr_iommu_*');
    const out = m.trace.collect();
    expect(create(16, 35)).toEqual([0, W1 | 0, 0x08000000, 0]);
    const w1 = phb.windows[1]!;
    expect([w1.nbTable, w1.iommu.size, w1.iommu.addr]).toEqual([0x80000, 1n << 35n, 1n << 59n]);
    expect(query()[1]).toBe(0);
    expect(out.lines[0]).toMatch(/^spapr_iommu_new_table liobn=0x80000001 table=0x[0-9a-f]+ fd=-1$/);
    expect(out.lines.slice(1)).toEqual([
      'spapr_iommu_ddw_create buid=0x800000020000000 addr=0x0, page size=0x10000, requested=0x800000000, start addr=0x800000000000000, liobn=0x80000001',
      'spapr_iommu_ddw_query buid=0x800000020000000 addr=0x0, 0 windows available, max window size=0x80000000, mask=0x107',
    ]);
  });

  it('refuses with HW_ERROR on a full PHB, but checks parameters first (T6, T8)', async () => {
    const { phb, create } = await pseries();
    create(16, 35);
    expect(create(16, 30)).toEqual([-1, 0, 0, 0]);
    expect(create(13, 30)).toEqual([-3, 0, 0, 0]);
    expect(phb.windows[1]!.nbTable).toBe(0x80000);
  });

  it('refuses bad page shifts, window shifts, counts, BUIDs, and ddw off (T7)', async () => {
    const { create } = await pseries({ phb: { pgsz: '0x11000' } });
    expect(create(24, 30)[0]).toBe(-3);
    expect(create(16, 15)[0]).toBe(-3);
    expect(create(16, 30, [0, BUID_HI, BUID_LO, 16])[0]).toBe(-3);
    expect(create(16, 30, [0, BUID_HI, BUID_LO, 16, 30], 3)[0]).toBe(-3);
    expect(create(16, 30, [0, BUID_HI, BUID_LO + 1, 16, 30])[0]).toBe(-3);
    expect(create(70, 80)[0]).toBe(-3);
    const off = await pseries({ phb: { ddw: false } });
    expect(off.create(16, 30)[0]).toBe(-3);
    expect(off.query()[0]).toBe(-3);
  });

  it('fails when nb_table truncates to 0, leaving the table disabled (T9), and recovers later', async () => {
    const { m, phb, create } = await pseries();
    m.trace.enable('spapr_iommu_new_table');
    const out = m.trace.collect();
    expect(create(12, 44)).toEqual([-1, 0, 0, 0]);
    expect(phb.windows[1]!.enabled).toBe(false);
    expect(out.lines).toHaveLength(1); // QEMU allocated (and traced) the empty table anyway
    expect(create(12, 40)[0]).toBe(0);
    expect(phb.windows[1]!.nbTable).toBe(0x10000000);
  });

  it('picks the bus address by the number of active windows (T13, T21)', async () => {
    const a = await pseries();
    expect(a.remove(W0)).toEqual([0]);
    expect(a.create(12, 30)).toEqual([0, W0 | 0, 0, 0]);
    const b = await pseries();
    b.create(16, 35);
    b.remove(W0);
    // Window 0 comes back at 2^59, overlapping window 1: QEMU does not check.
    expect(b.create(16, 30)).toEqual([0, W0 | 0, 0x08000000, 0]);
  });
});

describe('remove and reset (T10-T12)', () => {
  it('removes a window once, and refuses unknown LIOBNs and bad counts (T10)', async () => {
    const { m, create, remove, query } = await pseries();
    create(16, 35);
    m.trace.enable('spapr_iommu_ddw_*');
    const out = m.trace.collect();
    expect(remove(W1)).toEqual([0]);
    expect(query()[1]).toBe(1);
    expect(remove(W1)).toEqual([-3]);
    expect(remove(0x12345678)).toEqual([-3]);
    expect(remove(W0, [W0, 0])).toEqual([-3]);
    expect(out.lines[0]).toBe('spapr_iommu_ddw_remove liobn=0x80000001');
  });

  it('resets to a fresh, zeroed default window (T11)', async () => {
    const { m, phb, create, reset } = await pseries();
    create(16, 35);
    expect(m.guest.hcall(H_PUT_TCE, W0, 0x3000, 0x1003).ret).toBe(H_SUCCESS);
    m.trace.enable('spapr_iommu_ddw_reset');
    const out = m.trace.collect();
    expect(reset()).toEqual([0]);
    expect(phb.windows[1]!.enabled).toBe(false);
    expect(m.guest.hcall(H_GET_TCE, W0, 0x3000)).toEqual({ ret: H_SUCCESS, outputs: [0n] });
    expect(out.lines).toEqual(['spapr_iommu_ddw_reset buid=0x800000020000000 addr=0x0']);
  });

  it('restores the default window when the last window removed was not it (T12, 7.1+)', async () => {
    const { m, phb, create, remove } = await pseries();
    create(16, 35);
    m.trace.enable('spapr_iommu_ddw_*');
    const out = m.trace.collect();
    remove(W0);
    remove(W1);
    expect(phb.windows[0]!.enabled).toBe(true);
    expect(out.lines).toEqual([
      'spapr_iommu_ddw_remove liobn=0x80000000',
      'spapr_iommu_ddw_remove liobn=0x80000001',
      'spapr_iommu_ddw_reset buid=0x800000020000000 addr=0x0',
    ]);
    const reverse = await pseries();
    reverse.create(16, 35);
    reverse.remove(W1);
    reverse.remove(W0);
    expect(reverse.phb.activeWindows()).toBe(0);
  });

  it('never restores the default window on pseries-2.7', async () => {
    const { phb, create, remove } = await pseries({ v27: true });
    create(16, 32);
    remove(W0);
    remove(W1);
    expect(phb.activeWindows()).toBe(0);
  });

  it('restores the default window on a machine reset', async () => {
    const { m, phb, create, remove } = await pseries();
    create(16, 35);
    remove(W0);
    m.reset();
    expect([phb.windows[0]!.enabled, phb.windows[1]!.enabled]).toEqual([true, false]);
  });
});

describe('device tree (T26)', () => {
  it('publishes the DDW tokens, extensions and the default window', async () => {
    const { m } = await pseries();
    const node = '/pci@800000020000000';
    const dt = m.guest.deviceTree;
    expect(dt.getPropU32Cells(node, 'ibm,ddw-applicable')).toEqual([0x2026, 0x2027, 0x2028]);
    expect(dt.getPropU32Cells(node, 'ibm,ddw-extensions')).toEqual([2, 0x2029, 1]);
    expect(dt.getPropU32Cells(node, 'ibm,dma-window')).toEqual([0x80000000, 0, 0, 0, 0x40000000]);
    expect(dt.getPropU32Cells(node, 'ibm,#dma-address-cells')).toEqual([2]);
    expect(dt.getPropU32Cells('/rtas', 'ibm,create-pe-dma-window')).toEqual([0x2027]);
    expect(dt.getPropStrings('/rtas', 'ibm,hypertas-functions')).toContain('hcall-multi-tce');
  });

  it('has <1 0x2029> on pseries-2.7, and no DDW properties and one table with ddw off', async () => {
    expect(
      (await pseries({ v27: true })).m.guest.deviceTree.getPropU32Cells(
        '/pci@800000020000000',
        'ibm,ddw-extensions',
      ),
    ).toEqual([1, 0x2029]);
    const off = await pseries({ phb: { ddw: false } });
    expect(
      off.m.guest.deviceTree.getPropU32Cells('/pci@800000020000000', 'ibm,ddw-applicable'),
    ).toBeUndefined();
    expect(off.phb.windows).toHaveLength(1);
  });
});

import { createMachine, H_PARAMETER, H_SUCCESS, type Machine, MachineTokens } from '@ddw/machine';
import {
  ContainerRegion,
  IOMMUNotifier,
  IOMMUNotifierFlag,
  type IOMMUTLBEntry,
  UINT64_MAX,
} from '@ddw/memory';
import { afterEach, describe, expect, it } from 'vitest';
import {
  H_GET_TCE,
  H_PUT_TCE,
  H_PUT_TCE_INDIRECT,
  H_STUFF_TCE,
  SpaprIommuTokens,
  type SpaprTceTable,
  spaprIommu,
} from '../src/index.js';

const W0 = 0x80000000;
const W1 = 0x80000001;
const WINDOW1_BUS = 0x800000000000000n; // 2^59

const machines: Machine[] = [];
afterEach(() => {
  for (const m of machines.splice(0)) m.dispose();
});

/** A machine whose "PHB" has the default window enabled and, optionally, T5's 64K window at 2^59. */
async function machine(options: { window1?: boolean } = {}) {
  let w0!: SpaprTceTable;
  let w1!: SpaprTceTable;
  const m = await createMachine(
    [
      spaprIommu(),
      {
        name: 'test-phb',
        requires: ['spapr-iommu'],
        register(ctx) {
          const tables = ctx.get(SpaprIommuTokens.Tables);
          w0 = tables.create(W0, 'test-phb');
          w1 = tables.create(W1, 'test-phb');
          w0.enable(12, 0n, 0x40000);
          if (options.window1) w1.enable(16, WINDOW1_BUS, 0x80000);
        },
      },
    ],
    { ram: '4G' },
  );
  machines.push(m);
  const events: string[] = [];
  m.get(MachineTokens.Events).on('guest-error', (e) => events.push(e.message));
  return { m, w0, w1, trace: m.trace, errors: events };
}

function notifications(table: SpaprTceTable): IOMMUTLBEntry[] {
  const seen: IOMMUTLBEntry[] = [];
  table.iommu.registerNotifier(new IOMMUNotifier((e) => seen.push(e), IOMMUNotifierFlag.MAP_UNMAP));
  return seen;
}

describe('H_PUT_TCE / H_GET_TCE (T14, T15)', () => {
  it('masks the ioba to the IOMMU page, stores the raw TCE and notifies once', async () => {
    const { m, w0 } = await machine();
    const seen = notifications(w0);
    m.trace.enable('spapr_iommu_pci_*');
    const out = m.trace.collect();
    expect(m.guest.hcall(H_PUT_TCE, W0, 0x1fff, 0x12345003).ret).toBe(H_SUCCESS);
    expect(w0.entry(1)).toBe(0x12345003n);
    expect(m.guest.hcall(H_GET_TCE, W0, 0x1000)).toEqual({ ret: H_SUCCESS, outputs: [0x12345003n] });
    expect(seen).toHaveLength(1);
    expect(seen[0]).toMatchObject({ iova: 0x1000n, translatedAddr: 0x12345000n, addrMask: 0xfffn, perm: 3 });
    expect(out.lines).toEqual([
      'spapr_iommu_pci_put liobn=0x80000000 ioba=0x1000 tce=0x12345003 ret=0',
      'spapr_iommu_pci_get liobn=0x80000000 ioba=0x1000 ret=0 tce=0x12345003',
    ]);
  });

  it('refuses an ioba past the window, and below a window not at 0 (unsigned wrap)', async () => {
    const { m, errors } = await machine({ window1: true });
    m.trace.enable('spapr_iommu_pci_*');
    const out = m.trace.collect();
    expect(m.guest.hcall(H_PUT_TCE, W0, 0x40000000, 3).ret).toBe(H_PARAMETER);
    expect(m.guest.hcall(H_PUT_TCE, W1, WINDOW1_BUS - 0x10000n, 3).ret).toBe(H_PARAMETER);
    expect(m.guest.hcall(H_GET_TCE, W0, 0x40000000)).toEqual({ ret: H_PARAMETER });
    expect(out.lines).toEqual([
      'spapr_iommu_pci_put liobn=0x80000000 ioba=0x40000000 tce=0x3 ret=-4',
      'spapr_iommu_pci_put liobn=0x80000001 ioba=0x7ffffffffff0000 tce=0x3 ret=-4',
      'spapr_iommu_pci_get liobn=0x80000000 ioba=0x40000000 ret=-4 tce=0x0',
    ]);
    expect(errors[0]).toMatch(/out-of-bounds IOBA 0x40000000/);
  });

  it('notifies a 64-bit window with window-relative iovas (T16) and unmaps with perm NONE (T17)', async () => {
    const { m, w1 } = await machine({ window1: true });
    const seen = notifications(w1);
    expect(m.guest.hcall(H_PUT_TCE, W1, WINDOW1_BUS + 0x12345n, 0xabcd0001n).ret).toBe(H_SUCCESS);
    expect(w1.entry(1)).toBe(0xabcd0001n);
    expect(m.guest.hcall(H_PUT_TCE, W1, WINDOW1_BUS + 0x10000n, 0n).ret).toBe(H_SUCCESS);
    expect(seen.map((e) => [e.iova, e.translatedAddr, e.addrMask, e.perm])).toEqual([
      [0x10000n, 0xabcd0000n, 0xffffn, 1],
      [0x10000n, 0n, 0xffffn, 0],
    ]);
  });
});

describe('LIOBN validation (T20)', () => {
  it('finds nothing for a LIOBN with upper bits set, and refuses every call on a disabled table', async () => {
    const { m } = await machine();
    m.trace.enable('spapr_iommu_*');
    const out = m.trace.collect();
    expect(m.guest.hcall(H_PUT_TCE, 0x180000000n, 0, 3).ret).toBe(H_PARAMETER);
    expect(m.guest.hcall(H_PUT_TCE, 0x12345678, 0, 3).ret).toBe(H_PARAMETER);
    expect(out.lines).toEqual([]); // no table, no trace
    for (const call of [
      [H_PUT_TCE, W1, 0, 3],
      [H_GET_TCE, W1, 0],
      [H_STUFF_TCE, W1, 0, 0, 1],
      [H_PUT_TCE_INDIRECT, W1, 0, 0x10000, 1],
    ] as const) {
      const [opcode, ...args] = call;
      expect(m.guest.hcall(opcode, ...args).ret).toBe(H_PARAMETER);
    }
  });
});

describe('H_PUT_TCE_INDIRECT (T18)', () => {
  function writeList(m: Machine, at: bigint, tces: bigint[]) {
    for (const [i, tce] of tces.entries()) m.memory.store(at + BigInt(8 * i), 8, tce);
  }

  it('refuses more than 512 pages, a misaligned list and npages 0', async () => {
    const { m, w0 } = await machine();
    m.trace.enable('spapr_iommu_pci_indirect');
    const out = m.trace.collect();
    writeList(m, 0x10000n, [0x1003n]);
    expect(m.guest.hcall(H_PUT_TCE_INDIRECT, W0, 0, 0x10000, 513).ret).toBe(H_PARAMETER);
    expect(m.guest.hcall(H_PUT_TCE_INDIRECT, W0, 0, 0x10008, 1).ret).toBe(H_PARAMETER);
    expect(m.guest.hcall(H_PUT_TCE_INDIRECT, W0, 0, 0x10000, 0).ret).toBe(H_PARAMETER);
    expect(w0.entry(0)).toBe(0n);
    // Only npages 0 gets as far as the trace.
    expect(out.lines).toEqual([
      'spapr_iommu_pci_indirect liobn=0x80000000 ioba=0x0 tcelist=0x10000 iobaN=0x0 tceN=0x0 ret=-4',
    ]);
  });

  it('keeps what it wrote before the first bad entry and traces the index before it', async () => {
    const { m, w0 } = await machine();
    m.trace.enable('spapr_iommu_pci_indirect');
    const out = m.trace.collect();
    writeList(m, 0x20000n, [0xa003n, 0xb003n, 0xc003n]);
    const lastPage = (0x40000n - 1n) << 12n;
    expect(m.guest.hcall(H_PUT_TCE_INDIRECT, W0, lastPage + 0x123n, 0x20000, 3).ret).toBe(H_PARAMETER);
    expect(w0.entry(0x3ffff)).toBe(0xa003n);
    expect(out.lines).toEqual([
      'spapr_iommu_pci_indirect liobn=0x80000000 ioba=0x3ffff123 tcelist=0x20000 iobaN=0x0 tceN=0xb003 ret=-4',
    ]);
  });

  it('maps a whole list and traces as the real QEMU 7.2 sample does', async () => {
    // v1-basic.trace: one indirect of 128 16M pages mapping 2 GiB at 2^59.
    const { m } = await machine();
    const tables = m.get(SpaprIommuTokens.Tables);
    const w1 = tables.get(W1)!;
    w1.enable(24, WINDOW1_BUS, 128);
    m.trace.enable('spapr_iommu_pci_indirect');
    const out = m.trace.collect();
    writeList(
      m,
      0x2080000n,
      Array.from({ length: 128 }, (_, i) => (BigInt(i) << 24n) | 3n),
    );
    expect(m.guest.hcall(H_PUT_TCE_INDIRECT, W1, WINDOW1_BUS, 0x2080000, 128).ret).toBe(H_SUCCESS);
    expect(out.lines).toEqual([
      'spapr_iommu_pci_indirect liobn=0x80000001 ioba=0x800000000000000 tcelist=0x2080000 iobaN=0x7f tceN=0x7f000003 ret=0',
    ]);
    expect(w1.entry(0x7f)).toBe(0x7f000003n);
  });
});

describe('H_STUFF_TCE (T19)', () => {
  it('prints the ioba reached after the loop, as QEMU 7.2 does', async () => {
    const { m } = await machine();
    m.trace.enable('spapr_iommu_pci_stuff');
    const out = m.trace.collect();
    expect(m.guest.hcall(H_STUFF_TCE, W0, 0, 0, 512).ret).toBe(H_SUCCESS);
    expect(m.guest.hcall(H_STUFF_TCE, W0, 0x200000, 0, 512).ret).toBe(H_SUCCESS);
    expect(out.lines).toEqual([
      'spapr_iommu_pci_stuff liobn=0x80000000 ioba=0x200000 tcevalue=0x0 npages=512 ret=0',
      'spapr_iommu_pci_stuff liobn=0x80000000 ioba=0x400000 tcevalue=0x0 npages=512 ret=0',
    ]);
  });

  it('refuses npages beyond the table and 0, and keeps a partial update', async () => {
    const { m, w0 } = await machine();
    expect(m.guest.hcall(H_STUFF_TCE, W0, 0, 3, 0x40001).ret).toBe(H_PARAMETER);
    expect(m.guest.hcall(H_STUFF_TCE, W0, 0, 3, 0).ret).toBe(H_PARAMETER);
    m.trace.enable('spapr_iommu_pci_stuff');
    const out = m.trace.collect();
    const twoBeforeEnd = (0x40000n - 2n) << 12n;
    expect(m.guest.hcall(H_STUFF_TCE, W0, twoBeforeEnd, 0x77003, 4).ret).toBe(H_PARAMETER);
    expect([w0.entry(0x3fffe), w0.entry(0x3ffff)]).toEqual([0x77003n, 0x77003n]);
    expect(out.lines).toEqual([
      'spapr_iommu_pci_stuff liobn=0x80000000 ioba=0x40000000 tcevalue=0x77003 npages=4 ret=-4',
    ]);
  });
});

describe('translate and replay (T22, T23)', () => {
  it('translates window-relative addresses, and misses with perm NONE and the all-ones mask', async () => {
    const { m, w0 } = await machine();
    m.guest.hcall(H_PUT_TCE, W0, 0x1000, 0x5000001);
    m.trace.enable('spapr_iommu_xlate');
    const out = m.trace.collect();
    expect(w0.iommu.translate(0x1234n, 0)).toMatchObject({
      iova: 0x1000n,
      translatedAddr: 0x5000000n,
      addrMask: 0xfffn,
      perm: 1,
    });
    expect(w0.iommu.translate(0x40000000n, 0)).toMatchObject({
      iova: 0n,
      translatedAddr: 0n,
      addrMask: UINT64_MAX,
      perm: 0,
    });
    expect(out.lines).toEqual([
      'spapr_iommu_xlate liobn=0x80000000 0x1234 -> 0x5000000 perm=1 mask=0xfff',
      'spapr_iommu_xlate liobn=0x80000000 0x40000000 -> 0x0 perm=0 mask=0xffffffff',
    ]);
  });

  it('replays exactly the mapped entries, MAP only, with relative iovas; not while skipping', async () => {
    const { m } = await machine();
    const w1 = m.get(SpaprIommuTokens.Tables).get(W1)!;
    w1.enable(16, WINDOW1_BUS, 16);
    m.guest.hcall(H_PUT_TCE, W1, WINDOW1_BUS + 3n * 0x10000n, 0x30003);
    m.guest.hcall(H_PUT_TCE, W1, WINDOW1_BUS + 7n * 0x10000n, 0x70001);
    m.guest.hcall(H_PUT_TCE, W1, WINDOW1_BUS + 9n * 0x10000n, 0x90000); // no permission: not a mapping
    const replayed: bigint[] = [];
    const n = new IOMMUNotifier((e) => replayed.push(e.iova), IOMMUNotifierFlag.MAP_UNMAP);
    w1.iommu.replay(n);
    expect(replayed).toEqual([0x30000n, 0x70000n]);
    // The exact walk (used when xlate is traced) gives the same entries.
    replayed.length = 0;
    m.trace.enable('spapr_iommu_xlate');
    w1.iommu.replay(n);
    expect(replayed).toEqual([0x30000n, 0x70000n]);
    w1.skippingReplay = true;
    replayed.length = 0;
    w1.iommu.replay(n);
    expect(replayed).toEqual([]);
  });

  it('routes device DMA through the window into guest RAM, and a DMA to an unmapped IOVA fails', async () => {
    const { m, w1 } = await machine({ window1: true });
    const bus = new ContainerRegion('phb.iommu-root', UINT64_MAX);
    bus.addSubregion(0n, w1.root);
    const { AddressSpace } = await import('@ddw/memory');
    const dma = new AddressSpace(bus, 'phb');
    m.guest.hcall(H_PUT_TCE, W1, WINDOW1_BUS + 0x20000n, 0x1230003);
    expect(dma.write(WINDOW1_BUS + 0x20010n, Uint8Array.of(1, 2, 3))).toBe(0);
    expect(m.memory.load(0x1230010n, 2).value).toBe(0x0102n);
    expect(dma.accessValid(WINDOW1_BUS + 0x30000n, 4n, false)).toBe(false);
  });

  it('tracks need_vfio through the notifier flag hook and refuses dev-iotlb', async () => {
    const { w0 } = await machine();
    const n = new IOMMUNotifier(() => {}, IOMMUNotifierFlag.MAP_UNMAP);
    w0.iommu.registerNotifier(n);
    expect(w0.needVfio).toBe(true);
    w0.iommu.unregisterNotifier(n);
    expect(w0.needVfio).toBe(false);
    expect(() =>
      w0.iommu.registerNotifier(new IOMMUNotifier(() => {}, IOMMUNotifierFlag.DEVIOTLB_UNMAP)),
    ).toThrow(/does not support dev-iotlb/);
  });
});

describe('table lifecycle', () => {
  it('enables into its root at bus_offset, disables out of it, and resets entries silently', async () => {
    const { m, w0, w1 } = await machine();
    expect(w1.enabled).toBe(false);
    w1.enable(16, WINDOW1_BUS, 0x80000);
    expect(w1.iommu.size).toBe(1n << 35n);
    expect(w1.iommu.container).toBe(w1.root);
    expect(w1.iommu.addr).toBe(WINDOW1_BUS);
    m.guest.hcall(H_PUT_TCE, W0, 0, 0x1003);
    const seen = notifications(w0);
    w0.reset();
    expect(w0.entry(0)).toBe(0n);
    expect(seen).toEqual([]);
    w1.disable();
    expect([w1.enabled, w1.iommu.size, w1.iommu.container, w1.pageShift, w1.busOffset]).toEqual([
      false,
      0n,
      null,
      0,
      0n,
    ]);
    expect(() => m.get(SpaprIommuTokens.Tables).create(W0, 'other')).toThrow(/duplicate LIOBN 0x80000000/);
  });

  it('costs only what is written: a 2^31-entry window with two entries holds two runs', async () => {
    const { m } = await machine();
    const w1 = m.get(SpaprIommuTokens.Tables).get(W1)!;
    w1.enable(12, WINDOW1_BUS, 0x80000000);
    m.guest.hcall(H_PUT_TCE, W1, WINDOW1_BUS, 0x1003);
    m.guest.hcall(H_PUT_TCE, W1, WINDOW1_BUS + (0x7fffffffn << 12n), 0x2003);
    expect(w1.entry(0x7fffffff)).toBe(0x2003n);
    expect(w1.storage!.denseChunks).toBe(0);
    expect(w1.storage!.residentBytes).toBeLessThan(200);
    expect(w1.mappedEntries()).toBe(2);
  });
});

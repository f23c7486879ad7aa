import { createMachine, type Machine } from '@ddw/machine';
import { IOMMUNotifier, IOMMUNotifierFlag, type IOMMUTLBEntry } from '@ddw/memory';
import { afterEach, describe, expect, it } from 'vitest';
import {
  H_PUT_TCE,
  H_STUFF_TCE,
  type KvmHostIommuTable,
  SpaprIommuTokens,
  type SpaprTceTable,
  type SpaprTceTables,
  spaprIommu,
} from '../src/index.js';

const W0 = 0x80000000;
const W1 = 0x80000001;
const BUS1 = 1n << 59n;
const UA_BASE = 0x7e00_0000_0000n;

const machines: Machine[] = [];
afterEach(() => {
  for (const m of machines.splice(0)) m.dispose();
});

/** A host table recording what KVM writes into it; `mappable` says which userspace pages it can map. */
function hostTable(startAddr: bigint, pageShift: number, span: bigint, mappable = (_ua: bigint) => true) {
  const entries = new Map<bigint, { ua: bigint; write: boolean }>();
  const tbl: KvmHostIommuTable = {
    startAddr,
    pageShift,
    span,
    canMap: mappable,
    map: (iova, ua, write) => {
      if (!mappable(ua)) return 'H_TOO_HARD';
      entries.set(iova, { ua, write });
      return 0;
    },
    unmap: (iova) => {
      entries.delete(iova);
      return 0;
    },
  };
  return { tbl, entries };
}

async function kvmMachine(spaprTceVfio: boolean) {
  let tables!: SpaprTceTables;
  let w0!: SpaprTceTable;
  let w1!: SpaprTceTable;
  const m = await createMachine(
    [
      spaprIommu({ accel: 'kvm' }),
      {
        name: 'test-phb',
        requires: ['spapr-iommu'],
        register(ctx) {
          tables = ctx.get(SpaprIommuTokens.Tables);
          // The host model (vfio-common in a pseries machine) describes KVM: RAM at UA_BASE.
          tables.kvmHost = { spaprTceVfio, gpaToUa: (gpa) => (gpa < 1n << 32n ? UA_BASE + gpa : undefined) };
          w0 = tables.create(W0, 'test-phb');
          w1 = tables.create(W1, 'test-phb');
          w0.enable(12, 0n, 0x40000);
          w1.enable(16, BUS1, 0x80000);
        },
      },
    ],
    { ram: '4G' },
  );
  machines.push(m);
  return { m, tables, w0, w1 };
}

function follow(table: SpaprTceTable): IOMMUTLBEntry[] {
  const seen: IOMMUTLBEntry[] = [];
  table.iommu.registerNotifier(new IOMMUNotifier((e) => seen.push(e), IOMMUNotifierFlag.MAP_UNMAP));
  return seen;
}

describe('KVM_DEV_VFIO_GROUP_SET_SPAPR_TCE (kvm_spapr_tce_attach_iommu_group)', () => {
  it('attaches the first host table that starts with the window, has pages no larger and covers it', async () => {
    const { tables, w1 } = await kvmMachine(true);
    const wrongStart = hostTable(0n, 12, 1n << 30n).tbl;
    const bigPages = hostTable(BUS1, 24, 1n << 40n).tbl;
    const small = hostTable(BUS1, 16, 1n << 34n).tbl;
    const fits = hostTable(BUS1, 12, 1n << 35n).tbl;
    expect(tables.kvmSetSpaprTce(w1.fd, [wrongStart, bigPages, small])).toBe(-22);
    expect(tables.kvmSetSpaprTce(w1.fd, [wrongStart, fits])).toBe(0);
    expect(tables.kvmSetSpaprTce(w1.fd, [fits])).toBe(0);
    expect(w1.kvmIommuTables).toEqual([{ tbl: fits, refs: 2 }]);
    expect(tables.kvmSetSpaprTce(12345, [fits])).toBe(-9);
    expect(tables.kvmSetSpaprTce(-1, [fits])).toBe(-9);
    tables.kvmReleaseGroup([fits]);
    expect(w1.kvmIommuTables).toEqual([{ tbl: fits, refs: 1 }]);
    tables.kvmReleaseGroup([fits]);
    expect(w1.kvmIommuTables).toEqual([]);
  });

  it('drops every attachment when the table is freed', async () => {
    const { tables, w0 } = await kvmMachine(true);
    expect(tables.kvmSetSpaprTce(w0.fd, [hostTable(0n, 12, 1n << 30n).tbl])).toBe(0);
    w0.disable();
    expect(w0.kvmIommuTables).toEqual([]);
  });
});

describe('need_vfio with and without KVM_CAP_SPAPR_TCE_VFIO', () => {
  it('keeps the table in the kernel with the capability, moves it without', async () => {
    const withCap = await kvmMachine(true);
    const fd = withCap.w0.fd;
    follow(withCap.w0);
    expect(withCap.w0.fd).toBe(fd);
    expect(withCap.w0.kvmAccelerated).toBe(true);
    expect(withCap.w0.iommu.spaprTceFd()).toBe(fd);
    const without = await kvmMachine(false);
    follow(without.w0);
    expect(without.w0.fd).toBe(-1);
    expect(without.w0.kvmAccelerated).toBe(false);
    expect(without.w0.iommu.spaprTceFd()).toBeUndefined();
  });

  it('handles TCE hypercalls in the kernel: host tables written, notifiers silent, entries stored', async () => {
    const { m, tables, w1 } = await kvmMachine(true);
    const seen = follow(w1);
    const host = hostTable(BUS1, 12, 1n << 35n);
    expect(tables.kvmSetSpaprTce(w1.fd, [host.tbl])).toBe(0);
    // A 64K guest TCE is 16 host entries of 4K.
    expect(m.guest.hcall(H_PUT_TCE, W1, BUS1 + 0x10000n, 0x50000n | 2n).ret).toBe(0n);
    expect(seen).toEqual([]);
    expect(w1.entry(1)).toBe(0x50002n);
    expect(host.entries.size).toBe(16);
    expect(host.entries.get(BUS1 + 0x1f000n)).toEqual({ ua: UA_BASE + 0x5f000n, write: true });
    expect(m.guest.hcall(H_STUFF_TCE, W1, BUS1 + 0x10000n, 0n, 1n).ret).toBe(0n);
    expect(host.entries.size).toBe(0);
    expect(w1.entry(1)).toBe(0n);
  });

  it('passes to QEMU what the host table cannot map (not pre-registered): H_TOO_HARD', async () => {
    const { m, tables, w0 } = await kvmMachine(true);
    const seen = follow(w0);
    const host = hostTable(0n, 12, 1n << 30n, (ua) => ua < UA_BASE + 0x100000n);
    expect(tables.kvmSetSpaprTce(w0.fd, [host.tbl])).toBe(0);
    m.trace.enable('spapr_iommu_pci_put');
    const out = m.trace.collect();
    expect(m.guest.hcall(H_PUT_TCE, W0, 0x1000n, 0x2000n | 3n).ret).toBe(0n);
    expect(out.lines).toEqual([]);
    expect(seen).toEqual([]);
    // Outside what the host can map: KVM gives up, QEMU handles it (traced, notified).
    expect(m.guest.hcall(H_PUT_TCE, W0, 0x2000n, 0x200000n | 3n).ret).toBe(0n);
    expect(out.lines).toEqual(['spapr_iommu_pci_put liobn=0x80000000 ioba=0x2000 tce=0x200003 ret=0']);
    expect(seen).toHaveLength(1);
    expect(w0.entry(2)).toBe(0x200003n);
  });
});

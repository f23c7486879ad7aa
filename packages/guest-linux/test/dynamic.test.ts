import { MemTxResult } from '@ddw/memory';
import { describe, expect, it } from 'vitest';
import {
  bootGuest,
  count,
  DDW_BASE,
  device,
  expectRead,
  expectSame,
  machine,
  pattern,
  readGuest,
  W0,
  W1,
} from './helpers.js';

/**
 * A dynamic window needs the query's largest block (in TCEs) times the page size to be smaller
 * than the RAM the window must cover.
 *
 * QEMU 7.2 answers the 6-output query with 2^37 TCEs, so even with 4K pages only the guest goes
 * dynamic just when RAM (with hotplug space) reaches above 2^49 bytes, and then it asks for a
 * window of 2^37 entries, which QEMU's 32-bit entry count truncates to 0: the create fails. So
 * no QEMU 7.2 machine gives a working dynamic window (the last test shows the attempt).
 *
 * pseries-2.7 (the original DDW patch set) reports (uint32)(max RAM address >> 12) instead: at
 * 16 TiB + 1 GiB the count wraps to 0x40000, which with 64K pages covers only 2^34 bytes.
 */
const DYNAMIC = '-M pseries-2.7 -m 1G,maxmem=16385G,slots=1 -device e1000e -device e1000e';

describe('dynamic window (linux-6.1)', () => {
  it('creates a window of the largest block and clears its table with stuffs of 512', async () => {
    const rig = await machine(DYNAMIC);
    const { guest, states } = bootGuest(rig);
    const ddw = rig.lines.filter((l) => l.startsWith('spapr_iommu_ddw_'));
    expect(ddw).toEqual([
      'spapr_iommu_ddw_query buid=0x800000020000000 addr=0x0, 1 windows available, max window size=0x100040000000, mask=0x3',
      'spapr_iommu_ddw_create buid=0x800000020000000 addr=0x0, page size=0x10000, requested=0x400000000, start addr=0x800000000000000, liobn=0x80000001',
    ]);
    const [decision] = guest.decisions();
    expect(decision!.outcome).toBe('dynamic');
    expect(decision!.rtas[0]!.rets).toEqual([0, 1, 0x40000, 0x3, 0]);
    expect(decision!.reasons).toContain(
      'largest block 0x40000 x 2^16 covers 2^34 bytes, less than the 2^45 RAM needs: dynamic window of 2^34',
    );
    // 2^34 / 2^16 = 2^18 entries: 512 stuffs of 512 on the new LIOBN, and no populate.
    const onW1 = rig.lines.filter((l) => l.startsWith('spapr_iommu_pci_') && l.includes('liobn=0x80000001'));
    expect(onW1).toHaveLength(512);
    expect(onW1.every((l) => l.startsWith('spapr_iommu_pci_stuff') && l.includes('npages=512 ret=0'))).toBe(
      true,
    );
    expect(count(rig.lines, 'spapr_iommu_pci_indirect')).toBe(0);
    expect(states[0]).toMatchObject({
      mode: 'dynamic',
      window: { liobn: W1, busOffset: DDW_BASE, pageShift: 16, windowShift: 34 },
      dmaOffset: 0n,
    });
    expect(guest.getProp(rig.phb.nodePath, 'linux,dma64-ddr-window-info')).toHaveLength(24);
    expect(guest.getProp(rig.phb.nodePath, 'linux,direct64-ddr-window-info')).toBeUndefined();
  });

  it('switches only the function that created it; the PE’s other functions stay on the default window', async () => {
    const rig = await machine(DYNAMIC);
    const { guest, states } = bootGuest(rig);
    expect(states.map((s) => [s.mode, s.window.liobn])).toEqual([
      ['dynamic', W1],
      ['default', W0],
    ]);
    expect(count(rig.lines, 'spapr_iommu_ddw_query')).toBe(1);
    expect(guest.decisions()[0]!.reasons.at(-1)).toMatch(/belongs to another function/);
  });

  it('maps per request in the window: indirect for several pages, H_PUT_TCE for one, stuffs to unmap', async () => {
    const rig = await machine(DYNAMIC);
    const { guest } = bootGuest(rig);
    const fn = guest.functions[0]!;
    const nic = device(rig);
    rig.lines.length = 0;

    const tx = pattern(0x20000, 6);
    rig.m.memory.write(0x123450n, tx);
    const txBus = guest.dmaMap(fn, 0x123450n, tx.length, 'to-device')!;
    expect(txBus).toBe(DDW_BASE + 0x3450n);
    const rxBus = guest.dmaMap(fn, 0x3f000000n, 0x10000, 'from-device')!;
    expect(rxBus).toBe(DDW_BASE + 0x30000n);
    expect(rig.lines).toEqual([
      'spapr_iommu_pci_indirect liobn=0x80000001 ioba=0x800000000000000 tcelist=0x2070000 iobaN=0x2 tceN=0x140001 ret=0',
      'spapr_iommu_pci_put liobn=0x80000001 ioba=0x800000000030000 tce=0x3f000003 ret=0',
    ]);

    expectRead(nic.dmaRead(txBus, tx.length), tx);
    expect(nic.dmaWrite(txBus, new Uint8Array(8))).not.toBe(MemTxResult.OK);
    const rx = pattern(0x10000, 7);
    expect(nic.dmaWrite(rxBus, rx)).toBe(MemTxResult.OK);
    expectSame(readGuest(rig.m, 0x3f000000n, rx.length), rx);

    rig.lines.length = 0;
    guest.dmaUnmap(fn, txBus, tx.length);
    guest.dmaUnmap(fn, rxBus, 0x10000);
    expect(rig.lines).toEqual([
      'spapr_iommu_pci_stuff liobn=0x80000001 ioba=0x800000000030000 tcevalue=0x0 npages=3 ret=0',
      'spapr_iommu_pci_stuff liobn=0x80000001 ioba=0x800000000040000 tcevalue=0x0 npages=1 ret=0',
    ]);
    expect(nic.dmaRead(txBus, 16).result).not.toBe(MemTxResult.OK);
  });

  it('runs out of window space like a real IOMMU table', async () => {
    const rig = await machine(DYNAMIC);
    const { guest } = bootGuest(rig);
    const fn = guest.functions[0]!;
    // 2^34 bytes of window: sixteen mappings of all 1 GiB of RAM fill it; one more page does not fit.
    const buses: bigint[] = [];
    for (let i = 0; i < 16; i++) buses.push(guest.dmaMap(fn, 0n, 1 << 30, 'bidirectional')!);
    expect(buses.map((b) => (b - DDW_BASE) >> 30n)).toEqual(Array.from({ length: 16 }, (_, i) => BigInt(i)));
    expect(guest.dmaMap(fn, 0n, 0x1000, 'bidirectional')).toBeUndefined();
    expect(guest.log.at(-1)).toMatch(/iommu_alloc failed, LIOBN 0x80000001, 1 pages/);
    guest.dmaUnmap(fn, buses[5]!, 1 << 30);
    expect(guest.dmaMap(fn, 0x1234n, 0x1000, 'bidirectional')).toBe(buses[5]! + 0x1234n);
  });

  it('on QEMU 7.2 the guest does go dynamic with 4K pages above 2^49 of RAM, and the create fails', async () => {
    const rig = await machine(
      '-M pseries -m 1G,maxmem=1024T,slots=1 -global spapr-pci-host-bridge.pgsz=0x1000 -device e1000e',
    );
    const { guest, states } = bootGuest(rig);
    const [decision] = guest.decisions();
    expect(decision!.reasons).toContain(
      'largest block 0x2000000000 x 2^12 covers 2^49 bytes, less than the 2^50 RAM needs: dynamic window of 2^49',
    );
    expect(decision!.rtas[1]).toMatchObject({
      call: 'ibm,create-pe-dma-window',
      rets: [0xffffffff, 0, 0, 0],
    });
    expect(decision!.outcome).toBe('failed');
    expect(states[0]!.mode).toBe('default');
  });
});

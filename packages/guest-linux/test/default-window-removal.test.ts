import { MemTxResult } from '@ddw/memory';
import { describe, expect, it } from 'vitest';
import { LinuxGuest } from '../src/index.js';
import {
  BUID_HI,
  BUID_LO,
  bootGuest,
  DDW_BASE,
  device,
  machine,
  normalize,
  pattern,
  type Rig,
  W0,
  W1,
} from './helpers.js';

/**
 * QEMU has no property that limits a PHB to one window, so the only way a guest sees
 * windows_available == 0 is when both windows are in use before it asks: here RTAS itself
 * (through the guest port, as firmware or an earlier kernel would) creates the second window.
 */
async function bothWindowsTaken(qemuArgs = '-M pseries -m 2G -device e1000e'): Promise<Rig> {
  const rig = await machine(qemuArgs);
  const taken = rig.m.guest.rtasCall('ibm,create-pe-dma-window', [0, BUID_HI, BUID_LO, 16, 32], 4);
  expect(taken.rets).toEqual([0, W1, 0x08000000, 0]);
  expect(rig.phb.activeWindows()).toBe(2);
  rig.lines.length = 0;
  return rig;
}

describe('windows_available == 0 (linux-6.1)', () => {
  it('clears and removes the default window, queries again and creates in the freed slot', async () => {
    const rig = await bothWindowsTaken();
    const { guest, states } = bootGuest(rig);
    const afterBootClear = rig.lines.filter((l) => !l.includes('npages=512'));
    // QEMU's create uses dma_win_addr only when no window is active. The window taken above is
    // still active, so the new window (the default window's freed LIOBN) lands at dma64_win_addr.
    expect(afterBootClear.map(normalize)).toEqual([
      'spapr_iommu_ddw_query buid=0x800000020000000 addr=0x0, 0 windows available, max window size=0x80000000, mask=0x107',
      // The clear reads ibm,dma-window through the 24-byte window-info layout: 0 entries here,
      // which QEMU refuses with H_PARAMETER; the guest ignores it.
      'spapr_iommu_pci_stuff liobn=0x80000000 ioba=0x0 tcevalue=0x0 npages=0 ret=-4',
      'spapr_iommu_ddw_remove liobn=0x80000000',
      'spapr_iommu_ddw_query buid=0x800000020000000 addr=0x0, 1 windows available, max window size=0x80000000, mask=0x107',
      'spapr_iommu_new_table liobn=0x80000000 table=PTR fd=-1',
      'spapr_iommu_ddw_create buid=0x800000020000000 addr=0x0, page size=0x1000000, requested=0x80000000, start addr=0x800000000000000, liobn=0x80000000',
      'spapr_iommu_pci_indirect liobn=0x80000000 ioba=0x800000000000000 tcelist=LIST iobaN=0x7f tceN=0x7f000003 ret=0',
    ]);
    const [decision] = guest.decisions();
    expect(decision!.outcome).toBe('direct');
    expect(decision!.defaultWindowRemoved).toBe(true);
    expect(decision!.rtas.map((r) => [r.call, r.args])).toEqual([
      ['ibm,query-pe-dma-windows', [0, BUID_HI, BUID_LO]],
      ['ibm,remove-pe-dma-window', [W0]],
      ['ibm,query-pe-dma-windows', [0, BUID_HI, BUID_LO]],
      ['ibm,create-pe-dma-window', [0, BUID_HI, BUID_LO, 24, 31]],
    ]);
    expect(decision!.window).toEqual({ liobn: W0, busOffset: DDW_BASE, pageShift: 24, windowShift: 31 });
    expect(states[0]).toMatchObject({ mode: 'direct', dmaOffset: DDW_BASE, window: { liobn: W0 } });
    // The guest's own tree: no default window any more, the DDW's property instead.
    expect(guest.getProp(rig.phb.nodePath, 'ibm,dma-window')).toBeUndefined();
    expect(guest.getProp(rig.phb.nodePath, 'linux,direct64-ddr-window-info')).toHaveLength(24);
    expect(guest.log).toContain(`e1000e 0000:00:00.0: Removed default DMA window for ${rig.phb.nodePath}`);
    expect(rig.phb.windows.map((w) => [w.liobn, w.enabled, w.busOffset])).toEqual([
      [W0, true, DDW_BASE],
      [W1, true, DDW_BASE],
    ]);
  });

  it('keeps functions with small masks off the removed default window', async () => {
    const rig = await bothWindowsTaken('-M pseries -m 2G -device e1000e -device dma-engine');
    const guest = bootGuest(rig, { dmaMaskBits: (fn) => (fn.driver === 'e1000e' ? 64 : 32) }).guest;
    const small = guest.functions[1]!;
    expect(guest.state(small)).toMatchObject({ mode: 'default', maskBits: 32 });
    expect(guest.dmaMap(small, 0x100000n, 0x1000, 'to-device')).toBeUndefined();
    expect(guest.log.at(-1)).toMatch(/ddw-dma 0000:00:01.0: dma_map .* no DMA window left/);
  });

  it('refuses to remove a default window that has live mappings', async () => {
    const rig = await bothWindowsTaken();
    const guest = new LinuxGuest(rig.m.guest);
    guest.boot();
    const fn = guest.functions[0]!;
    // Before its driver sets the 64-bit mask, the device maps a buffer on the default window.
    expect(guest.dmaMap(fn, 0x200000n, 0x1000, 'to-device')).toBe(0x1000n);
    rig.lines.length = 0;
    const state = guest.setDmaMask(fn, 64);
    expect(state.mode).toBe('default');
    const [decision] = guest.decisions();
    expect(decision!.outcome).toBe('failed');
    expect(decision!.defaultWindowRemoved).toBe(false);
    expect(decision!.rtas.map((r) => r.call)).toEqual(['ibm,query-pe-dma-windows']);
    expect(decision!.reasons).toContain('no window available and the default window has live mappings');
    expect(rig.lines.filter((l) => !l.startsWith('spapr_iommu_ddw_query'))).toEqual([]);
  });

  it('the device does DMA through the new window once the overlapping one is gone', async () => {
    const rig = await bothWindowsTaken();
    const { guest } = bootGuest(rig);
    const fn = guest.functions[0]!;
    const data = pattern(0x3000, 9);
    rig.m.memory.write(0x4321000n, data);
    const bus = guest.dmaMap(fn, 0x4321000n, data.length, 'to-device')!;
    expect(bus).toBe(DDW_BASE + 0x4321000n);
    // Both windows now start at 2^59. As in QEMU, the PHB's later window (LIOBN 0x80000001, the
    // one taken by RTAS, with no TCEs) is the one a device's DMA reaches there.
    expect(device(rig).dmaRead(bus, data.length).result).not.toBe(MemTxResult.OK);
    expect(rig.m.guest.rtasCall('ibm,remove-pe-dma-window', [W1], 1).status).toBe(0);
    const read = device(rig).dmaRead(bus, data.length);
    expect(read.result).toBe(MemTxResult.OK);
    expect(read.data).toEqual(data);
  });
});

describe('windows_available == 0 (linux-4.x)', () => {
  it('gives up: no free dynamic windows, the default window stays', async () => {
    const rig = await bothWindowsTaken();
    const { guest, states } = bootGuest(rig, { generation: 'linux-4.x' });
    expect(rig.lines.filter((l) => !l.includes('npages=262144'))).toEqual([
      'spapr_iommu_ddw_query buid=0x800000020000000 addr=0x0, 0 windows available, max window size=0x80000000, mask=0x107',
    ]);
    expect(guest.decisions()[0]).toMatchObject({ outcome: 'failed', defaultWindowRemoved: false });
    expect(states[0]).toMatchObject({ mode: 'default', window: { liobn: W0, busOffset: 0n } });
    expect(guest.getProp(rig.phb.nodePath, 'ibm,dma-window')).toBeDefined();
  });
});

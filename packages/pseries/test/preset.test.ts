import type { Machine } from '@ddw/machine';
import { SpaprPciTokens } from '@ddw/spapr-pci';
import { afterEach, describe, expect, it } from 'vitest';
import { buildPseries, PseriesTokens } from '../src/index.js';

const BUID = (index: number) => [0x08000000, 0x20000000 + index];

const machines: Machine[] = [];
afterEach(() => {
  for (const m of machines.splice(0)) m.dispose();
});

async function pseries(args: string): Promise<Machine> {
  const m = await buildPseries(args);
  machines.push(m);
  return m;
}

function rtas(m: Machine, name: string, args: number[], nret: number): number[] {
  return m.guest.rtasCall(name, args, nret).rets.map((r) => r | 0);
}

describe('pseries-7.2 (the default)', () => {
  it('boots with the default window, QEMU 7.2 page sizes and the 6-output query', async () => {
    const m = await pseries('-M pseries -m 4G');
    const phb = m.get(SpaprPciTokens.Phbs).list[0]!;
    expect(phb.windows.map((t) => t.enabled)).toEqual([true, false]);
    expect(rtas(m, 'ibm,query-pe-dma-window', [0, ...BUID(0)], 5)).toEqual([0, 1, 0x80000000 | 0, 0x107, 0]);
    expect(rtas(m, 'ibm,query-pe-dma-window', [0, ...BUID(0)], 6)).toEqual([0, 1, 0x20, 0, 0x107, 0]);
    expect(m.guest.deviceTree.getPropU32Cells(phb.nodePath, 'ibm,ddw-extensions')).toEqual([2, 0x2029, 1]);
    expect(m.mtree()).toContain('ppc_spapr.ram');
  });

  it('restores the default window after the last DDW is removed', async () => {
    const m = await pseries('-m 4G');
    expect(rtas(m, 'ibm,create-pe-dma-window', [0, ...BUID(0), 16, 32], 4)[0]).toBe(0);
    expect(rtas(m, 'ibm,remove-pe-dma-window', [0x80000000], 1)).toEqual([0]);
    expect(rtas(m, 'ibm,remove-pe-dma-window', [0x80000001], 1)).toEqual([0]);
    const phb = m.get(SpaprPciTokens.Phbs).list[0]!;
    expect(phb.windows.map((t) => t.enabled)).toEqual([true, false]);
  });

  it('puts hotplug memory where QEMU does, visible in the memory tree', async () => {
    const m = await pseries('-m 2G,maxmem=8G,slots=4');
    const layout = m.get(PseriesTokens.MemoryLayout);
    expect(layout.deviceMemory).toEqual({ base: 0x80000000n, size: 0x180000000n });
    expect(m.mtree()).toMatch(/0000000080000000-00000001ffffffff \(prio 0, i\/o\): device-memory/);
  });

  it('builds several PHBs with their own properties and buses', async () => {
    const m = await pseries(
      '-m 2G -device spapr-pci-host-bridge,index=1,id=phb1,dma64_win_addr=0x10000000000000 -device spapr-pci-host-bridge,index=2,ddw=off -device e1000e,bus=phb1.0 -device dma-engine,bus=pci.1',
    );
    const phbs = m.get(SpaprPciTokens.Phbs).list;
    expect(phbs.map((p) => [p.index, p.name, p.windowsSupported, p.devices.length])).toEqual([
      [0, 'pci.0', 2, 0],
      [1, 'phb1.0', 2, 1],
      [2, 'pci.1', 1, 1],
    ]);
    expect(rtas(m, 'ibm,create-pe-dma-window', [0, ...BUID(1), 16, 32], 4)).toEqual([
      0,
      0x80000101 | 0,
      0x100000,
      0,
    ]);
    // ddw=off: the PHB offers no DDW at all (T26), and query and create are refused.
    expect(m.guest.deviceTree.getProp(phbs[2]!.nodePath, 'ibm,ddw-applicable')).toBeUndefined();
    expect(rtas(m, 'ibm,query-pe-dma-window', [0, ...BUID(2)], 5)[0]).toBe(-3);
  });

  it('refuses a device the machine has no model for, naming the option as given', async () => {
    await expect(buildPseries('-device virtio-gpu,id=gpu0')).rejects.toThrow(
      /^QEMU options: -device virtio-gpu,id=gpu0: unknown device "virtio-gpu"/,
    );
  });
});

describe('pseries-2.7 (the original patchset)', () => {
  it('offers 4K|64K, answers only the 5-output query, and sizes the largest block from RAM (T2)', async () => {
    const m = await pseries('-M pseries-2.7 -m 4G');
    expect(rtas(m, 'ibm,query-pe-dma-window', [0, ...BUID(0)], 5)).toEqual([0, 1, 0x100000, 0x03, 0]);
    expect(rtas(m, 'ibm,query-pe-dma-window', [0, ...BUID(0)], 6)[0]).toBe(-3);
    const phb = m.get(SpaprPciTokens.Phbs).list[0]!;
    expect(m.guest.deviceTree.getPropU32Cells(phb.nodePath, 'ibm,ddw-extensions')).toEqual([1, 0x2029]);
  });

  it('counts hotplug space in the largest block: (hotplug base + hotplug size) >> 12', async () => {
    const m = await pseries('-M pseries-2.7 -m 2G,maxmem=8G,slots=2');
    m.trace.enable('spapr_iommu_ddw_query');
    const out = m.trace.collect();
    expect(rtas(m, 'ibm,query-pe-dma-window', [0, ...BUID(0)], 5)[2]).toBe(0x200000);
    expect(out.lines[0]).toContain('max window size=0x200000000');
    // 2.5G of RAM: hotplug starts at 3G, so the highest address is 3G + 5.5G.
    const m2 = await pseries('-M pseries-2.7 -m 2560M,maxmem=8G,slots=2');
    expect(rtas(m2, 'ibm,query-pe-dma-window', [0, ...BUID(0)], 5)[2]).toBe(0x220000);
  });

  it('never restores the default window by itself, and has no 2M page size', async () => {
    const m = await pseries('-M pseries-2.7 -m 4G -global spapr-pci-host-bridge.pgsz=0x1211000');
    expect(rtas(m, 'ibm,query-pe-dma-window', [0, ...BUID(0)], 5)[3]).toBe(0x07);
    expect(rtas(m, 'ibm,create-pe-dma-window', [0, ...BUID(0), 21, 32], 4)[0]).toBe(0);
    expect(rtas(m, 'ibm,remove-pe-dma-window', [0x80000000], 1)).toEqual([0]);
    expect(rtas(m, 'ibm,remove-pe-dma-window', [0x80000001], 1)).toEqual([0]);
    const phb = m.get(SpaprPciTokens.Phbs).list[0]!;
    expect(phb.windows.map((t) => t.enabled)).toEqual([false, false]);
  });
});

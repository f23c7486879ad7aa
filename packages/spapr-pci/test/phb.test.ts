import { createMachine, H_PUT_TCE, type Machine } from '@ddw/machine';
import { MemTxResult } from '@ddw/memory';
import { spaprIommu } from '@ddw/spapr-iommu';
import { afterEach, describe, expect, it } from 'vitest';
import { SpaprPciTokens, spaprLiobnFor, spaprPci } from './helpers.js';

const machines: Machine[] = [];
afterEach(() => {
  for (const m of machines.splice(0)) m.dispose();
});

async function build(description: Record<string, unknown>) {
  const m = await createMachine([spaprIommu(), spaprPci()], { ram: '2G', ...description });
  machines.push(m);
  return { m, phbs: m.get(SpaprPciTokens.Phbs) };
}

describe('the PHB', () => {
  it("lays out its DMA address space as QEMU: both windows' roots at 0, the MSI region at 0x40000000000", async () => {
    const { m } = await build({});
    const tree = m.mtree();
    expect(tree).toContain(
      [
        'address-space: pci@800000020000000',
        '  0000000000000000-fffffffffffffffe (prio 0, i/o): pci@800000020000000.iommu-root',
        // Same address and priority: QEMU lists the newest subregion first.
        '    0000000000000000-fffffffffffffffe (prio 0, i/o): tce-root-80000001',
        '    0000000000000000-fffffffffffffffe (prio 0, i/o): tce-root-80000000',
        '      0000000000000000-000000003fffffff (prio 0, i/o): tce-iommu-80000000',
        '    0000040000000000-0000040000000fff (prio 0, i/o): msi',
      ].join('\n'),
    );
  });

  it('gives each PHB its BUID and LIOBNs by index', async () => {
    const { phbs } = await build({
      phbs: [
        { id: 'pci', index: 0 },
        { id: 'phb1', index: 1 },
      ],
    });
    expect(phbs.list.map((p) => [p.buid, p.name, p.windows.map((w) => w.liobn)])).toEqual([
      [0x800000020000000n, 'pci.0', [0x80000000, 0x80000001]],
      [0x800000020000001n, 'phb1.0', [0x80000100, 0x80000101]],
    ]);
    expect(spaprLiobnFor(3, 1)).toBe(0x80000301);
  });

  it('refuses duplicate PHB indexes and ids, naming the field', async () => {
    await expect(
      build({
        phbs: [
          { id: 'a', index: 0 },
          { id: 'b', index: 0 },
        ],
      }),
    ).rejects.toThrow(/phbs\[1\]\.index/);
    await expect(
      build({
        phbs: [
          { id: 'a', index: 0 },
          { id: 'a', index: 1 },
        ],
      }),
    ).rejects.toThrow(/phbs\[1\]\.id/);
  });
});

describe('PCI devices on a PHB', () => {
  it('assigns slots in order and computes RTAS config addresses', async () => {
    const { phbs } = await build({
      devices: [
        { id: 'nic0', driver: 'e1000e' },
        { id: 'nic1', driver: 'e1000e' },
        { id: 'dma', driver: 'dma-engine', slot: 5, fn: 1 },
      ],
    });
    expect(phbs.list[0]!.devices.map((d) => [d.id, d.configAddress])).toEqual([
      ['nic0', 0x0],
      ['nic1', 0x800],
      ['dma', 0x2900],
    ]);
  });

  it("DMAs through the guest's TCEs into RAM, and a DMA to an unmapped IOVA touches nothing", async () => {
    const { m, phbs } = await build({ devices: [{ id: 'dma', driver: 'dma-engine' }] });
    const dev = phbs.list[0]!.devices[0]!;
    m.guest.hcall(H_PUT_TCE, 0x80000000, 0x5000, 0x7003n); // bus 0x5000 -> RAM 0x7000, RW
    m.guest.hcall(H_PUT_TCE, 0x80000000, 0x6000, 0x9001n); // bus 0x6000 -> RAM 0x9000, device may only read
    expect(dev.dmaWrite(0x5ff0n, Uint8Array.of(0xaa, 0xbb))).toBe(MemTxResult.OK);
    expect(m.memory.load(0x7ff0n, 2).value).toBe(0xaabbn);
    // Crossing into the read-only page: refused whole, nothing written.
    expect(dev.dmaWrite(0x5ffen, new Uint8Array(4).fill(0xcc))).toBe(MemTxResult.DECODE_ERROR);
    expect(m.memory.load(0x7ffen, 2).value).toBe(0n);
    m.memory.store(0x9000n, 4, 0x11223344n);
    expect(dev.dmaRead(0x6000n, 4)).toEqual({
      result: MemTxResult.OK,
      data: Uint8Array.of(0x11, 0x22, 0x33, 0x44),
    });
    expect(dev.dmaRead(0x8000n, 4).result).toBe(MemTxResult.DECODE_ERROR);
  });

  it('refuses unknown drivers, unknown buses and taken slots, naming the field', async () => {
    await expect(build({ devices: [{ id: 'x', driver: 'virtio-net-pci' }] })).rejects.toThrow(
      /devices\[0\]\.driver.*virtio-net-pci/s,
    );
    await expect(build({ devices: [{ id: 'x', driver: 'e1000e', bus: 'pci.7' }] })).rejects.toThrow(
      /devices\[0\]\.bus/,
    );
    await expect(
      build({
        devices: [
          { id: 'x', driver: 'e1000e', slot: 2 },
          { id: 'y', driver: 'e1000e', slot: 2 },
        ],
      }),
    ).rejects.toThrow(/slot 2\.0 of pci\.0 is taken by x/);
  });
});

import { definePlugin, type Machine, MachineBuilder } from '@ddw/machine';
import {
  AddressSpace,
  ContainerRegion,
  IOMMUAccessFlags,
  type IOMMUTLBEntry,
  IommuMemoryRegion,
  iommuMiss,
  MmioRegion,
} from '@ddw/memory';

/**
 * A bus whose device DMA goes through a one-level page-table IOMMU: the smallest machine that shows
 * every kind of region. Stands in for the pseries machine until its plugins exist.
 */
class DemoIommu extends IommuMemoryRegion {
  readonly pages = new Map<bigint, bigint>();
  constructor(
    size: bigint,
    readonly target: AddressSpace,
  ) {
    super('demo-bus.iommu', size);
  }
  override translate(addr: bigint): IOMMUTLBEntry {
    const iova = addr & ~0xfffn;
    const entry = this.pages.get(addr >> 12n);
    if (entry === undefined) return iommuMiss(iova);
    return {
      targetAs: this.target,
      iova,
      translatedAddr: entry & ~0xfffn,
      addrMask: 0xfffn,
      perm: Number(entry & 3n) as IOMMUAccessFlags,
    };
  }
}

export const demoBus = definePlugin((options: { windowSize?: bigint } = {}) => ({
  name: 'demo-bus',
  register(ctx) {
    const machine = ctx.machine;
    const root = new ContainerRegion('demo-bus.iommu-root', 1n << 64n);
    const iommu = new DemoIommu(options.windowSize ?? 0x4000_0000n, machine.memory);
    root.addSubregion(0n, iommu);
    root.addSubregion(
      0x400_0000_0000n,
      new MmioRegion('demo-bus.msi', 0x10000n, { write: () => undefined, endianness: 'little' }),
    );
    machine.addAddressSpace(new AddressSpace(root, 'demo-bus'));
    machine.systemMemory.addSubregion(
      0x2000_0000_0000n,
      new MmioRegion('demo-bus.regs', 0x1000n, { read: () => 0n, write: () => undefined }),
    );
    // One mapped page, so the tree is not only empty windows.
    iommu.pages.set(0n, 0x1000n | BigInt(IOMMUAccessFlags.RW));
  },
}));

/** The demo machine: 2 GiB of RAM and the demo bus. */
export function buildDemoMachine(ram = '2G'): Promise<Machine> {
  return new MachineBuilder({ ramRegionName: 'ppc_spapr.ram' }).describe({ ram }).use(demoBus({})).build();
}

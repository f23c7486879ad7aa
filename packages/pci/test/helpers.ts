import { ConfigError } from '@ddw/machine';
import { AddressSpace, ContainerRegion, RamRegion, UINT64_MAX } from '@ddw/memory';
import type { PciBus, PciDevice } from '../src/index.js';

/** A bus without an IOMMU: bus addresses are RAM offsets; a taken address is a ConfigError. */
export class RamBus implements PciBus {
  readonly devices: PciDevice[] = [];
  readonly ram = new RamRegion('ram', 0x10000n);
  readonly dmaAddressSpace: AddressSpace;

  constructor(readonly name = 'test.0') {
    const root = new ContainerRegion('bus-root', UINT64_MAX);
    root.addSubregion(0n, this.ram);
    this.dmaAddressSpace = new AddressSpace(root, name);
  }

  attach(device: PciDevice): void {
    if (this.devices.some((d) => d.devfn === device.devfn)) {
      throw new ConfigError(`devices.${device.id}.addr`, `slot ${device.address.slot} is taken`);
    }
    this.devices.push(device);
  }

  detach(device: PciDevice): void {
    const at = this.devices.indexOf(device);
    if (at >= 0) this.devices.splice(at, 1);
  }
}

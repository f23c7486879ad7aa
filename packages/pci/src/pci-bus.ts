import type { AddressSpace } from '@ddw/memory';
import type { PciDevice } from './pci-device.js';

/** Where a function sits on its bus: the slot (device number, 0..31) and the function (0..7). */
export interface PciAddress {
  slot: number;
  fn: number;
}

/**
 * What a PCI function is attached to, and all a device model needs from it: the bus's name, the
 * address space its bus-master DMA goes through, and the functions on it, each at its
 * PciAddress. A host bridge's root bus implements it (@ddw/spapr-pci's SpaprPhb); a device holds
 * its bus only through this interface, so a device model works on any bus.
 */
export interface PciBus {
  /** The name devices give as `bus=` (`pci.0`). */
  readonly name: string;
  /**
   * Where the functions' DMA goes (QEMU's pci_device_iommu_address_space): what an IOMMU behind
   * the bus translates, and what VFIO listens on.
   */
  readonly dmaAddressSpace: AddressSpace;
  /** The functions on the bus, in the order they were attached. */
  readonly devices: readonly PciDevice[];
  /** Attaches `device` at its PciAddress (`device.address`); a ConfigError when that address is taken. */
  attach(device: PciDevice): void;
  /** Takes `device` off the bus, freeing its PciAddress; a device not on the bus is ignored. */
  detach(device: PciDevice): void;
}

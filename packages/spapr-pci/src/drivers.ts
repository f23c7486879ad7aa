import { type PciAddress, PciDevice, type PciIds } from './pci-device.js';
import type { SpaprPhb } from './phb.js';

/** What a `-device DRIVER` needs to become a PCI function on a PHB. */
export interface PciDriver {
  readonly name: string;
  /** Whether the guest's driver for it sets a 64-bit DMA mask (and so asks for a DDW). */
  readonly dma64: boolean;
  create(spec: {
    id: string;
    phb: SpaprPhb;
    address: PciAddress;
    props: Readonly<Record<string, string>>;
  }): PciDevice;
}

/** PCI device models by driver name; plugins add theirs (vfio-pci comes from vfio-common). */
export class PciDriverRegistry {
  readonly #drivers = new Map<string, PciDriver>();

  register(driver: PciDriver): void {
    if (this.#drivers.has(driver.name)) throw new Error(`PCI driver "${driver.name}" is registered twice`);
    this.#drivers.set(driver.name, driver);
  }

  get(name: string): PciDriver | undefined {
    return this.#drivers.get(name);
  }

  names(): string[] {
    return [...this.#drivers.keys()].sort();
  }
}

/**
 * An emulated device that does bus-master DMA with a 64-bit mask: ddw's own `dma-engine`, and
 * `e1000e`, which QEMU users name in their command lines (only its DMA behaviour is modelled).
 */
export function emulatedDmaDriver(name: string, ids: PciIds = DMA_ENGINE_IDS): PciDriver {
  return {
    name,
    dma64: true,
    create: ({ id, phb, address }) => new PciDevice(id, name, phb, address, true, ids),
  };
}

/** ddw's DMA engine answers with QEMU's `edu` teaching device's IDs. */
export const DMA_ENGINE_IDS: PciIds = { vendorId: 0x1234, deviceId: 0x11e8, classCode: 0x00ff00 };
/** Intel 82574L, what QEMU's e1000e presents. */
export const E1000E_IDS: PciIds = { vendorId: 0x8086, deviceId: 0x10d3, classCode: 0x020000 };

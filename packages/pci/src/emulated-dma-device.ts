import { hexDigits } from '@ddw/memory';
import { PciDevice, type PciIds } from './pci-device.js';
import type { PciDriver, PciDriverProperty } from './pci-driver.js';

/** The properties of QEMU's e1000e that its users type (hw/net/e1000e.c, with the NIC ones). */
export const E1000E_PROPERTIES: readonly PciDriverProperty[] = [
  {
    name: 'netdev',
    kind: 'netdev',
    description: 'ID of the network backend (not modelled: ddw moves no packets)',
  },
  { name: 'mac', kind: 'macaddr', description: 'MAC address of the NIC' },
  { name: 'bootindex', kind: 'int32', description: 'boot order of the device' },
  { name: 'disable_vnet_hdr', kind: 'uint8', description: 'do not use the virtio-net header of the backend' },
  { name: 'subsys_ven', kind: 'uint16', description: 'PCI subsystem vendor ID' },
  { name: 'subsys', kind: 'uint16', description: 'PCI subsystem device ID' },
  { name: 'init-vet', kind: 'bool', description: 'initialise the VLAN ethertype registers' },
  { name: 'migrate-timadj', kind: 'bool', description: 'migrate the time adjustment register' },
];

/**
 * An emulated device that does bus-master DMA with a 64-bit mask: ddw's own `dma-engine`, and
 * `e1000e`, which QEMU users name in their command lines (only its DMA behaviour is modelled).
 */
export function emulatedDmaDriver(
  name: string,
  ids: PciIds = DMA_ENGINE_IDS,
  about: { description?: string; properties?: readonly PciDriverProperty[] } = {},
): PciDriver {
  return {
    name,
    description:
      about.description ??
      `emulated PCI device doing 64-bit DMA (vendor ${hexDigits(ids.vendorId, 4)}, device ${hexDigits(ids.deviceId, 4)})`,
    properties: about.properties ?? [],
    dma64: true,
    create: ({ id, bus, address }) => new PciDevice(id, name, bus, address, true, ids),
  };
}

/** ddw's DMA engine answers with QEMU's `edu` teaching device's IDs. */
export const DMA_ENGINE_IDS: PciIds = { vendorId: 0x1234, deviceId: 0x11e8, classCode: 0x00ff00 };
/** Intel 82574L, what QEMU's e1000e presents. */
export const E1000E_IDS: PciIds = { vendorId: 0x8086, deviceId: 0x10d3, classCode: 0x020000 };

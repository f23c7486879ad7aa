import type { PciAddress, PciBus } from './pci-bus.js';
import type { PciDevice } from './pci-device.js';

/**
 * What a property's value must look like, in QEMU's type names (what `-device DRIVER,help` shows):
 * `bool` takes on/off (and QEMU's yes/no, true/false, y/n), the integer kinds a decimal or 0x
 * number in range, `macaddr` six hex pairs with colons; `str`, `netdev` and the rest any text.
 */
export type PciPropertyKind =
  | 'bool'
  | 'uint8'
  | 'uint16'
  | 'uint32'
  | 'int32'
  | 'uint64'
  | 'size'
  | 'str'
  | 'macaddr'
  | 'netdev'
  | 'OnOffAuto'
  | 'link';

/** One property a driver accepts (`-device DRIVER,NAME=VALUE`, or a device's `props.NAME`). */
export interface PciDriverProperty {
  readonly name: string;
  readonly kind: PciPropertyKind;
  /** One line, for `-device DRIVER,help`. */
  readonly description: string;
}

/** A driver as `-device help` and `-device DRIVER,help` list it. */
export interface PciDriverInfo {
  readonly name: string;
  readonly description: string;
  /** Every property the driver accepts, its own and the PCI ones every device has, by name. */
  readonly properties: readonly PciDriverProperty[];
}

/** What a `-device DRIVER` needs to become a PCI function on a bus. */
export interface PciDriver {
  readonly name: string;
  /** One line for `-device help`. */
  readonly description?: string;
  /**
   * The driver's own properties. Every driver also accepts PCI_DEVICE_PROPERTIES, the ones QEMU's
   * PCI base class gives every device; any other property is refused before create() runs.
   */
  readonly properties?: readonly PciDriverProperty[];
  /** Whether the guest's driver for it sets a 64-bit DMA mask (and so asks for a DDW). */
  readonly dma64: boolean;
  create(spec: {
    id: string;
    /** The bus the function goes on; whoever creates it attaches it there once created. */
    bus: PciBus;
    address: PciAddress;
    props: Readonly<Record<string, string>>;
    /** Where the device is in the description, e.g. `devices[2]`, for errors about its props. */
    field?: string;
  }): PciDevice;
}

/**
 * The properties QEMU's PCI device class gives every PCI device (hw/pci/pci.c), less `addr`, which
 * a description gives as the device's slot and fn. ddw models none of them beyond accepting them:
 * they change nothing about DMA.
 */
export const PCI_DEVICE_PROPERTIES: readonly PciDriverProperty[] = [
  { name: 'romfile', kind: 'str', description: 'file to load as the option ROM' },
  { name: 'romsize', kind: 'uint32', description: 'size of the option ROM BAR' },
  // QEMU 9.1 made rombar signed (-1, the default, means "as the device says").
  { name: 'rombar', kind: 'int32', description: 'whether to expose the option ROM BAR (0 hides it)' },
  { name: 'multifunction', kind: 'bool', description: 'set the multi-function bit of the header' },
  {
    name: 'failover_pair_id',
    kind: 'str',
    description: 'id of the virtio-net device this one fails over with',
  },
  { name: 'acpi-index', kind: 'uint32', description: 'ACPI index of the function (unused on pseries)' },
  { name: 'x-pcie-lnksta-dllla', kind: 'bool', description: 'PCIe link status: data link layer link active' },
  { name: 'x-pcie-extcap-init', kind: 'bool', description: 'initialise the PCIe extended capability list' },
  { name: 'x-pcie-err-unc-mask', kind: 'bool', description: 'PCIe AER uncorrectable error mask register' },
  { name: 'x-pcie-ari-nextfn-1', kind: 'bool', description: 'PCIe ARI next function number 1' },
  { name: 'x-max-bounce-buffer-size', kind: 'size', description: 'DMA bounce buffer limit' },
];

/**
 * Keys a description gives as fields of the device, never as props (and so no driver may declare
 * a property of that name); each with the hint that says where it goes.
 */
export const DEVICE_FIELDS: Readonly<Record<string, string>> = {
  id: 'give it as the device\'s "id" field',
  driver: 'give it as the device\'s "driver" field',
  bus: 'give it as the device\'s "bus" field',
  addr: 'give the device\'s "slot" and "fn" fields instead',
};

/** Every property `driver` accepts: its own, then the PCI ones it does not redefine. */
export function driverProperties(driver: PciDriver): PciDriverProperty[] {
  const own = driver.properties ?? [];
  const names = new Set(own.map((p) => p.name));
  return [...own, ...PCI_DEVICE_PROPERTIES.filter((p) => !names.has(p.name))].sort((a, b) =>
    a.name.localeCompare(b.name),
  );
}

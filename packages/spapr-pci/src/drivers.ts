import { ConfigError, InvalidArgumentError } from '@ddw/machine';
import { type PciAddress, PciDevice, type PciIds } from './pci-device.js';
import type { SpaprPhb } from './phb.js';

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

/** What a `-device DRIVER` needs to become a PCI function on a PHB. */
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
    phb: SpaprPhb;
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

/** Keys a description gives as fields of the device, never as props. */
const DEVICE_FIELDS: Readonly<Record<string, string>> = {
  id: 'give it as the device\'s "id" field',
  driver: 'give it as the device\'s "driver" field',
  bus: 'give it as the device\'s "bus" field',
  addr: 'give the device\'s "slot" and "fn" fields instead',
};

const BOOL_VALUES = new Set(['on', 'off', 'yes', 'no', 'true', 'false', 'y', 'n']);
const INTEGER_RANGES: Partial<Record<PciPropertyKind, readonly [bigint, bigint]>> = {
  uint8: [0n, 0xffn],
  uint16: [0n, 0xffffn],
  uint32: [0n, 0xffffffffn],
  int32: [-(1n << 31n), (1n << 31n) - 1n],
  uint64: [0n, (1n << 64n) - 1n],
};
const INTEGER = /^-?(?:0x[0-9a-f]+|\d+)$/i;
const SIZE = /^\d+(?:\.\d+)?[kmgtpe]?b?$/i;
const MAC_ADDRESS = /^[0-9a-f]{2}(?::[0-9a-f]{2}){5}$/i;

/** Why `value` does not fit `kind` (QEMU's wording), or undefined when it does. */
function valueProblem(driver: string, prop: PciDriverProperty, value: string): string | undefined {
  const kind = prop.kind;
  if (kind === 'bool') {
    return BOOL_VALUES.has(value) ? undefined : `Parameter '${prop.name}' expects 'on' or 'off'`;
  }
  const range = INTEGER_RANGES[kind];
  if (range) {
    const ok = INTEGER.test(value) && inRange(value, range);
    return ok ? undefined : `Parameter '${prop.name}' expects ${kind}`;
  }
  if (kind === 'size') return SIZE.test(value) ? undefined : `Parameter '${prop.name}' expects a size value`;
  if (kind === 'OnOffAuto') {
    return ['on', 'off', 'auto'].includes(value)
      ? undefined
      : `Parameter '${prop.name}' does not accept value '${value}'`;
  }
  if (kind === 'macaddr') {
    return MAC_ADDRESS.test(value)
      ? undefined
      : `Property '${driver}.${prop.name}' doesn't take value '${value}'`;
  }
  return undefined;
}

function inRange(text: string, [min, max]: readonly [bigint, bigint]): boolean {
  const negative = text.startsWith('-');
  const magnitude = BigInt(negative ? text.slice(1) : text);
  const value = negative ? -magnitude : magnitude;
  return value >= min && value <= max;
}

const HINT_BY_KIND: Partial<Record<PciPropertyKind, string>> = {
  bool: 'write on or off',
  uint8: 'write a number from 0 to 255',
  uint16: 'write a number from 0 to 65535',
  uint32: 'write a number from 0 to 4294967295',
  int32: 'write a signed 32-bit number',
  uint64: 'write a number from 0 to 2^64-1',
  size: 'write a size such as 64K',
  OnOffAuto: 'write on, off or auto',
  macaddr: 'write six hex pairs, e.g. 52:54:00:12:34:56',
};

/** Every property `driver` accepts: its own, then the PCI ones it does not redefine. */
export function driverProperties(driver: PciDriver): PciDriverProperty[] {
  const own = driver.properties ?? [];
  const names = new Set(own.map((p) => p.name));
  return [...own, ...PCI_DEVICE_PROPERTIES.filter((p) => !names.has(p.name))].sort((a, b) =>
    a.name.localeCompare(b.name),
  );
}

/**
 * Throws a ConfigError unless every entry of `props` is a property `driver` accepts with a value
 * of its kind. `field` is where the device is in the description (`devices[2]`); the error names
 * `devices[2].props.NAME` and, for an unknown property, says what QEMU says: `Property
 * 'DRIVER.NAME' not found`.
 */
export function checkDeviceProps(
  driver: PciDriver,
  props: Readonly<Record<string, string>>,
  field: string,
): void {
  const accepted = driverProperties(driver);
  const byName = new Map(accepted.map((p) => [p.name, p]));
  for (const [name, value] of Object.entries(props)) {
    const where = `${field}.props.${name}`;
    const asField = DEVICE_FIELDS[name];
    if (asField !== undefined) {
      throw new ConfigError(where, `"${name}" is not a property of ${driver.name}`, asField);
    }
    const prop = byName.get(name);
    if (!prop) {
      throw new ConfigError(
        where,
        `Property '${driver.name}.${name}' not found`,
        `${driver.name} properties: ${accepted.map((p) => p.name).join(', ')}`,
      );
    }
    const problem = valueProblem(driver.name, prop, value);
    if (problem !== undefined) {
      throw new ConfigError(where, problem, HINT_BY_KIND[prop.kind] ?? `give a ${prop.kind} value`);
    }
  }
}

/** PCI device models by driver name; plugins add theirs (vfio-pci comes from vfio-common). */
export class PciDriverRegistry {
  readonly #drivers = new Map<string, PciDriver>();

  register(driver: PciDriver): void {
    checkDriver(driver);
    if (this.#drivers.has(driver.name)) {
      throw new InvalidArgumentError(
        'PciDriverRegistry.register(driver)',
        `PCI driver "${driver.name}" is registered twice; each driver name must be unique in a machine`,
      );
    }
    this.#drivers.set(driver.name, driver);
  }

  get(name: string): PciDriver | undefined {
    return this.#drivers.get(name);
  }

  names(): string[] {
    return [...this.#drivers.keys()].sort();
  }

  /** Every driver with its one-line description and properties, by name (`-device help`). */
  list(): PciDriverInfo[] {
    return this.names().map((name) => {
      const driver = this.#drivers.get(name)!;
      return { name, description: driver.description ?? '', properties: driverProperties(driver) };
    });
  }
}

const DRIVER_NAME = /^[A-Za-z][A-Za-z0-9._-]*$/;

function checkDriver(driver: PciDriver): void {
  const where = 'PciDriverRegistry.register(driver)';
  if (driver === null || typeof driver !== 'object') {
    throw new InvalidArgumentError(where, 'driver must be an object { name, dma64, create(spec) }');
  }
  if (typeof driver.name !== 'string' || !DRIVER_NAME.test(driver.name)) {
    throw new InvalidArgumentError(
      where,
      `driver name ${JSON.stringify(driver.name)} is not a QEMU type name (a letter, then letters, digits, '.', '_' or '-')`,
    );
  }
  if (typeof driver.create !== 'function') {
    throw new InvalidArgumentError(where, `driver "${driver.name}" has no create(spec) function`);
  }
  if (driver.properties !== undefined) {
    if (!Array.isArray(driver.properties)) {
      throw new InvalidArgumentError(where, `driver "${driver.name}" has properties that are not a list`);
    }
    const seen = new Set<string>();
    for (const p of driver.properties as readonly PciDriverProperty[]) {
      if (p === null || typeof p !== 'object' || typeof p.name !== 'string' || p.name === '') {
        throw new InvalidArgumentError(where, `driver "${driver.name}" declares a property without a name`);
      }
      if (seen.has(p.name) || DEVICE_FIELDS[p.name] !== undefined) {
        throw new InvalidArgumentError(
          where,
          `driver "${driver.name}" declares property "${p.name}" ${seen.has(p.name) ? 'twice' : 'which is a device field'}`,
        );
      }
      seen.add(p.name);
    }
  }
}

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
      `emulated PCI device doing 64-bit DMA (vendor ${hex4(ids.vendorId)}, device ${hex4(ids.deviceId)})`,
    properties: about.properties ?? [],
    dma64: true,
    create: ({ id, phb, address }) => new PciDevice(id, name, phb, address, true, ids),
  };
}

function hex4(value: number): string {
  return value.toString(16).padStart(4, '0');
}

/** ddw's DMA engine answers with QEMU's `edu` teaching device's IDs. */
export const DMA_ENGINE_IDS: PciIds = { vendorId: 0x1234, deviceId: 0x11e8, classCode: 0x00ff00 };
/** Intel 82574L, what QEMU's e1000e presents. */
export const E1000E_IDS: PciIds = { vendorId: 0x8086, deviceId: 0x10d3, classCode: 0x020000 };

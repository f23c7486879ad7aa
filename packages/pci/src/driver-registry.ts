import { InvalidArgumentError } from '@ddw/machine';
import {
  DEVICE_FIELDS,
  driverProperties,
  type PciDriver,
  type PciDriverInfo,
  type PciDriverProperty,
} from './pci-driver.js';

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

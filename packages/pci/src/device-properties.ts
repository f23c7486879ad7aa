import { ConfigError } from '@ddw/machine';
import {
  DEVICE_FIELDS,
  driverProperties,
  type PciDriver,
  type PciDriverProperty,
  type PciPropertyKind,
} from './pci-driver.js';

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

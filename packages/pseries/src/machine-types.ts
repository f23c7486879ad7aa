import { ConfigError, isPlainObject } from '@ddw/machine';
import {
  DEFAULT_QEMU_VERSION,
  machineTypesOf,
  type PseriesMachineType,
  QEMU_VERSION_PRESETS,
  QEMU_VERSIONS,
  type QemuVersion,
} from './versions.js';

export type { PseriesMachineType } from './versions.js';

/** The machine types of the default QEMU version, newest first. */
export const PSERIES_MACHINE_TYPES: readonly PseriesMachineType[] = machineTypesOf(DEFAULT_QEMU_VERSION);

/**
 * ddw's `pseries-2.7` always meant QEMU 2.7's machine (the original DDW patchset). A machine that
 * names no QEMU version and asks for it keeps getting that; with `qemu.version` "7.2" it is QEMU
 * 7.2's compat machine of the name, as in QEMU.
 */
const IMPLICIT_VERSION_OF_TYPE: Readonly<Record<string, QemuVersion>> = { 'pseries-2.7': '2.7' };

/** The QEMU version a machine of type `name` is when the description says `version` (or nothing). */
export function effectiveQemuVersion(name: string, version?: QemuVersion): QemuVersion {
  return version ?? IMPLICIT_VERSION_OF_TYPE[name] ?? DEFAULT_QEMU_VERSION;
}

/**
 * The machine type a `-M` name selects under QEMU `version` (default: DEFAULT_QEMU_VERSION, or 2.7
 * for `pseries-2.7`); `pseries` is the version's newest type. A type the version does not offer is
 * refused with the list of those it does.
 */
export function machineType(name: string, field = '-M', version?: QemuVersion): PseriesMachineType {
  const v = effectiveQemuVersion(name, version);
  const preset = QEMU_VERSION_PRESETS[v];
  const canonical = name === 'pseries' ? preset.alias : name;
  const types = machineTypesOf(v);
  const found = types.find((t) => t.name === canonical);
  if (found) return found;
  const known = ['pseries', ...types.map((t) => t.name)].join(', ');
  throw new ConfigError(field, `unknown machine type "${name}" for QEMU ${v}`, `use one of: ${known}`, {
    subject: field.startsWith('-') ? 'QEMU options' : 'machine description',
  });
}

/** A QEMU version given as text, or a ConfigError naming `field` and the versions ddw knows. */
export function qemuVersion(text: unknown, field = 'qemu.version'): QemuVersion {
  if (typeof text === 'string' && (QEMU_VERSIONS as readonly string[]).includes(text))
    return text as QemuVersion;
  throw new ConfigError(
    field,
    `${typeof text === 'string' ? `"${text}"` : (JSON.stringify(text) ?? String(text))} is not a QEMU version ddw models`,
    `use one of: ${QEMU_VERSIONS.join(', ')}`,
  );
}

/**
 * The QEMU version a description names in its `qemu` section (`{"qemu": {"version": "10.0"}}`),
 * or undefined: then the machine type decides (see effectiveQemuVersion).
 */
export function qemuVersionOf(description: Record<string, unknown>): QemuVersion | undefined {
  const section = description.qemu;
  if (section === undefined) return undefined;
  if (!isPlainObject(section)) {
    throw new ConfigError('qemu', 'is not an object', 'write e.g. { "version": "10.0" }');
  }
  return section.version === undefined ? undefined : qemuVersion(section.version);
}

export {
  DEFAULT_QEMU_VERSION,
  deprecationWarning,
  MACHINE_VER_DEPRECATION_MSG,
  machineTypesOf,
  QEMU_VERSION_PRESETS,
  QEMU_VERSIONS,
  type QemuVersion,
  renderMachineTypeTable,
} from './versions.js';

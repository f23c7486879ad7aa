import { hostSectionOverlay } from '@ddw/host-linux';
import {
  ConfigError,
  type ConfigIssue,
  DeviceError,
  formatHex,
  isPlainObject,
  mergeDescription,
  PluginError,
} from '@ddw/machine';
import { machineType, qemuVersionOf } from './machine-types.js';
import { parseQemuArgs, parseQemuBool, type QemuArgs, resolvePhbConfig } from './qemu-args.js';

/**
 * The one configuration channel. A machine is built from one description; everything that
 * configures it is a layer merged into that description here, in this order:
 *
 *   preset < description file < command line (QEMU options, then --host, --guest)
 *
 * The preset is ddw's showcase machine, unless the QEMU options describe hardware (-M, -m,
 * -device, -global): then they describe the whole machine, as a qemu-system-ppc64 command line
 * does, over QEMU's own defaults. Every layer keeps its source so that an error names the field as
 * the user wrote it, not as it ended up in the merged description.
 */
export interface DescriptionLayer {
  /** How errors name this layer: a file name, "QEMU options", "--host", "ddw's default machine". */
  readonly source: string;
  /** A description fragment in JSON form (64-bit values as hex strings). */
  readonly data: Record<string, unknown>;
  /** How a message names entry i of an array this layer adds (`devices` -> the `-device` option). */
  readonly entryNames?: Readonly<Record<string, readonly (string | undefined)[]>>;
  /** How a message names a top-level field this layer sets (`ram` -> `-m`). */
  readonly fieldNames?: Readonly<Record<string, string>>;
  /** A preset layer's name. */
  readonly preset?: PresetName;
  /** A file's `"preset"` key: the preset it was written over (`--print-description` writes it). */
  readonly requestedPreset?: PresetName;
}

/**
 * The presets: `default` is ddw's showcase machine, `qemu` what QEMU builds before any -device.
 * A description file may name the one it was written over (`"preset": "qemu"`), which is how the
 * output of `--print-description` builds the same machine again.
 */
export type PresetName = 'default' | 'qemu';
export const PRESET_NAMES: readonly PresetName[] = ['default', 'qemu'];

/** A merged description and what it was merged from. */
export interface ResolvedDescription {
  /** The description a machine is built from, in JSON form: what `--print-description` shows. */
  readonly description: Record<string, unknown>;
  readonly layers: readonly DescriptionLayer[];
  /** The preset the layers were merged over. */
  readonly preset: PresetName;
  /**
   * The error a user should see for `error` thrown while building from this description: a
   * configuration error is re-addressed to the layer and field the user wrote; anything else is
   * returned unchanged.
   */
  explain(error: unknown): unknown;
}

/**
 * The machine `ddw run` builds when the command line describes no hardware: QEMU 10.0's pseries
 * with 4 GiB (up to 8 GiB), one PHB holding an emulated DMA device and a passthrough device on a
 * simulated SPAPR TCE v2 host, and the default guest (Linux 6.12).
 */
export const DEFAULT_PSERIES_MACHINE = {
  type: 'pseries',
  ram: '4G',
  // With maxmem, ibm,lrdr-capacity is its end, and Linux 6.12 sizes a direct window from it;
  // without, 6.12 gets no DDW at all (the report says why).
  maxmem: '8G',
  pseries: { accel: 'tcg', slots: 2 },
  phbs: [{ id: 'pci', index: 0 }],
  devices: [
    { id: 'dma0', driver: 'dma-engine', bus: 'pci.0', slot: 1 },
    { id: 'hostdev0', driver: 'vfio-pci', bus: 'pci.0', slot: 2, props: { host: '0000:01:00.0' } },
  ],
  host: { type: 'v2', page: '64K', pgsizes: '0x1011000', windows: 2, levels: 5 },
} as const;

/** What QEMU builds before any -device: the machine type's defaults and the default PHB. */
export const QEMU_DEFAULT_MACHINE = {
  type: 'pseries',
  pseries: { accel: 'tcg' },
  phbs: [{ id: 'pci', index: 0 }],
  devices: [],
} as const;

export const DEFAULT_MACHINE_SOURCE = "ddw's default machine";
export const QEMU_DEFAULTS_SOURCE = "QEMU's defaults";
export const QEMU_OPTIONS_SOURCE = 'QEMU options';

/**
 * The preset layer: QEMU's defaults when the QEMU options describe hardware (they describe the
 * whole machine), else the one a description file asked for, else ddw's default machine.
 */
export function presetLayer(qemu: QemuArgs | undefined, requested?: PresetName): DescriptionLayer {
  return qemu?.hardware || requested === 'qemu'
    ? {
        source: QEMU_DEFAULTS_SOURCE,
        data: structuredClone(QEMU_DEFAULT_MACHINE) as Record<string, unknown>,
        preset: 'qemu',
      }
    : {
        source: DEFAULT_MACHINE_SOURCE,
        data: structuredClone(DEFAULT_PSERIES_MACHINE) as unknown as Record<string, unknown>,
        preset: 'default',
      };
}

/** A description file's layer (already parsed JSON); `name` is how errors name the file. */
export function fileLayer(name: string, data: unknown): DescriptionLayer {
  if (!isPlainObject(data)) {
    const what = Array.isArray(data) ? 'an array' : data === null ? 'null' : `a ${typeof data}`;
    throw new ConfigError(
      '(document)',
      `is ${what}, not a JSON object`,
      'write the description as { "ram": "2G", ... }',
      {
        subject: name,
      },
    );
  }
  const { preset, ...rest } = data;
  if (preset === undefined) return { source: name, data };
  if (!(PRESET_NAMES as readonly unknown[]).includes(preset)) {
    throw new ConfigError(
      'preset',
      `${JSON.stringify(preset)} is not a preset`,
      `use ${PRESET_NAMES.join(' or ')}`,
      {
        subject: name,
      },
    );
  }
  return { source: name, data: rest, requestedPreset: preset as PresetName };
}

/** What QEMU options set explicitly, as a description layer (defaults stay with the preset). */
export function qemuLayer(qemu: QemuArgs | string | readonly string[]): DescriptionLayer {
  const args =
    typeof qemu === 'object' && !Array.isArray(qemu) ? (qemu as QemuArgs) : parseQemuArgs(qemu as string);
  const e = args.explicit;
  const data: Record<string, unknown> = {};
  const fieldNames: Record<string, string> = {};
  if (e.type !== undefined) {
    data.type = e.type;
    fieldNames.type = '-M';
  }
  if (e.ram !== undefined) {
    data.ram = formatHex(e.ram);
    fieldNames.ram = '-m';
  }
  if (e.maxmem !== undefined) {
    data.maxmem = formatHex(e.maxmem);
    fieldNames.maxmem = '-m maxmem';
  }
  const capHtm = args.machineProps['cap-htm'];
  if (e.slots !== undefined || e.accel !== undefined || capHtm !== undefined) {
    data.pseries = {
      ...(e.slots !== undefined ? { slots: e.slots } : {}),
      ...(e.accel !== undefined ? { accel: e.accel } : {}),
      ...(capHtm !== undefined ? { 'cap-htm': parseQemuBool(capHtm, '-machine cap-htm') } : {}),
    };
    fieldNames.pseries =
      e.slots !== undefined ? '-m slots' : capHtm !== undefined ? '-machine cap-htm' : '-accel';
  }
  const entryNames: Record<string, (string | undefined)[]> = {};
  const extraPhbs = args.phbs.filter((p) => p.option !== undefined);
  if (extraPhbs.length > 0) {
    data.phbs = extraPhbs.map((phb) => ({
      id: phb.id,
      index: phb.index,
      ...(phb.bus !== `${phb.id}.0` ? { bus: phb.bus } : {}),
      ...resolvePhbConfig(args, phb.index),
    }));
    entryNames.phbs = extraPhbs.map((p) => p.option);
  }
  if (args.devices.length > 0) {
    const counters = new Map<string, number>();
    data.devices = args.devices.map((d) => {
      // QEMU devices need no id; ddw's registry does, so id-less ones get driver-N.
      const n = counters.get(d.driver) ?? 0;
      counters.set(d.driver, n + 1);
      return {
        // (a driver name QEMU would refuse still makes a valid id, so the driver is what is reported)
        id: d.id ?? `${d.driver.replace(/[^A-Za-z0-9._-]/g, '_').replace(/^[^A-Za-z]/, 'd')}-${n}`,
        driver: d.driver,
        bus: d.bus,
        ...(d.slot !== undefined ? { slot: d.slot } : {}),
        fn: d.fn ?? 0,
        props: d.props,
      };
    });
    entryNames.devices = args.devices.map((d) => d.option);
  }
  const globals = resolvePhbConfig({ ...args, phbs: [] }, -1);
  if (Object.keys(globals).length > 0) data[GLOBALS_KEY] = globals;
  return { source: QEMU_OPTIONS_SOURCE, data, entryNames, fieldNames };
}

/** `--host` text as a layer on the `host` section. */
export function hostLayer(text: string): DescriptionLayer {
  return { source: '--host', data: { host: hostSectionOverlay(text) } };
}

/** `--qemu VERSION` as a layer on the `qemu` section. */
export function qemuVersionLayer(version: string): DescriptionLayer {
  return { source: '--qemu', data: { qemu: { version } } };
}

/** `--guest GENERATION[,page=4K|64K]` as a layer on the `guest` section. */
export function guestLayer(text: string): DescriptionLayer {
  const [generation, ...options] = text.split(',');
  const guest: Record<string, unknown> = generation ? { generation } : {};
  for (const option of options) {
    const [key, value] = option.split('=');
    if (key !== 'page' || value === undefined) {
      throw new ConfigError(
        '--guest',
        `"${option}" is not a guest option`,
        'write e.g. --guest linux-6.12,page=64K',
      );
    }
    guest.page = value.toUpperCase();
  }
  return { source: '--guest', data: { guest } };
}

/** Carries -global values through the merge; applied to every PHB afterwards, never built. */
const GLOBALS_KEY = '-global';

/**
 * Merges the layers in order into the description a machine is built from: `pseries` resolved to
 * the machine type, RAM defaulted from the type, -global PHB properties applied to every PHB that
 * does not set them itself (QEMU's rule: a device's own property beats a global).
 */
export function resolveDescription(layers: readonly DescriptionLayer[]): ResolvedDescription {
  let merged: Record<string, unknown> = {};
  const globals: Record<string, unknown> = {};
  const explain = (error: unknown) => explainError(error, layers, merged);
  try {
    for (const layer of layers) {
      const { [GLOBALS_KEY]: layerGlobals, ...data } = layer.data;
      if (isPlainObject(layerGlobals)) Object.assign(globals, layerGlobals);
      try {
        merged = mergeDescription(merged, data) as Record<string, unknown>;
      } catch (error) {
        // A merge error's paths are the layer's own (its entries, its keys): it is that layer's.
        throw explainAs(error, layer);
      }
    }
    if (merged.type === undefined || typeof merged.type === 'string') {
      const type = machineType(
        (merged.type as string | undefined) ?? 'pseries',
        'type',
        qemuVersionOf(merged),
      );
      merged.type = type.name;
      if (merged.ram === undefined) merged.ram = formatHex(type.defaultRam);
    }
    if (Object.keys(globals).length > 0 && Array.isArray(merged.phbs)) {
      merged.phbs = merged.phbs.map((phb) => (isPlainObject(phb) ? { ...globals, ...phb } : phb));
    }
  } catch (error) {
    throw explain(error);
  }
  const preset = layers.find(
    (l) => l.source === QEMU_DEFAULTS_SOURCE || l.source === DEFAULT_MACHINE_SOURCE,
  )?.preset;
  return { description: merged, layers, preset: preset ?? 'qemu', explain };
}

const ENTRY_FIELD = /^(devices|phbs)\[(\d+)\](.*)$/;

/** A configuration error whose fields are already `layer`'s own, named as the user wrote them. */
function explainAs(error: unknown, layer: DescriptionLayer): unknown {
  const config = configErrorIn(error);
  if (config?.subject !== 'machine description' && config?.subject !== 'preset description') return error;
  return ConfigError.fromIssues(
    config.issues.map((issue) => {
      const entry = ENTRY_FIELD.exec(issue.field);
      const name = entry ? entryName(layer, entry[1]!, Number(entry[2])) : undefined;
      return name !== undefined ? { ...issue, field: `${name}${subField(entry![3]!)}` } : issue;
    }),
    layer.source,
  );
}

function entryName(layer: DescriptionLayer, key: string, index: number): string | undefined {
  const names = layer.entryNames;
  return names && Object.hasOwn(names, key) ? names[key]?.[index] : undefined;
}

/** What follows an entry in a field path, as a -device option's message names it. */
function subField(rest: string): string {
  return /^(\.props\.|\.driver$|$)/.test(rest) ? '' : ` ${rest.replace(/^\./, '')}`;
}

/** The configuration error inside `error` (plugins and devices wrap the one that names a field). */
function configErrorIn(error: unknown): ConfigError | undefined {
  for (let e = error, depth = 0; e !== undefined && depth < 8; depth++) {
    if (e instanceof ConfigError) return e;
    if (!(e instanceof PluginError || e instanceof DeviceError)) return undefined;
    e = e.cause;
  }
  return undefined;
}

function explainError(
  error: unknown,
  layers: readonly DescriptionLayer[],
  merged: Record<string, unknown>,
): unknown {
  const config = configErrorIn(error);
  // Errors about options (QEMU options, --host) already name what the user wrote.
  if (config?.subject !== 'machine description') return error;
  const mapped = config.issues.map((issue) => addressIssue(issue, layers, merged));
  const sources = new Set(mapped.map((m) => m.source));
  if (sources.size === 1) {
    return ConfigError.fromIssues(
      mapped.map((m) => m.issue),
      [...sources][0],
    );
  }
  return ConfigError.fromIssues(mapped.map((m) => ({ ...m.issue, field: `${m.source} ${m.issue.field}` })));
}

/** The layer and field behind one issue of the merged description. */
function addressIssue(
  issue: ConfigIssue,
  layers: readonly DescriptionLayer[],
  merged: Record<string, unknown>,
): { source: string; issue: ConfigIssue } {
  const entry = ENTRY_FIELD.exec(issue.field);
  if (entry) {
    const key = entry[1]!;
    const index = Number(entry[2]);
    const rest = entry[3]!;
    const origin = entryOrigin(layers, merged, key, index);
    if (origin) {
      const name = entryName(origin.layer, key, origin.index);
      if (name !== undefined) {
        return { source: origin.layer.source, issue: { ...issue, field: `${name}${subField(rest)}` } };
      }
      return { source: origin.layer.source, issue: { ...issue, field: `${key}[${origin.index}]${rest}` } };
    }
  }
  const top = /^[^.[]+/.exec(issue.field)?.[0];
  if (top !== undefined) {
    for (let i = layers.length - 1; i >= 0; i--) {
      const layer = layers[i]!;
      if (!Object.hasOwn(layer.data, top)) continue;
      const name =
        layer.fieldNames && Object.hasOwn(layer.fieldNames, top) ? layer.fieldNames[top] : undefined;
      return { source: layer.source, issue: name !== undefined ? { ...issue, field: name } : issue };
    }
  }
  return { source: 'machine description', issue };
}

/** Which layer entry `index` of the merged array `key` came from: the last layer naming its id. */
function entryOrigin(
  layers: readonly DescriptionLayer[],
  merged: Record<string, unknown>,
  key: string,
  index: number,
): { layer: DescriptionLayer; index: number } | undefined {
  const entries = merged[key];
  const entry = Array.isArray(entries) ? entries[index] : undefined;
  const id = isPlainObject(entry) ? entry.id : undefined;
  for (let i = layers.length - 1; i >= 0; i--) {
    const layer = layers[i]!;
    const list = layer.data[key];
    if (!Array.isArray(list)) continue;
    if (id === undefined) return { layer, index };
    const at = list.findIndex((e) => isPlainObject(e) && e.id === id);
    if (at >= 0) return { layer, index: at };
  }
  return undefined;
}

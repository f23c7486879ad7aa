import { type HostLinuxOptions, hostLinux } from '@ddw/host-linux';
import {
  ConfigError,
  definePlugin,
  formatFieldPath,
  isPlainObject,
  type Machine,
  MachineBuilder,
  MachineTokens,
  mergeDescription,
  type Plugin,
  parseSize,
  type ServiceGetter,
  type TraceBus,
} from '@ddw/machine';
import { ContainerRegion } from '@ddw/memory';
import { type RtasDdwCompat, rtasDdw } from '@ddw/rtas-ddw';
import { spaprIommu } from '@ddw/spapr-iommu';
import { spaprPci } from '@ddw/spapr-pci';
import { vfioCommon } from '@ddw/vfio-common';
import { vfioPrereg } from '@ddw/vfio-prereg';
import * as z from 'zod';
import {
  hostLayer,
  presetLayer,
  qemuLayer,
  qemuVersionLayer,
  type ResolvedDescription,
  resolveDescription,
} from './configuration.js';
import { PseriesMemoryHotplug } from './hotplug.js';
import { machineType, qemuVersionOf } from './machine-types.js';
import { type PseriesMemoryLayout, pseriesMemoryLayout, SPAPR_MEMORY_BLOCK_SIZE } from './memory-layout.js';
import { parseQemuArgs, type QemuArgs } from './qemu-args.js';
import { HotplugTokens, PseriesTokens } from './tokens.js';
import { QEMU_VERSIONS, type QemuVersion } from './versions.js';

/** What a pseries machine's plugins are configured from (QemuArgs has all of it). */
export interface PseriesMachineArgs {
  type: string;
  /** The QEMU version whose machine type `type` is (default: see effectiveQemuVersion). */
  qemu?: QemuVersion;
  ram: bigint;
  maxmem?: bigint;
  slots?: number;
  accel: 'tcg' | 'kvm';
}

/** The description section of what QEMU's `-m slots=` and `-accel` say. */
const pseriesSectionSchema = z.strictObject({
  slots: z.number().int().min(0).optional(),
  accel: z.enum(['tcg', 'kvm']).optional(),
  /** The machine's `cap-htm` (QEMU 7.2 and 10.0); the default is the machine type's. */
  'cap-htm': z.boolean().optional(),
});

/**
 * The QEMU version the machine is, as a section of its own (`{"qemu": {"version": "10.0"}}`): an
 * object, like every other section, so that what else a version decides (trace formats, ...) can
 * join it, and so a description file reads the same as what --print-description shows.
 */
const qemuSectionSchema = z.strictObject({
  version: z.enum(QEMU_VERSIONS).optional(),
});

/** QEMU names pseries guest RAM so in `info mtree`. */
export const PSERIES_RAM_REGION = 'ppc_spapr.ram';

/**
 * The machine-level part of pseries: the hotplug (device-memory) container QEMU places after RAM,
 * which is empty until memory is plugged but counts for the highest RAM address.
 */
export const pseriesMachine = definePlugin((options: { layout: PseriesMemoryLayout }) => ({
  name: 'pseries',
  sections: { pseries: pseriesSectionSchema.optional(), qemu: qemuSectionSchema.optional() },
  register(ctx) {
    ctx.provide(PseriesTokens.MemoryLayout, { useFactory: (get) => applyLayout(get, options.layout) });
    ctx.provide(HotplugTokens.MemoryHotplug, {
      useFactory: (get) =>
        new PseriesMemoryHotplug(
          get(PseriesTokens.MemoryLayout),
          get(MachineTokens.SystemMemory),
          get(MachineTokens.Devices),
          get(MachineTokens.DeviceTree),
        ),
    });
  },
}));

/** Places the hotplug container and publishes the memory the guest sizes its windows from. */
function applyLayout(get: ServiceGetter, layout: PseriesMemoryLayout): PseriesMemoryLayout {
  const dm = layout.deviceMemory;
  if (dm)
    get(MachineTokens.SystemMemory).addSubregion(dm.base, new ContainerRegion('device-memory', dm.size));
  // What a guest sizes its DMA windows from (spapr_dt_memory, spapr_dt_rtas): boot RAM, and
  // the end of hotpluggable memory (0 when there is none, as QEMU 7.2 writes it).
  const dt = get(MachineTokens.DeviceTree);
  dt.ensureNode('/memory@0');
  dt.setPropString('/memory@0', 'device_type', 'memory');
  dt.setPropU32Cells('/memory@0', 'reg', [0, 0, Number(layout.ram >> 32n), Number(layout.ram & 0xffffffffn)]);
  const maxDeviceAddr = dm ? dm.base + dm.size : 0n;
  dt.ensureNode('/rtas');
  dt.setPropU32Cells('/rtas', 'ibm,lrdr-capacity', [
    Number(maxDeviceAddr >> 32n),
    Number(maxDeviceAddr & 0xffffffffn),
    0,
    Number(SPAPR_MEMORY_BLOCK_SIZE),
    1,
  ]);
  return layout;
}

/**
 * The plugins of a pseries machine of the given type, configured as that QEMU machine type
 * behaves (PHB defaults, ddw-extensions, query rules, reset-on-last-remove).
 */
export function pseriesPlugins(args: PseriesMachineArgs, host: PseriesHostOptions = {}): Plugin[] {
  const info = machineType(args.type, '-M', args.qemu);
  const layout = pseriesMemoryLayout({
    ram: args.ram,
    ...(args.maxmem !== undefined ? { maxmem: args.maxmem } : {}),
    ...(args.slots !== undefined ? { slots: args.slots } : {}),
  });
  const compat: RtasDdwCompat = {
    queryNret6: info.ddw.queryNret6,
    pgsize2M: info.ddw.pgsize2M,
    resetOnLastRemove: info.ddw.resetOnLastRemove,
    largestBlock:
      info.ddw.largestBlock === 'max-ram'
        ? { kind: 'max-ram', maxRamAddress: layout.maxRamAddress }
        : { kind: 'fixed' },
  };
  return [
    pseriesMachine({ layout }),
    spaprIommu({ accel: args.accel, migrationVersion: info.migrationVersion }),
    spaprPci({
      defaults: info.phbDefaults,
      // Machines before 2.8 migrate the PHB with QEMU's LIOBN equality check.
      compat: { ddwExtensions: info.ddw.extensions, pre28Migration: info.pre28Migration },
    }),
    rtasDdw({ compat }),
    vfioCommon({
      // QEMU 10.0 prints its own VFIO trace events; 7.2 and 2.7 print 7.2's.
      qemuVersion: info.qemuVersion === '10.0' ? '10.0' : '7.2',
    }),
    hostLinux({
      // Host text reaches the machine as a description layer (hostLayer); data is a base under it.
      ...(host.host !== undefined && typeof host.host !== 'string' ? { host: host.host } : {}),
      ...(host.hostIommu !== undefined ? { hostIommu: host.hostIommu } : {}),
    }),
    vfioPrereg(),
  ];
}

/** The machine description QEMU's options amount to (JSON form): QEMU's defaults with the options over them. */
export function pseriesDescription(args: QemuArgs): Record<string, unknown> {
  return resolveDescription([presetLayer({ ...args, hardware: true }), qemuLayer(args)]).description;
}

/** The host side of passthrough (what QEMU's command line cannot say). */
export interface PseriesHostOptions {
  /** Host IOMMU capabilities, as `--host "type=v2,page=64K,..."` or as data. */
  host?: HostLinuxOptions['host'];
  /** A host IOMMU backend other than the simulated Linux one (or one prepared with faults). */
  hostIommu?: HostLinuxOptions['hostIommu'];
}

export interface BuildPseriesOptions extends PseriesHostOptions {
  /** The QEMU version the machine is (buildPseries; a description says it in its `qemu` section). */
  qemu?: QemuVersion;
  /** A trace bus already configured (patterns, sinks), so the boot itself is traced. */
  trace?: TraceBus;
  /** Extra plugins (devices from other packages). */
  plugins?: readonly Plugin[];
}

/**
 * Builds, realizes and resets the pseries machine QEMU's command line describes: QEMU's defaults,
 * the options over them, and `options.host` text over the `host` section (see configuration.ts).
 */
export function buildPseries(
  qemuArgs: string | readonly string[] | QemuArgs,
  options: BuildPseriesOptions = {},
): Promise<Machine> {
  const args =
    typeof qemuArgs === 'object' && !Array.isArray(qemuArgs)
      ? (qemuArgs as QemuArgs)
      : parseQemuArgs(qemuArgs as string | readonly string[]);
  const { host, qemu, ...rest } = options;
  const layers = [
    presetLayer({ ...args, hardware: true }),
    qemuLayer(args),
    ...(qemu !== undefined ? [qemuVersionLayer(qemu)] : []),
    ...(typeof host === 'string' ? [hostLayer(host)] : []),
  ];
  return buildResolved(resolveDescription(layers), {
    ...rest,
    ...(host !== undefined && typeof host !== 'string' ? { host } : {}),
  });
}

/** Builds a machine from a resolved description; configuration errors name what the user wrote. */
export async function buildResolved(
  resolved: ResolvedDescription,
  options: BuildPseriesOptions = {},
): Promise<Machine> {
  try {
    return await buildPseriesFromDescription(resolved.description, options);
  } catch (error) {
    throw resolved.explain(error);
  }
}

/** A description's machine-wide settings, read before the plugins exist (they configure them). */
function machineArgsOf(description: Record<string, unknown>): PseriesMachineArgs {
  const section = pseriesSectionSchema.safeParse(description.pseries ?? {});
  if (!section.success) {
    throw ConfigError.fromIssues(
      section.error.issues.map((i) => ({
        field: formatFieldPath(['pseries', ...i.path]),
        problem: i.message,
      })),
    );
  }
  const qemu = qemuSectionSchema.safeParse(description.qemu ?? {});
  if (!qemu.success) {
    throw ConfigError.fromIssues(
      qemu.error.issues.map((i) => ({
        field: formatFieldPath(['qemu', ...i.path]),
        problem: i.message,
        fix: `use one of: ${QEMU_VERSIONS.join(', ')}`,
      })),
    );
  }
  const type = description.type;
  if (type !== undefined && typeof type !== 'string')
    throw new ConfigError('type', 'is not a string', 'write e.g. "pseries-7.2"');
  const version = qemuVersionOf(description);
  const info = machineType(type ?? 'pseries', 'type', version);
  const accel = section.data.accel ?? 'tcg';
  const capHtm = section.data['cap-htm'];
  if (capHtm !== undefined && info.capHtm === undefined) {
    throw new ConfigError(
      'pseries.cap-htm',
      `QEMU ${info.qemuVersion}'s ${info.name} has no machine capabilities`,
      'drop cap-htm',
    );
  }
  // spapr_caps.c cap_htm_apply: TCG has no transactional memory, and QEMU refuses to start a
  // machine whose cap-htm is on (pseries-2.11 and older default to it). A simulated KVM host is
  // taken to have HTM.
  if ((capHtm ?? info.capHtm) === true && accel === 'tcg') {
    throw new ConfigError(
      capHtm !== undefined ? 'pseries.cap-htm' : 'type',
      'No Transactional Memory support in TCG',
      'Try appending -machine cap-htm=off',
    );
  }
  return {
    type: info.name,
    qemu: info.qemuVersion,
    ram: description.ram !== undefined ? parseSize(description.ram as string, 'ram') : info.defaultRam,
    ...(description.maxmem !== undefined
      ? { maxmem: parseSize(description.maxmem as string, 'maxmem') }
      : {}),
    ...(section.data.slots !== undefined ? { slots: section.data.slots } : {}),
    accel,
  };
}

/**
 * Builds a pseries machine from a description (data, as a JSON file holds it), merged over
 * `preset` (default: none). The same plugins as buildPseries; errors name the field.
 */
export function buildPseriesFromDescription(
  description: unknown,
  options: BuildPseriesOptions & { preset?: unknown } = {},
): Promise<Machine> {
  const merged = mergeDescription((options.preset ?? {}) as Record<string, unknown>, description);
  if (!isPlainObject(merged)) throw new ConfigError('description', 'is not an object', 'write a JSON object');
  const args = machineArgsOf(merged);
  return new MachineBuilder({
    ramRegionName: PSERIES_RAM_REGION,
    ...(options.trace ? { trace: options.trace } : {}),
  })
    .use(...pseriesPlugins(args, options), ...(options.plugins ?? []))
    .describe(merged)
    .build();
}

export {
  machineType,
  PSERIES_MACHINE_TYPES,
  type PseriesMachineType,
} from './machine-types.js';
export {
  describeMemoryLayout,
  type PseriesMemoryLayout,
  pseriesMemoryLayout,
  SPAPR_DEVICE_MEM_ALIGN,
  SPAPR_MAX_RAM_SLOTS,
  SPAPR_MEMORY_BLOCK_SIZE,
} from './memory-layout.js';
export {
  type BuildPseriesOptions,
  buildPseries,
  buildPseriesFromDescription,
  DEFAULT_PSERIES_MACHINE,
  PSERIES_RAM_REGION,
  type PseriesHostOptions,
  type PseriesMachineArgs,
  PseriesTokens,
  pseriesDescription,
  pseriesMachine,
  pseriesPlugins,
} from './preset.js';
export {
  parseOptionList,
  parseQemuArgs,
  parseQemuBool,
  parseQemuSize,
  parseQemuU64,
  type QemuArgs,
  type QemuDevice,
  type QemuPhb,
  resolvePhbConfig,
  SPAPR_MAX_PHB_INDEX,
  splitCommandLine,
} from './qemu-args.js';

export {
  type HostDmaWindow,
  VfioContainer,
  type VfioContainerDeps,
  type VfioContainerTraces,
  VfioError,
  type VfioKvm,
} from './container.js';
export * from './host/host-iommu.js';
export { type HostMemoryBlock, HostVirtualMemory } from './host/host-memory.js';
export {
  formatHostConfig,
  HOST_OPTION_KEYS,
  type HostOptionKey,
  hostConfigSchema,
  hostSectionOverlay,
  parseHostOptions,
} from './host/options.js';
export {
  EBADF,
  POWERNV_SLOT1_ADDR,
  type SimulatedHostWindow,
  SimulatedSpaprTceContainer,
  SimulatedSpaprTceHost,
} from './host/simulated.js';
export { connectKvm, type KvmTceTables, KvmTceTablesToken } from './kvm.js';
export { GUEST_RAM_HOST_BASE, Vfio, type VfioCommonOptions, VfioTokens, vfioCommon } from './plugin.js';
export {
  strerror,
  VFIO_QEMU_VERSIONS,
  VFIO_TRACE_EVENTS,
  VFIO_TRACE_EVENTS_7_2,
  VFIO_TRACE_EVENTS_10_0,
  type VfioQemuVersion,
  vfioTraceEvents,
} from './traces.js';
export { type VfioConnector, VfioPciDevice, vfioPciDriver } from './vfio-pci.js';

export { VfioContainer, type VfioContainerDeps, type VfioContainerTraces } from './container.js';
export {
  Errno,
  errnoName,
  type HostIommu,
  type HostIommuConfig,
  type HostIommuContainer,
  type HostIommuInfo,
  type HostIommuOp,
  type HostIommuType,
  type HostKvmTable,
  type HostMapping,
  type HostMappingRunVisitor,
  type HostRegisteredRegion,
  type HostWindow,
  type TceCreateRequest,
  type TceCreateResult,
  VFIO_DMA_MAP_FLAG_READ,
  VFIO_DMA_MAP_FLAG_WRITE,
  VFIO_IOMMU_SPAPR_INFO_DDW,
  VFIO_SPAPR_TCE_IOMMU,
  VFIO_SPAPR_TCE_v2_IOMMU,
  VFIO_TYPE1_IOMMU,
  VFIO_TYPE1v2_IOMMU,
} from './host/host-iommu.js';
export { type HostMemoryBlock, HostVirtualMemory } from './host/host-memory.js';
export { connectKvm, type KvmTceTables, KvmTceTablesToken, type VfioKvm } from './kvm.js';
export { GUEST_RAM_HOST_BASE, Vfio, type VfioCommonOptions, VfioTokens, vfioCommon } from './plugin.js';
export type { HostDmaWindow } from './spapr-host-window.js';
export {
  strerror,
  VFIO_QEMU_VERSIONS,
  VFIO_TRACE_EVENTS,
  VFIO_TRACE_EVENTS_7_2,
  VFIO_TRACE_EVENTS_10_0,
  type VfioQemuVersion,
  vfioTraceEvents,
} from './traces.js';
export { VfioError } from './vfio-error.js';
export { type VfioConnector, VfioPciDevice, vfioPciDriver } from './vfio-pci.js';

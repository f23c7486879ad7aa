export { AddressSpace, type LoadResult, type Translation } from './address-space.js';
export { AliasRegion } from './alias.js';
export {
  accessPermission,
  type Endianness,
  IOMMUAccessFlags,
  IOMMUNotifierFlag,
  MAX_RAM_SIZE,
  MemTxResult,
  TARGET_PAGE_SIZE,
  TWO_32,
  UINT64_MAX,
  UINT64_SPAN,
} from './constants.js';
export {
  InvalidAccessSizeError,
  IommuNotifierRefusedError,
  MemoryArgumentError,
  MemoryConfigError,
  MemoryRangeError,
} from './errors.js';
export { type FlatRange, FlatView, renderFlatView, sameFlatRange } from './flatview.js';
export { formatHex, hexDigits } from './format.js';
export {
  batchAddress,
  batchAddressNumber,
  batchEvent,
  batchPages,
  type IOMMUBatch,
  IOMMUBatchBuffer,
  IOMMUNotifier,
  type IOMMUNotify,
  type IOMMUNotifyBatch,
  type IOMMUTLBEntry,
  type IOMMUTLBEvent,
  IommuMemoryRegion,
  iommuMiss,
} from './iommu.js';
export type { MemoryListener, MemoryRegionSection } from './listener.js';
export {
  type AccessConstraints,
  type AccessSize,
  checkAccessSize,
  loadBytes,
  type MemoryRegionOps,
  MmioRegion,
  storeBytes,
} from './mmio.js';
export { type MtreeOptions, mtree, regionTypeName } from './mtree.js';
export { RAM_CHUNK_SIZE, RamRegion, type RamRegionOptions, SparseRam } from './ram.js';
export { ContainerRegion, MemoryRegion, type RegionKind, type SubregionOptions } from './region.js';
export {
  type EntryRunVisitor,
  type EntrySlotsVisitor,
  MAX_RUN_STRIDE,
  RUN_TABLE_CHUNK_SHIFT,
  RunTable,
  runEntryHalves,
  strideBetween,
} from './run-table.js';
export {
  beginTransaction,
  commitTransaction,
  markChanged,
  type TopologyObserver,
  transaction,
  transactionDepth,
} from './transaction.js';

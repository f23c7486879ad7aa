/**
 * What QEMU asks of the host kernel for sPAPR passthrough: the VFIO container ioctls of Linux's
 * drivers/vfio/vfio_iommu_spapr_tce.c, one method each. Results are what the ioctl returns: 0, a
 * negative errno, or (a Linux quirk for a misaligned iova) +1. Nothing here throws for bad input.
 */

/** errno values (Linux, powerpc). */
export const Errno = {
  EPERM: 1,
  ENOENT: 2,
  ENXIO: 6,
  ENOMEM: 12,
  EFAULT: 14,
  EBUSY: 16,
  ENODEV: 19,
  EINVAL: 22,
  ENOTTY: 25,
  ENOSPC: 28,
} as const;

/** The errno name of a negative ioctl result, for messages: -22 -> "EINVAL". */
export function errnoName(ret: number): string {
  const found = Object.entries(Errno).find(([, v]) => v === -ret);
  return found ? found[0] : String(ret);
}

/** VFIO IOMMU types (include/uapi/linux/vfio.h). */
export const VFIO_TYPE1_IOMMU = 1;
export const VFIO_SPAPR_TCE_IOMMU = 2;
export const VFIO_TYPE1v2_IOMMU = 3;
export const VFIO_SPAPR_TCE_v2_IOMMU = 7;

/** vfio_iommu_spapr_tce_info.flags bit 0: the ddw part is valid. */
export const VFIO_IOMMU_SPAPR_INFO_DDW = 1;
export const VFIO_DMA_MAP_FLAG_READ = 1;
export const VFIO_DMA_MAP_FLAG_WRITE = 2;

export type HostIommuType = 'v1' | 'v2';

/** vfio_iommu_spapr_tce_info. */
export interface HostIommuInfo {
  /** VFIO_IOMMU_SPAPR_INFO_DDW when the container is v2 and the platform has dynamic windows. */
  flags: number;
  dma32WindowStart: bigint;
  dma32WindowSize: bigint;
  /** Zeroed for v1, and when argsz < 32 (only the first 16 bytes are written). */
  ddw: { pgSizes: bigint; maxDynamicWindowsSupported: number; levels: number };
}

/** One host DMA window (an iommu_table in a container slot). */
export interface HostWindow {
  readonly slot: number;
  readonly startAddr: bigint;
  readonly size: bigint;
  readonly pageShift: number;
  readonly levels: number;
  /** The default 32-bit window a v2 container creates on first use (pending until then). */
  readonly isDefault: boolean;
}

/** One mapped IOMMU page as the hardware sees it. */
export interface HostMapping {
  readonly iova: bigint;
  readonly size: bigint;
  /** Host virtual address the page was mapped from (the userspace view). */
  readonly vaddr: bigint;
  /** Device may read memory (TCE R). */
  readonly read: boolean;
  /** Device may write memory (TCE W). */
  readonly write: boolean;
}

/** Receives one run of mapped pages (see HostIommuContainer.forEachMapping). */
export type HostMappingRunVisitor = (
  iova: bigint,
  pages: number,
  pageSize: bigint,
  vaddr: bigint,
  read: boolean,
  write: boolean,
  step: number,
) => void;

/** A pre-registered region (v2). */
export interface HostRegisteredRegion {
  readonly vaddr: bigint;
  readonly size: bigint;
  /** The largest IOMMU page shift the region can back. */
  readonly pageShift: number;
}

export type HostIommuOp =
  | 'attachGroup'
  | 'setIommu'
  | 'getInfo'
  | 'enable'
  | 'disable'
  | 'registerMemory'
  | 'unregisterMemory'
  | 'createWindow'
  | 'removeWindow'
  | 'mapDma'
  | 'unmapDma';

/** vfio_iommu_spapr_tce_create's inputs. */
export interface TceCreateRequest {
  pageShift: number;
  windowSize: bigint;
  levels: number;
  flags?: number;
  argsz?: number;
}

/** The ioctl's result and, on success, the bus address the kernel chose. */
export interface TceCreateResult {
  ret: number;
  startAddr?: bigint;
}

/** A VFIO container fd (/dev/vfio/vfio) on the host. */
export interface HostIommuContainer {
  /** VFIO_GROUP_SET_CONTAINER for an IOMMU group such as "0000:01:00.0"'s group. */
  attachGroup(group: string): number;
  detachGroup(group: string): number;
  /** VFIO_SET_IOMMU. */
  setIommu(type: number): number;
  /** The type set, once SET_IOMMU succeeded. */
  readonly type: HostIommuType | undefined;
  getInfo(argsz?: number): { ret: number; info?: HostIommuInfo };
  /** v1 only. */
  enable(): number;
  disable(): number;
  /** v2 only: VFIO_IOMMU_SPAPR_REGISTER_MEMORY. */
  registerMemory(req: { vaddr: bigint; size: bigint; flags?: number; argsz?: number }): number;
  unregisterMemory(req: { vaddr: bigint; size: bigint; flags?: number; argsz?: number }): number;
  /** v2 only: VFIO_IOMMU_SPAPR_TCE_CREATE; the kernel chooses startAddr. */
  createWindow(req: TceCreateRequest): TceCreateResult;
  /** v2 only: VFIO_IOMMU_SPAPR_TCE_REMOVE (any address inside a window selects it). */
  removeWindow(req: { startAddr: bigint; flags?: number; argsz?: number }): number;
  /** VFIO_IOMMU_MAP_DMA; flags are VFIO_DMA_MAP_FLAG_READ | _WRITE. */
  mapDma(req: { iova: bigint; size: bigint; vaddr: bigint; flags: number; argsz?: number }): number;
  unmapDma(req: { iova: bigint; size: bigint; flags?: number; argsz?: number }): number;
  /**
   * A run of `count` IOMMU pages of 1 << pageShift bytes from `iova`: exactly the per-page calls
   * mapDma({ iova: iova + k * pageSize, size: pageSize, vaddr: vaddr + k * step * pageSize, flags })
   * for k = 0, 1, ... in order, or unmapDma({ iova: iova + k * pageSize, size: pageSize }) when
   * `flags` is 0. It stops before the first page whose call would not return 0, leaving that page
   * and the rest untouched (an injected fault stays due), and returns how many pages it applied:
   * the caller makes the per-page call for the page it stopped at, to get its errno. `vaddr` (the
   * first page's host address) and every page's host address are exact integers below 2^53;
   * `step` is a non-negative integer (1: consecutive memory, 0: one page repeated); `pageShift` is
   * an integer in [0, 52]. Costs per run of pages the host can take alike, not per page.
   * `vaddr` may instead be a list of `count` host addresses, page k mapped from vaddr[k] (`step`
   * unused): the consecutive pages of an irregular TCE list, in one call.
   */
  mapRun(
    iova: bigint,
    pageShift: number,
    count: number,
    vaddr: number | Float64Array,
    step: number,
    flags: number,
  ): number;
  /**
   * Optional: the hardware tables of the container's windows as the host kernel's KVM takes them
   * when QEMU attaches a group to an in-kernel TCE table (KVM_DEV_VFIO_GROUP_SET_SPAPR_TCE: the
   * group's table group). The same object for a window on every call. A backend without it cannot
   * be driven by KVM: the attach fails with -EINVAL.
   */
  kvmTables?(): HostKvmTable[];
  /** Container release: clears every TCE, frees windows and registrations. */
  close(): void;

  /** The hardware's view of `iova`, as a device's DMA would use it; undefined when not mapped. */
  translate(iova: bigint): HostMapping | undefined;
  /**
   * Every mapped page, in iova order, one object each: for tests and small tables. Sizes and
   * reports use mappedCount() and forEachMapping(), which cost per run.
   */
  mappings(): HostMapping[];
  /** How many pages are mapped (mappings().length, without building them). */
  mappedCount(): number;
  /**
   * Visits the mapped pages as maximal runs, in iova order: `pages` pages of `pageSize` bytes from
   * `iova`, page k mapping host address vaddr + k * step * pageSize with the same permissions
   * (step 1: consecutive memory, 0: one page repeated; 1 for a run of one page).
   */
  forEachMapping(fn: HostMappingRunVisitor): void;
  /** Windows that exist (a pending default window is not listed). */
  windows(): HostWindow[];
  /** Pre-registered regions this container references. */
  registered(): HostRegisteredRegion[];
}

/**
 * A window's hardware table as KVM drives it (struct iommu_table under book3s_64_vio.c): KVM
 * writes the guest's TCEs into it without QEMU, from guest RAM's host addresses.
 */
export interface HostKvmTable {
  /** it_offset << it_page_shift: the table's first bus address. */
  readonly startAddr: bigint;
  /** it_page_shift. */
  readonly pageShift: number;
  /** it_size << it_page_shift: the IOVA its entries cover (PowerNV's table may exceed the window). */
  readonly span: bigint;
  /**
   * mm_iommu_lookup + mm_iommu_ua_to_hpa: one IOMMU page at userspace address `ua` lies in memory
   * pre-registered (v2) with pages at least as large.
   */
  canMap(ua: bigint): boolean;
  /**
   * kvmppc_tce_iommu_do_map for one IOMMU page at bus address `iova` from `ua` (write implies read
   * on PowerNV): 0, or 'H_TOO_HARD' when the kernel must leave it to userspace (not pre-registered).
   */
  map(iova: bigint, ua: bigint, write: boolean): 0 | 'H_TOO_HARD';
  /** kvmppc_tce_iommu_do_unmap for one IOMMU page at `iova`. */
  unmap(iova: bigint): 0 | 'H_TOO_HARD';
}

/** The host kernel: capabilities, and containers. */
export interface HostIommu {
  readonly config: HostIommuConfig;
  /** VFIO_CHECK_EXTENSION: 1 for the IOMMU types the host offers, else 0. */
  checkExtension(type: number): number;
  openContainer(): HostIommuContainer;
  /** The next `count` calls of `op` (on any container) fail with `-errno`. */
  injectFault(op: HostIommuOp, errno: number, count?: number): void;
}

/** Host capabilities: what `--host "type=v2,page=64K,..."` sets. */
export interface HostIommuConfig {
  /** The best IOMMU type offered: v2 hosts also offer v1 (CHECK_EXTENSION answers 1 for both). */
  type: HostIommuType;
  /** Host PAGE_SIZE (64K on ppc64 distributions). */
  pageSize: bigint;
  /** Supported IOMMU page sizes, a bitmap of byte sizes (ddw.pgsizes), e.g. 0x1011000. */
  pgSizes: bigint;
  /** ddw.max_dynamic_windows_supported (and the container's window slots). */
  maxWindows: number;
  /** ddw.levels: the most TCE table levels a window may have. */
  levels: number;
  /** The default 32-bit window. */
  dma32WindowStart: bigint;
  dma32WindowSize: bigint;
  /** RLIMIT_MEMLOCK in bytes; undefined = unlimited (CAP_IPC_LOCK). */
  memlockLimit: bigint | undefined;
  /** The page size backing guest RAM (hugetlbfs when larger than pageSize). */
  ramPageSize: bigint;
  /**
   * UNREGISTER_MEMORY of a region that still has mappings: 'ebusy' (what the design intends, and
   * 2016 kernels) or 'ok' (2018+ kernels: returns 0, the region stays pinned without an owner).
   */
  unregisterWhileMapped: 'ebusy' | 'ok';
  /**
   * KVM_CAP_SPAPR_TCE_VFIO (Linux 4.12+): the host's KVM can drive a VFIO group from an in-kernel
   * TCE table. Under `-accel kvm` QEMU then keeps each TCE table in the kernel and attaches the VFIO
   * groups to it (KVM_DEV_VFIO_GROUP_SET_SPAPR_TCE): the guest's TCE hypercalls reach the host
   * IOMMU without QEMU. Absent or false: QEMU moves a table to userspace when VFIO starts following
   * it and maps every TCE itself. Nothing changes under TCG.
   */
  kvmTceVfio?: boolean;
}

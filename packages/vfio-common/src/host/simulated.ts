import { ConfigError } from '@ddw/machine';
import {
  ARGSZ,
  Errno,
  type HostIommu,
  type HostIommuConfig,
  type HostIommuContainer,
  type HostIommuInfo,
  type HostIommuOp,
  type HostIommuType,
  type HostKvmTable,
  type HostMapping,
  type HostRegisteredRegion,
  type HostWindow,
  type TceCreateRequest,
  type TceCreateResult,
  VFIO_DMA_MAP_FLAG_READ,
  VFIO_DMA_MAP_FLAG_WRITE,
  VFIO_IOMMU_SPAPR_INFO_DDW,
  VFIO_SPAPR_TCE_IOMMU,
  VFIO_SPAPR_TCE_v2_IOMMU,
} from './host-iommu.js';
import type { HostMemoryBlock, HostVirtualMemory } from './host-memory.js';

/**
 * A simulated Linux host IOMMU: the VFIO sPAPR TCE driver (drivers/vfio/vfio_iommu_spapr_tce.c)
 * over a PowerNV IODA2 platform, as reference section 4 describes it, with the ≥ v6.4 attach rules.
 * All containers of one host belong to one process: they share its locked-memory account and its
 * pre-registered regions, and a MAP may use a region registered through another container.
 */

/** A closed container fd; Errno has no EBADF because no ioctl of a live container returns it. */
export const EBADF = 9;

/** Bus address of window slot 1 on PowerNV: the PHB selects TVE#1 by address bit 59. */
export const POWERNV_SLOT1_ADDR = 1n << 59n;

/** The table geometry rule of PowerNV rejects a table whose indexing would reach bit 60. */
const TABLE_BITS_LIMIT = 60;
/** The default window always uses 4K IOMMU pages, whatever the platform also supports. */
const DEFAULT_WINDOW_PAGE_SHIFT = 12;
/** IOMMU_TABLE_GROUP_MAX_TABLES: window slots exist for at most two tables. */
const MAX_SLOTS = 2;

/** log2 of the TCEs per storage chunk: 4096 entries, about 52 KiB resident. */
const CHUNK_SHIFT = 12;
const CHUNK_ENTRIES = 1 << CHUNK_SHIFT;

/** Hardware TCE permission bits (TCE_PCI_READ, TCE_PCI_WRITE). */
const TCE_READ = 1;
const TCE_WRITE = 2;
const MAP_FLAGS = VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE;

const u64 = (value: bigint) => BigInt.asUintN(64, value);
const U64_LIMIT = 1n << 64n;

/** floor(log2(value)) for value > 0. */
function log2(value: bigint): number {
  return value.toString(2).length - 1;
}

function isPowerOfTwo(value: bigint): boolean {
  return value > 0n && (value & (value - 1n)) === 0n;
}

/** Index of the lowest set bit (value > 0). */
function lowestSetBit(value: bigint): number {
  return log2(value & -value);
}

/**
 * The TCEs of one window, in lazily allocated chunks keyed by chunk number, so a window of 2^24 or
 * 2^40 entries costs memory only where pages are mapped. An entry stores the userspace page
 * number (vaddr >> page shift, exact as a double for any 64-bit vaddr once pages are ≥ 2 KiB), the
 * hardware permission bits (0 = empty) and, for v2, the id of the registered region it came from
 * (what the kernel finds again through its userspace copy of the TCE when the entry is cleared).
 */
class TceChunk {
  readonly vpn = new Float64Array(CHUNK_ENTRIES);
  readonly perm = new Uint8Array(CHUNK_ENTRIES);
  readonly region = new Uint32Array(CHUNK_ENTRIES);
  used = 0;
}

/** What windows() reports, plus the IOVA extent the table really accepts. */
export interface SimulatedHostWindow extends HostWindow {
  /**
   * Bytes of IOVA the table's entries cover, from startAddr. PowerNV sizes a table to at least one
   * host page of TCEs and takes its extent from the allocation, so a small window accepts IOVAs
   * beyond `size` (1 MiB of 64K pages on a 64K host covers 8192 entries: 512 MiB).
   */
  readonly tableSpan: bigint;
}

class Window {
  readonly chunks = new Map<number, TceChunk>();
  readonly end: bigint;
  readonly shift: bigint;
  readonly pageSize: bigint;
  /** The page size as a number, for the batch path. */
  readonly pageBytes: number;
  mapped = 0;

  constructor(
    readonly info: SimulatedHostWindow,
    /** Pages of the process's locked-memory account the table holds. */
    readonly lockedPages: number,
  ) {
    this.end = info.startAddr + info.tableSpan;
    this.shift = BigInt(info.pageShift);
    this.pageSize = 1n << this.shift;
    this.pageBytes = Number(this.pageSize);
  }

  get start(): bigint {
    return this.info.startAddr;
  }

  contains(iova: bigint): boolean {
    return iova >= this.info.startAddr && iova < this.end;
  }
}

/** A pre-registered region of the process (mm_iommu_table_group_mem_t). */
interface Region {
  readonly id: number;
  readonly vaddr: bigint;
  readonly size: bigint;
  readonly end: bigint;
  readonly pageShift: number;
  readonly lockedPages: number;
  /** Containers referencing it, plus one while it is pinned without an owner. */
  refs: number;
  readonly owners: Set<SimulatedSpaprTceContainer>;
  /** TCEs, in any container, that point into the region. */
  mapped: number;
}

/** What every container of one host shares: the process's locked memory, regions and groups. */
class HostState {
  readonly hostPageShift: number;
  readonly hostPageSize: bigint;
  readonly slots: number;
  lockedPages = 0;
  readonly #limitPages: number | undefined;
  /** Sorted by vaddr; they never overlap. */
  readonly regions: Region[] = [];
  readonly regionById = new Map<number, Region>();
  #nextRegionId = 1;
  #lastHit: Region | undefined;
  readonly groups = new Map<string, SimulatedSpaprTceContainer>();
  readonly #faults = new Map<HostIommuOp, { errno: number; left: number }[]>();
  #pendingFaults = 0;

  constructor(
    readonly config: HostIommuConfig,
    readonly memory: HostVirtualMemory,
  ) {
    this.hostPageShift = log2(config.pageSize);
    this.hostPageSize = config.pageSize;
    this.slots = Math.max(0, Math.min(MAX_SLOTS, config.maxWindows));
    this.#limitPages =
      config.memlockLimit === undefined
        ? undefined
        : Number(config.memlockLimit >> BigInt(this.hostPageShift));
  }

  /** RLIMIT_MEMLOCK is compared in whole host pages, as the kernel's locked_vm counter is. */
  account(pages: number): number {
    if (this.#limitPages !== undefined && this.lockedPages + pages > this.#limitPages) return -Errno.ENOMEM;
    this.lockedPages += pages;
    return 0;
  }

  unaccount(pages: number): void {
    this.lockedPages -= pages;
  }

  injectFault(op: HostIommuOp, errno: number, count: number): void {
    if (!(count >= 1)) return;
    const left = Math.floor(count);
    const queue = this.#faults.get(op) ?? [];
    queue.push({ errno: Math.abs(errno), left });
    this.#faults.set(op, queue);
    this.#pendingFaults += left;
  }

  /** Whether the next call of `op` would fail by injection (without using the fault up). */
  faultDue(op: HostIommuOp): boolean {
    return this.#pendingFaults > 0 && (this.#faults.get(op)?.length ?? 0) > 0;
  }

  /** -errno when an injected fault is due for `op`, else 0. */
  takeFault(op: HostIommuOp): number {
    if (this.#pendingFaults === 0) return 0;
    const queue = this.#faults.get(op);
    const fault = queue?.[0];
    if (!fault) return 0;
    fault.left--;
    this.#pendingFaults--;
    if (fault.left === 0) queue!.shift();
    return -fault.errno;
  }

  exactRegion(vaddr: bigint, size: bigint): Region | undefined {
    return this.regions.find((r) => r.vaddr === vaddr && r.size === size);
  }

  /** The region holding all of [ua, ua + len), searched across the whole process. */
  regionHolding(ua: bigint, len: bigint): Region | undefined {
    const last = this.#lastHit;
    if (last && last.vaddr <= ua && ua + len <= last.end) return last;
    for (const r of this.regions) {
      if (r.vaddr > ua) break;
      if (ua + len <= r.end) {
        this.#lastHit = r;
        return r;
      }
    }
    return undefined;
  }

  addRegion(vaddr: bigint, size: bigint, pageShift: number, lockedPages: number): Region {
    const region: Region = {
      id: this.#nextRegionId++,
      vaddr,
      size,
      end: vaddr + size,
      pageShift,
      lockedPages,
      refs: 1,
      owners: new Set(),
      mapped: 0,
    };
    this.regions.push(region);
    this.regions.sort((a, b) => (a.vaddr < b.vaddr ? -1 : 1));
    this.regionById.set(region.id, region);
    return region;
  }

  /**
   * Drops one reference. The last one frees the region unless TCEs still point into it: then the
   * reference stays and -EBUSY says so (whether a caller passes that on depends on the kernel era).
   */
  putRegion(region: Region): number {
    region.refs--;
    if (region.refs > 0) return 0;
    if (region.mapped > 0) {
      region.refs = 1;
      return -Errno.EBUSY;
    }
    this.regions.splice(this.regions.indexOf(region), 1);
    this.regionById.delete(region.id);
    if (this.#lastHit === region) this.#lastHit = undefined;
    this.unaccount(region.lockedPages);
    return 0;
  }

  /**
   * The largest IOMMU page a region can back: its natural alignment, capped by every backing page.
   * Pages above the host page size count only when they are hugetlb pages (a transparent huge page
   * may be split under the IOMMU's feet, so the kernel assumes ordinary pages).
   */
  regionPageShift(vaddr: bigint, size: bigint, blocks: readonly HostMemoryBlock[]): number {
    let shift = lowestSetBit(vaddr | size);
    for (const block of blocks) {
      const backing = log2(block.pageSize);
      shift = Math.min(shift, block.hugetlb ? backing : Math.min(backing, this.hostPageShift));
    }
    return shift;
  }

  /** The blocks backing all of [vaddr, vaddr + size), in order; undefined when any byte is not. */
  backing(vaddr: bigint, size: bigint): HostMemoryBlock[] | undefined {
    const end = vaddr + size;
    const out: HostMemoryBlock[] = [];
    let at = vaddr;
    for (const block of this.memory.blocks()) {
      const blockEnd = block.vaddr + block.size;
      if (blockEnd <= at) continue;
      if (block.vaddr > at) return undefined;
      out.push(block);
      at = blockEnd;
      if (at >= end) return out;
    }
    return undefined;
  }
}

/**
 * PowerNV's table for a window of 2^windowShift bytes in 2^pageShift pages on `levels` levels: the
 * bytes it books against RLIMIT_MEMLOCK, its per-level block shift and its index bits.
 */
function tableGeometry(
  pageShift: number,
  windowShift: number,
  levels: number,
  hostPageShift: number,
): { accountedBytes: bigint; levelShift: number; entriesShift: number } {
  const entriesShift = windowShift - pageShift;
  // Each level is cut into blocks of one level's share of the index bits, never less than a host page.
  const levelShift = Math.max(Math.ceil(entriesShift / levels) + 3, hostPageShift);
  const block = 1n << BigInt(levelShift);
  // The leaves hold every TCE (at least 4 KiB of them); each level above holds one 8-byte pointer
  // per block below, and is itself at least one block. Every level is rounded up to whole blocks.
  let levelBytes = 1n << BigInt(entriesShift + 3);
  if (levelBytes < 0x1000n) levelBytes = 0x1000n;
  let bytes = 0n;
  for (let level = 0; level < levels; level++) {
    bytes += ((levelBytes + block - 1n) / block) * block;
    levelBytes = (levelBytes / block) * 8n;
    if (levelBytes < block) levelBytes = block;
  }
  // The v2 driver keeps a userspace copy of every TCE next to the hardware table.
  return { accountedBytes: bytes * 2n, levelShift, entriesShift };
}

/** The simulated host kernel. */
export class SimulatedSpaprTceHost implements HostIommu {
  readonly config: HostIommuConfig;
  readonly #state: HostState;

  constructor(
    config: HostIommuConfig,
    readonly memory: HostVirtualMemory,
  ) {
    if (!isPowerOfTwo(config.pageSize)) {
      throw new ConfigError(
        'pageSize',
        `0x${config.pageSize.toString(16)} is not a power of two`,
        'use 4K or 64K, the ppc64 host page sizes',
        { subject: 'host IOMMU options' },
      );
    }
    this.config = Object.freeze({ ...config });
    this.#state = new HostState(this.config, memory);
  }

  checkExtension(type: number): number {
    if (type === VFIO_SPAPR_TCE_IOMMU) return 1;
    if (type === VFIO_SPAPR_TCE_v2_IOMMU) return this.config.type === 'v2' ? 1 : 0;
    return 0;
  }

  openContainer(): SimulatedSpaprTceContainer {
    return new SimulatedSpaprTceContainer(this.#state);
  }

  injectFault(op: HostIommuOp, errno: number, count = 1): void {
    this.#state.injectFault(op, errno, count);
  }

  /** Bytes on the process's locked-memory account (regions, tables, v1 ENABLE). */
  get lockedBytes(): bigint {
    return BigInt(this.#state.lockedPages) << BigInt(this.#state.hostPageShift);
  }

  /** Every pre-registered region of the process, including ones pinned without an owner. */
  regions(): (HostRegisteredRegion & { refs: number; mapped: number })[] {
    return this.#state.regions.map((r) => ({
      vaddr: r.vaddr,
      size: r.size,
      pageShift: r.pageShift,
      refs: r.refs,
      mapped: r.mapped,
    }));
  }
}

/** One container fd of the simulated host. */
export class SimulatedSpaprTceContainer implements HostIommuContainer {
  readonly #host: HostState;
  readonly #groups: string[] = [];
  #type: HostIommuType | undefined;
  #closed = false;
  /** v1: between ENABLE and DISABLE; v2: from the first successful REGISTER on. */
  #enabled = false;
  #enabledPages = 0;
  /** The container is bound to the process (the kernel records its mm on first use). */
  #hasMm = false;
  #defaultPending = false;
  #slots: (Window | undefined)[] = [];
  /** The existing windows, for lookups on the DMA path. */
  #active: Window[] = [];
  readonly #regions = new Set<Region>();

  /** Containers come from SimulatedSpaprTceHost.openContainer(). */
  constructor(host: HostState) {
    this.#host = host;
  }

  get type(): HostIommuType | undefined {
    return this.#type;
  }

  /** True once close() ran; every ioctl then answers -EBADF. */
  get closed(): boolean {
    return this.#closed;
  }

  attachGroup(group: string): number {
    if (this.#closed) return -EBADF;
    const fault = this.#host.takeFault('attachGroup');
    if (fault) return fault;
    const owner = this.#host.groups.get(group);
    if (owner === this) return -Errno.EBUSY;
    // VFIO core lets a group belong to one container only.
    if (owner) return -Errno.EINVAL;
    if (this.#type === 'v1' && this.#groups.length > 0) return -Errno.EBUSY;
    this.#groups.push(group);
    this.#host.groups.set(group, this);
    return 0;
  }

  detachGroup(group: string): number {
    if (this.#closed) return -EBADF;
    const at = this.#groups.indexOf(group);
    if (at < 0) return -Errno.EINVAL;
    this.#groups.splice(at, 1);
    this.#host.groups.delete(group);
    // VFIO core releases the IOMMU driver with the last group: the container is back to unset.
    if (this.#groups.length === 0) this.#release();
    return 0;
  }

  setIommu(type: number): number {
    if (this.#closed) return -EBADF;
    const fault = this.#host.takeFault('setIommu');
    if (fault) return fault;
    if (type !== VFIO_SPAPR_TCE_IOMMU && type !== VFIO_SPAPR_TCE_v2_IOMMU) return -Errno.EINVAL;
    // VFIO core: one SET_IOMMU per container, and only a container holding a group may set it.
    if (this.#type !== undefined || this.#groups.length === 0) return -Errno.EINVAL;
    const v2 = type === VFIO_SPAPR_TCE_v2_IOMMU;
    const config = this.#host.config;
    // The groups are attached to the driver now; a platform without dynamic windows refuses v2.
    if (v2 && (config.type === 'v1' || config.maxWindows <= 0)) return -Errno.EINVAL;
    if (!v2 && this.#groups.length > 1) return -Errno.EBUSY;
    this.#type = v2 ? 'v2' : 'v1';
    if (v2) {
      this.#slots = new Array(this.#host.slots).fill(undefined);
      this.#defaultPending = true;
    } else {
      this.#slots = [undefined];
      this.#setupV1Window();
    }
    return 0;
  }

  getInfo(argsz: number = ARGSZ.info): { ret: number; info?: HostIommuInfo } {
    if (this.#closed) return { ret: -EBADF };
    const fault = this.#host.takeFault('getInfo');
    if (fault) return { ret: fault };
    if (this.#groups.length === 0) return { ret: -Errno.ENXIO };
    if (!this.#type) return { ret: -Errno.EINVAL };
    if (!(argsz >= ARGSZ.infoMin)) return { ret: -Errno.EINVAL };
    const config = this.#host.config;
    const v2 = this.#type === 'v2';
    // flags sits in the first 16 bytes, so it is written whatever argsz; ddw only when it fits.
    const ddw =
      v2 && argsz >= ARGSZ.info
        ? { pgSizes: config.pgSizes, maxDynamicWindowsSupported: config.maxWindows, levels: config.levels }
        : { pgSizes: 0n, maxDynamicWindowsSupported: 0, levels: 0 };
    return {
      ret: 0,
      info: {
        flags: v2 ? VFIO_IOMMU_SPAPR_INFO_DDW : 0,
        // Both are u32 fields of the structure.
        dma32WindowStart: BigInt.asUintN(32, config.dma32WindowStart),
        dma32WindowSize: BigInt.asUintN(32, config.dma32WindowSize),
        ddw,
      },
    };
  }

  enable(): number {
    if (this.#closed) return -EBADF;
    const fault = this.#host.takeFault('enable');
    if (fault) return fault;
    if (!this.#type) return this.#groups.length === 0 ? -Errno.ENODEV : -Errno.EINVAL;
    if (this.#type === 'v2') return -Errno.ENOTTY;
    if (this.#enabled) return -Errno.EBUSY;
    if (this.#groups.length === 0) return -Errno.ENODEV;
    const size = this.#host.config.dma32WindowSize;
    if (size === 0n) return -Errno.EPERM;
    this.#hasMm = true;
    // v1 pins on every MAP, so ENABLE books the worst case up front: the whole 32-bit window.
    const pages = Number(size >> BigInt(this.#host.hostPageShift));
    const ret = this.#host.account(pages);
    if (ret) return ret;
    this.#enabled = true;
    this.#enabledPages = pages;
    return 0;
  }

  disable(): number {
    if (this.#closed) return -EBADF;
    const fault = this.#host.takeFault('disable');
    if (fault) return fault;
    if (!this.#type) return -Errno.EINVAL;
    if (this.#type === 'v2') return -Errno.ENOTTY;
    // The TCEs stay: Linux only stops MAP/UNMAP and returns the booked pages.
    this.#disableV1();
    return 0;
  }

  registerMemory(req: { vaddr: bigint; size: bigint; flags?: number; argsz?: number }): number {
    if (this.#closed) return -EBADF;
    const fault = this.#host.takeFault('registerMemory');
    if (fault) return fault;
    if (!this.#type) return -Errno.EINVAL;
    if (this.#type === 'v1') return -Errno.ENOTTY;
    this.#hasMm = true;
    if ((req.argsz ?? ARGSZ.registerMemory) < ARGSZ.registerMemory || (req.flags ?? 0) !== 0) {
      return -Errno.EINVAL;
    }
    const host = this.#host;
    const vaddr = u64(req.vaddr);
    const size = u64(req.size);
    const mask = host.hostPageSize - 1n;
    if ((vaddr & mask) !== 0n || (size & mask) !== 0n || vaddr + size >= U64_LIMIT) return -Errno.EINVAL;
    // Linux would try to allocate an empty region; there is nothing sensible to register.
    if (size === 0n) return -Errno.EINVAL;

    const existing = host.exactRegion(vaddr, size);
    if (existing) {
      if (existing.owners.has(this)) return -Errno.EBUSY;
      existing.refs++;
      this.#adopt(existing);
      return 0;
    }
    const pages = Number(size >> BigInt(host.hostPageShift));
    const accounted = host.account(pages);
    if (accounted) return accounted;
    const blocks = host.backing(vaddr, size);
    if (!blocks) {
      host.unaccount(pages);
      return -Errno.EFAULT;
    }
    // Only after pinning does the kernel look for a clash with another region.
    const end = vaddr + size;
    if (host.regions.some((r) => r.vaddr < end && vaddr < r.end)) {
      host.unaccount(pages);
      return -Errno.EINVAL;
    }
    this.#adopt(host.addRegion(vaddr, size, host.regionPageShift(vaddr, size, blocks), pages));
    return 0;
  }

  unregisterMemory(req: { vaddr: bigint; size: bigint; flags?: number; argsz?: number }): number {
    if (this.#closed) return -EBADF;
    const fault = this.#host.takeFault('unregisterMemory');
    if (fault) return fault;
    if (!this.#type) return -Errno.EINVAL;
    if (this.#type === 'v1') return -Errno.ENOTTY;
    if (!this.#hasMm) return -Errno.EPERM;
    if ((req.argsz ?? ARGSZ.registerMemory) < ARGSZ.registerMemory || (req.flags ?? 0) !== 0) {
      return -Errno.EINVAL;
    }
    const host = this.#host;
    const vaddr = u64(req.vaddr);
    const size = u64(req.size);
    const mask = host.hostPageSize - 1n;
    if ((vaddr & mask) !== 0n || (size & mask) !== 0n) return -Errno.EINVAL;
    const region = host.exactRegion(vaddr, size);
    if (!region?.owners.has(this)) return -Errno.ENOENT;
    if (host.config.unregisterWhileMapped === 'ebusy') {
      const ret = host.putRegion(region);
      if (ret) return ret;
      this.#drop(region);
      return 0;
    }
    // 2018+ kernels hold an extra reference across the container's put, so the put never sees the
    // last reference and the final put's -EBUSY is dropped: the region may stay pinned, ownerless.
    this.#drop(region);
    region.refs++;
    host.putRegion(region);
    host.putRegion(region);
    return 0;
  }

  createWindow(req: TceCreateRequest): TceCreateResult {
    if (this.#closed) return { ret: -EBADF };
    const fault = this.#host.takeFault('createWindow');
    if (fault) return { ret: fault };
    if (!this.#type) return { ret: this.#groups.length === 0 ? -Errno.ENXIO : -Errno.EINVAL };
    if (this.#type === 'v1') return { ret: -Errno.ENOTTY };
    this.#hasMm = true;
    if (this.#groups.length === 0) return { ret: -Errno.ENXIO };
    if ((req.argsz ?? ARGSZ.tceCreate) < ARGSZ.tceCreate || (req.flags ?? 0) !== 0) {
      return { ret: -Errno.EINVAL };
    }
    const pending = this.#createPendingDefault();
    if (pending) return { ret: pending };
    const made = this.#createWindow(req.pageShift, u64(req.windowSize), req.levels, false);
    if (typeof made === 'number') return { ret: made };
    return { ret: 0, startAddr: made.start };
  }

  removeWindow(req: { startAddr: bigint; flags?: number; argsz?: number }): number {
    if (this.#closed) return -EBADF;
    const fault = this.#host.takeFault('removeWindow');
    if (fault) return fault;
    if (!this.#type) return this.#groups.length === 0 ? -Errno.ENXIO : -Errno.EINVAL;
    if (this.#type === 'v1') return -Errno.ENOTTY;
    this.#hasMm = true;
    if (this.#groups.length === 0) return -Errno.ENXIO;
    if ((req.argsz ?? ARGSZ.tceRemove) < ARGSZ.tceRemove || (req.flags ?? 0) !== 0) return -Errno.EINVAL;
    const startAddr = u64(req.startAddr);
    // QEMU removes the default window before creating its own; nothing exists yet to tear down.
    if (this.#defaultPending && startAddr === 0n) {
      this.#defaultPending = false;
      return 0;
    }
    const window = this.#findWindow(startAddr);
    if (!window) return -Errno.EINVAL;
    this.#freeWindow(window);
    return 0;
  }

  mapDma(req: { iova: bigint; size: bigint; vaddr: bigint; flags: number; argsz?: number }): number {
    if (this.#closed) return -EBADF;
    const fault = this.#host.takeFault('mapDma');
    if (fault) return fault;
    if (!this.#type) return -Errno.EINVAL;
    if (!this.#enabled) return -Errno.EPERM;
    if ((req.argsz ?? ARGSZ.dmaMap) < ARGSZ.dmaMap) return -Errno.EINVAL;
    const flags = req.flags;
    if ((flags & ~MAP_FLAGS) !== 0) return -Errno.EINVAL;
    if (this.#defaultPending) {
      const pending = this.#createPendingDefault();
      if (pending) return pending;
    }
    const iova = u64(req.iova);
    const window = this.#findWindow(iova);
    if (!window) return -Errno.ENXIO;
    const size = u64(req.size);
    const vaddr = u64(req.vaddr);
    const mask = window.pageSize - 1n;
    if ((size & mask) !== 0n || (vaddr & mask) !== 0n) return -Errno.EINVAL;
    if ((flags & MAP_FLAGS) === 0) return -Errno.EINVAL;
    // Linux ORs two -EINVAL checks together, so a misaligned iova yields the truth value 1.
    if ((iova & mask) !== 0n) return 1;
    // Linux range-checks only the first page and overruns the table; refuse the whole request.
    if (iova + size > window.end) return -Errno.EINVAL;
    // PowerNV sets R with W: a device allowed to write may always read.
    const perm = (flags & VFIO_DMA_MAP_FLAG_WRITE) !== 0 ? TCE_READ | TCE_WRITE : TCE_READ;
    const first = Number((iova - window.start) >> window.shift);
    const pages = Number(size >> window.shift);
    return this.#type === 'v2'
      ? this.#mapV2(window, first, pages, vaddr, perm)
      : this.#mapV1(window, first, pages, vaddr, perm);
  }

  unmapDma(req: { iova: bigint; size: bigint; flags?: number; argsz?: number }): number {
    if (this.#closed) return -EBADF;
    const fault = this.#host.takeFault('unmapDma');
    if (fault) return fault;
    if (!this.#type) return -Errno.EINVAL;
    if (!this.#enabled) return -Errno.EPERM;
    if ((req.argsz ?? ARGSZ.dmaUnmap) < ARGSZ.dmaUnmap || (req.flags ?? 0) !== 0) return -Errno.EINVAL;
    if (this.#defaultPending) {
      const pending = this.#createPendingDefault();
      if (pending) return pending;
    }
    const iova = u64(req.iova);
    const window = this.#findWindow(iova);
    if (!window) return -Errno.ENXIO;
    const size = u64(req.size);
    const mask = window.pageSize - 1n;
    if ((size & mask) !== 0n) return -Errno.EINVAL;
    if ((iova & mask) !== 0n) return 1;
    // As for MAP: Linux checks the first page only; an emulator refuses to run past the table.
    if (iova + size > window.end) return -Errno.EINVAL;
    this.#clear(window, Number((iova - window.start) >> window.shift), Number(size >> window.shift));
    return 0;
  }

  /**
   * The batch path QEMU's container model takes for a run of guest TCEs: page i is what mapDma
   * (or unmapDma, for flags 0) of one page at iova + i * pageSize would do. It stops, with no side
   * effect on that page, at the first page whose call would not return 0, so the caller can make
   * that call itself and get the error exactly. It also stops, conservatively, while the default
   * window is pending, and at a v2 page that spans two registered regions or a v1 page that spans
   * two memory blocks: the caller's mapDma handles those.
   */
  mapPages(iova: bigint, pageSize: bigint, count: number, vaddr: Float64Array, flags: Uint8Array): number {
    if (this.#closed || !this.#type || !this.#enabled) return 0;
    if (!(pageSize > 0n && pageSize <= 1n << 52n)) return 0;
    const host = this.#host;
    const v2 = this.#type === 'v2';
    const bytes = Number(pageSize);
    let window: Window | undefined;
    let leftInWindow = 0;
    let index = 0;
    let perPage = 0;
    let region: Region | undefined;
    let regionLo = 0;
    let regionHi = -1;
    for (let i = 0; i < count; i++) {
      const f = flags[i]!;
      if (host.faultDue(f === 0 ? 'unmapDma' : 'mapDma')) return i;
      if ((f & ~MAP_FLAGS) !== 0) return i;
      // The ioctl creating the default window may still fail later on; leave it to the caller.
      if (this.#defaultPending) return i;
      if (leftInWindow === 0) {
        const at = iova + BigInt(i) * pageSize;
        window = this.#findWindow(at);
        if (!window) return i;
        const mask = window.pageSize - 1n;
        if ((pageSize & mask) !== 0n || (at & mask) !== 0n) return i;
        leftInWindow = Number((window.end - at) / pageSize);
        if (leftInWindow === 0) return i;
        index = Number((at - window.start) >> window.shift);
        perPage = Number(pageSize >> window.shift);
      }
      const w = window!;
      if (f === 0) {
        this.#clear(w, index, perPage);
      } else {
        const v = vaddr[i]!;
        if (v % w.pageBytes !== 0) return i;
        const perm = (f & VFIO_DMA_MAP_FLAG_WRITE) !== 0 ? TCE_READ | TCE_WRITE : TCE_READ;
        if (v2) {
          if (!(v >= regionLo && v + bytes <= regionHi)) {
            region = host.regionHolding(BigInt(v), pageSize);
            if (!region) return i;
            // Numbers are exact only below 2^53; a region reaching past that is looked up each time.
            const exact = region.end <= 1n << 53n;
            regionLo = exact ? Number(region.vaddr) : 0;
            regionHi = exact ? Number(region.end) : -1;
          }
          if (region!.pageShift < w.info.pageShift) return i;
          this.#fill(w, index, perPage, v / w.pageBytes, perm, region!.id);
        } else {
          const hit = host.memory.find(BigInt(v), pageSize);
          if (!hit || hit.block.pageSize < w.pageSize) return i;
          this.#fill(w, index, perPage, v / w.pageBytes, perm, 0);
        }
      }
      index += perPage;
      leftInWindow--;
    }
    return count;
  }

  /**
   * The windows' tables as the host's KVM drives them (book3s_64_vio.c): a map needs the page in a
   * region pre-registered by this process with pages at least as large, else it is H_TOO_HARD (a v1
   * container registers nothing, so KVM can never map for it: "v1 is handled via ioctl()"). A map
   * replaces the entry as iommu_tce_xchg does; write implies read, as PowerNV sets it.
   */
  kvmTables(): HostKvmTable[] {
    return this.#active.map((window) => {
      let table = this.#kvmTables.get(window);
      if (!table) {
        table = this.#kvmTable(window);
        this.#kvmTables.set(window, table);
      }
      return table;
    });
  }

  readonly #kvmTables = new WeakMap<Window, HostKvmTable>();

  #kvmTable(window: Window): HostKvmTable {
    const host = this.#host;
    const live = () => this.#active.includes(window);
    const mappable = (ua: bigint): number | undefined => {
      if (this.#type !== 'v2') return undefined;
      const region = host.regionHolding(ua, window.pageSize);
      return region && region.pageShift >= window.info.pageShift ? region.id : undefined;
    };
    const index = (iova: bigint) => Number((iova - window.start) >> window.shift);
    return {
      startAddr: window.start,
      pageShift: window.info.pageShift,
      span: window.info.tableSpan,
      canMap: (ua) => mappable(ua) !== undefined,
      map: (iova, ua, write) => {
        const region = mappable(ua);
        if (region === undefined) return 'H_TOO_HARD';
        // A table KVM still holds after its window was removed is no longer in the hardware.
        if (!live() || !window.contains(iova)) return 0;
        const perm = write ? TCE_READ | TCE_WRITE : TCE_READ;
        this.#fill(window, index(iova), 1, Number(ua >> window.shift), perm, region);
        return 0;
      },
      unmap: (iova) => {
        if (live() && window.contains(iova)) this.#clear(window, index(iova), 1);
        return 0;
      },
    };
  }

  close(): void {
    if (this.#closed) return;
    for (const group of this.#groups) this.#host.groups.delete(group);
    this.#groups.length = 0;
    this.#release();
    this.#closed = true;
  }

  translate(iova: bigint): HostMapping | undefined {
    for (const window of this.#active) {
      if (!window.contains(iova)) continue;
      const index = Number((iova - window.start) >> window.shift);
      const chunkIndex = Math.floor(index / CHUNK_ENTRIES);
      const chunk = window.chunks.get(chunkIndex);
      if (!chunk) return undefined;
      const at = index - chunkIndex * CHUNK_ENTRIES;
      const perm = chunk.perm[at]!;
      if (perm === 0) return undefined;
      return mappingAt(window, chunk, index, at);
    }
    return undefined;
  }

  mappings(): HostMapping[] {
    const out: HostMapping[] = [];
    const windows = [...this.#active].sort((a, b) => (a.start < b.start ? -1 : 1));
    for (const window of windows) {
      const keys = [...window.chunks.keys()].sort((a, b) => a - b);
      for (const key of keys) {
        const chunk = window.chunks.get(key)!;
        for (let at = 0; at < CHUNK_ENTRIES; at++) {
          const perm = chunk.perm[at]!;
          if (perm === 0) continue;
          out.push(mappingAt(window, chunk, key * CHUNK_ENTRIES + at, at));
        }
      }
    }
    return out;
  }

  windows(): SimulatedHostWindow[] {
    return this.#slots.filter((w): w is Window => w !== undefined).map((w) => w.info);
  }

  registered(): HostRegisteredRegion[] {
    return [...this.#regions]
      .sort((a, b) => (a.vaddr < b.vaddr ? -1 : 1))
      .map((r) => ({ vaddr: r.vaddr, size: r.size, pageShift: r.pageShift }));
  }

  /** Whether the default window of a v2 container is still waiting for its first use. */
  get defaultWindowPending(): boolean {
    return this.#defaultPending;
  }

  /** What the TCE storage costs: mapped entries, resident chunks and their bytes. */
  storage(): { mapped: number; chunks: number; bytes: number } {
    let mapped = 0;
    let chunks = 0;
    for (const window of this.#active) {
      mapped += window.mapped;
      chunks += window.chunks.size;
    }
    return { mapped, chunks, bytes: chunks * CHUNK_ENTRIES * (8 + 1 + 4) };
  }

  #adopt(region: Region): void {
    region.owners.add(this);
    this.#regions.add(region);
    this.#enabled = true;
  }

  #drop(region: Region): void {
    region.owners.delete(this);
    this.#regions.delete(region);
  }

  #findWindow(iova: bigint): Window | undefined {
    for (const window of this.#active) if (window.contains(iova)) return window;
    return undefined;
  }

  #freeSlot(): number {
    return this.#slots.indexOf(undefined);
  }

  #install(window: Window): void {
    this.#slots[window.info.slot] = window;
    this.#active = this.#slots.filter((w): w is Window => w !== undefined);
  }

  #createPendingDefault(): number {
    if (!this.#defaultPending) return 0;
    const made = this.#createWindow(
      DEFAULT_WINDOW_PAGE_SHIFT,
      u64(this.#host.config.dma32WindowSize),
      1,
      true,
    );
    if (typeof made === 'number') return made;
    this.#defaultPending = false;
    return 0;
  }

  /** TCE_CREATE from the slot search on, in the kernel's order of checks. */
  #createWindow(pageShift: number, windowSize: bigint, levels: number, isDefault: boolean): Window | number {
    const host = this.#host;
    const config = host.config;
    const slot = this.#freeSlot();
    if (slot < 0) return -Errno.ENOSPC;
    if (!Number.isInteger(pageShift) || pageShift < 0 || pageShift > 63) return -Errno.EINVAL;
    if ((config.pgSizes & (1n << BigInt(pageShift))) === 0n) return -Errno.EINVAL;
    if (!Number.isInteger(levels) || levels < 1 || levels > config.levels || !isPowerOfTwo(windowSize)) {
      return -Errno.EINVAL;
    }
    const windowShift = log2(windowSize);
    // Linux would shift by a negative count here; QEMU never asks for a window below one page.
    if (windowShift < pageShift) return -Errno.EINVAL;
    const geometry = tableGeometry(pageShift, windowShift, levels, host.hostPageShift);
    const lockedPages = Number(geometry.accountedBytes >> BigInt(host.hostPageShift));
    const accounted = host.account(lockedPages);
    if (accounted) return accounted;
    if ((geometry.levelShift - 3) * levels + pageShift >= TABLE_BITS_LIMIT) {
      host.unaccount(lockedPages);
      return -Errno.EINVAL;
    }
    // The table is at least one host page of TCEs and the platform takes the window's extent from
    // the table, not from the request: the it_size quirk (see SimulatedHostWindow.tableSpan).
    const tableEntriesShift = Math.max(geometry.entriesShift, host.hostPageShift - 3);
    const info: SimulatedHostWindow = Object.freeze({
      slot,
      startAddr: slot === 0 ? config.dma32WindowStart : POWERNV_SLOT1_ADDR,
      size: windowSize,
      pageShift,
      levels,
      isDefault,
      tableSpan: 1n << BigInt(tableEntriesShift + pageShift),
    });
    const window = new Window(info, lockedPages);
    this.#install(window);
    return window;
  }

  /** v1 uses the platform's own 32-bit table: it is there as soon as the type is set. */
  #setupV1Window(): void {
    const config = this.#host.config;
    const size = config.dma32WindowSize;
    if (size < 1n << BigInt(DEFAULT_WINDOW_PAGE_SHIFT)) return;
    const info: SimulatedHostWindow = Object.freeze({
      slot: 0,
      startAddr: config.dma32WindowStart,
      size,
      pageShift: DEFAULT_WINDOW_PAGE_SHIFT,
      levels: 1,
      isDefault: true,
      tableSpan: (size >> BigInt(DEFAULT_WINDOW_PAGE_SHIFT)) << BigInt(DEFAULT_WINDOW_PAGE_SHIFT),
    });
    this.#install(new Window(info, 0));
  }

  #freeWindow(window: Window): void {
    this.#clear(window, 0, Number(window.info.tableSpan >> window.shift));
    this.#slots[window.info.slot] = undefined;
    this.#active = this.#slots.filter((w): w is Window => w !== undefined);
    this.#host.unaccount(window.lockedPages);
  }

  #disableV1(): void {
    if (!this.#enabled) return;
    this.#enabled = false;
    this.#host.unaccount(this.#enabledPages);
    this.#enabledPages = 0;
  }

  /** What the driver's release does: every TCE, window, booking and region reference goes. */
  #release(): void {
    for (const window of this.#active) this.#freeWindow(window);
    this.#slots = [];
    this.#active = [];
    if (this.#type === 'v1') this.#disableV1();
    // A region another container still maps from stays pinned without an owner, as in Linux.
    for (const region of [...this.#regions]) {
      this.#drop(region);
      this.#host.putRegion(region);
    }
    this.#type = undefined;
    this.#enabled = false;
    this.#enabledPages = 0;
    this.#hasMm = false;
    this.#defaultPending = false;
  }

  #chunk(window: Window, chunkIndex: number): TceChunk {
    // Maps touch the same chunk page after page: remember the last one.
    if (this.#lastChunkWindow === window && this.#lastChunkIndex === chunkIndex) {
      return this.#lastChunk!;
    }
    let chunk = window.chunks.get(chunkIndex);
    if (!chunk) {
      chunk = new TceChunk();
      window.chunks.set(chunkIndex, chunk);
    }
    this.#lastChunkWindow = window;
    this.#lastChunkIndex = chunkIndex;
    this.#lastChunk = chunk;
    return chunk;
  }

  #lastChunkWindow: Window | undefined;
  #lastChunkIndex = -1;
  #lastChunk: TceChunk | undefined;

  /**
   * Fills `count` entries from `first` with consecutive pages from `vpn`. The old entries are
   * replaced without complaint (no -EEXIST), their regions losing a mapping each.
   */
  #fill(window: Window, first: number, count: number, vpn: number, perm: number, regionId: number): void {
    const regions = this.#host.regionById;
    let chunkIndex = -1;
    let chunk: TceChunk | undefined;
    for (let k = 0; k < count; k++) {
      const index = first + k;
      const ci = Math.floor(index / CHUNK_ENTRIES);
      if (ci !== chunkIndex) {
        chunkIndex = ci;
        chunk = this.#chunk(window, ci);
      }
      const c = chunk!;
      const at = index - ci * CHUNK_ENTRIES;
      if (c.perm[at] !== 0) {
        const old = c.region[at]!;
        if (old !== 0) regions.get(old)!.mapped--;
      } else {
        c.used++;
        window.mapped++;
      }
      c.vpn[at] = vpn + k;
      c.perm[at] = perm;
      c.region[at] = regionId;
    }
    if (regionId !== 0) regions.get(regionId)!.mapped += count;
  }

  /** Per page, the IOMMU page must lie in one registered region that can back pages this large. */
  #mapV2(window: Window, first: number, pages: number, vaddr: bigint, perm: number): number {
    const host = this.#host;
    const pageShift = window.info.pageShift;
    const baseVpn = Number(vaddr >> window.shift);
    let done = 0;
    while (done < pages) {
      const ua = vaddr + (BigInt(done) << window.shift);
      const region = host.regionHolding(ua, window.pageSize);
      if (!region || region.pageShift < pageShift) {
        this.#clear(window, first, done);
        return -Errno.EINVAL;
      }
      const inRegion = Number((region.end - ua) >> window.shift);
      const run = Math.min(pages - done, inRegion);
      this.#fill(window, first + done, run, baseVpn + done, perm, region.id);
      done += run;
    }
    return 0;
  }

  /** Per page, v1 pins the host page under vaddr, which must hold the whole IOMMU page. */
  #mapV1(window: Window, first: number, pages: number, vaddr: bigint, perm: number): number {
    const memory = this.#host.memory;
    const baseVpn = Number(vaddr >> window.shift);
    let done = 0;
    while (done < pages) {
      const ua = vaddr + (BigInt(done) << window.shift);
      const hit = memory.find(ua);
      let ret = 0;
      if (!hit) ret = -Errno.EFAULT;
      else if (hit.block.pageSize < window.pageSize) ret = -Errno.EPERM;
      const inBlock = hit ? Number((hit.block.vaddr + hit.block.size - ua) >> window.shift) : 0;
      if (ret === 0 && inBlock === 0) ret = -Errno.EFAULT;
      if (ret) {
        this.#clear(window, first, done);
        return ret;
      }
      const run = Math.min(pages - done, inBlock);
      this.#fill(window, first + done, run, baseVpn + done, perm, 0);
      done += run;
    }
    return 0;
  }

  /** Empties `count` entries from `first`, visiting only resident chunks. */
  #clear(window: Window, first: number, count: number): void {
    if (count <= 0 || window.chunks.size === 0) return;
    const last = first + count - 1;
    const firstChunk = Math.floor(first / CHUNK_ENTRIES);
    const lastChunk = Math.floor(last / CHUNK_ENTRIES);
    const keys =
      lastChunk - firstChunk + 1 > window.chunks.size
        ? [...window.chunks.keys()].filter((k) => k >= firstChunk && k <= lastChunk)
        : Array.from({ length: lastChunk - firstChunk + 1 }, (_, i) => firstChunk + i);
    const regions = this.#host.regionById;
    for (const key of keys) {
      const chunk = window.chunks.get(key);
      if (!chunk) continue;
      const base = key * CHUNK_ENTRIES;
      const from = Math.max(first, base) - base;
      const to = Math.min(last, base + CHUNK_ENTRIES - 1) - base;
      for (let at = from; at <= to && chunk.used > 0; at++) {
        if (chunk.perm[at] === 0) continue;
        const region = chunk.region[at]!;
        if (region !== 0) regions.get(region)!.mapped--;
        chunk.perm[at] = 0;
        chunk.region[at] = 0;
        chunk.vpn[at] = 0;
        chunk.used--;
        window.mapped--;
      }
      if (chunk.used === 0) {
        window.chunks.delete(key);
        if (this.#lastChunk === chunk) this.#lastChunkWindow = undefined;
      }
    }
  }
}

/** The hardware's view of entry `index` of `window` (at `at` in its chunk), which maps something. */
function mappingAt(window: Window, chunk: TceChunk, index: number, at: number): HostMapping {
  const perm = chunk.perm[at]!;
  return {
    iova: window.start + (BigInt(index) << window.shift),
    size: window.pageSize,
    vaddr: BigInt(chunk.vpn[at]!) << window.shift,
    read: (perm & TCE_READ) !== 0,
    write: (perm & TCE_WRITE) !== 0,
  };
}

import { ConfigError } from '@ddw/machine';
import { MAX_RUN_STRIDE, RunTable, runEntryHalves } from '@ddw/memory';
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

/** Entries per RunTable of a window: a larger table (2^34 4K pages of a 64 TiB window) has several. */
const PART_SHIFT = 30;
const PART = 2 ** PART_SHIFT;
const TWO_32 = 0x1_0000_0000;
/** Host addresses the run path carries as numbers stay below this (exact doubles). */
const EXACT_LIMIT = 2 ** 53;

/** Hardware TCE permission bits (TCE_PCI_READ, TCE_PCI_WRITE). */
const TCE_READ = 1;
const TCE_WRITE = 2;
const TCE_PERM = TCE_READ | TCE_WRITE;
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

const halves = new Uint32Array(2);

/**
 * The TCEs of one window as the v2 driver keeps its userspace copy of them (it_userspace): entry =
 * userspace address of the IOMMU page | permission bits (TCE_READ, TCE_WRITE), 0 when empty. The
 * addresses are page aligned, so consecutive pages form one progression whose stride is the page
 * size and are stored as one run (RunTable, from @ddw/memory): a window costs what was written into
 * it, not its size. v1 keeps the same entries (its pins are per page, as the kernel's).
 */
class TceStore {
  /** RunTables of PART entries each, made on first write. */
  readonly #parts: (RunTable | undefined)[];

  constructor(readonly entries: number) {
    this.#parts = new Array<RunTable | undefined>(Math.ceil(entries / PART)).fill(undefined);
  }

  /** Whether entry `index` holds something; if so its halves are left in `halves`. */
  read(index: number): boolean {
    const pi = Math.floor(index / PART);
    const part = this.#parts[pi];
    if (!part) return false;
    halves[0] = part.high(index - pi * PART);
    halves[1] = part.low(index - pi * PART);
    return halves[0] !== 0 || halves[1] !== 0;
  }

  /** The raw entry `index` (0n when empty). */
  get(index: number): bigint {
    const pi = Math.floor(index / PART);
    return this.#parts[pi]?.get(index - pi * PART) ?? 0n;
  }

  /** Entries first + k (k < count) become (high:low) + k * stride; a zero run clears. */
  setRun(first: number, count: number, high: number, low: number, stride: number): void {
    let at = first;
    let left = count;
    let h = high;
    let l = low;
    while (left > 0) {
      const pi = Math.floor(at / PART);
      const off = at - pi * PART;
      const n = Math.min(left, PART - off);
      let part = this.#parts[pi];
      if (!part && !(h === 0 && l === 0 && stride === 0)) {
        part = new RunTable(Math.min(PART, this.entries - pi * PART));
        this.#parts[pi] = part;
      }
      part?.setRun(off, n, h, l, stride);
      left -= n;
      at += n;
      if (left > 0 && stride !== 0) {
        runEntryHalves(h, l, stride, n, halves);
        h = halves[0]!;
        l = halves[1]!;
      }
    }
  }

  clearRange(first: number, count: number): void {
    this.setRun(first, count, 0, 0, 0);
  }

  /** Entries first + k (k < count) become the big-endian u64 values at view[8k] (RunTable.setList). */
  setList(first: number, count: number, view: DataView): void {
    let at = first;
    let done = 0;
    while (done < count) {
      const pi = Math.floor(at / PART);
      const off = at - pi * PART;
      const n = Math.min(count - done, PART - off);
      let part = this.#parts[pi];
      if (!part) {
        part = new RunTable(Math.min(PART, this.entries - pi * PART));
        this.#parts[pi] = part;
      }
      part.setList(off, n, view, done * 8);
      done += n;
      at += n;
    }
  }

  clear(): void {
    this.#parts.fill(undefined);
  }

  /** The non-zero entries of [from, to) as runs, in index order (see RunTable.forEachRun). */
  forEachRun(
    fn: (first: number, count: number, high: number, low: number, stride: number) => void,
    from = 0,
    to = this.entries,
  ): void {
    const start = Math.max(0, from);
    const end = Math.min(this.entries, to);
    for (let pi = Math.floor(start / PART); pi * PART < end; pi++) {
      const part = this.#parts[pi];
      if (!part) continue;
      const base = pi * PART;
      part.forEachRun(
        (first, count, high, low, stride) => fn(base + first, count, high, low, stride),
        Math.max(start - base, 0),
        Math.min(end - base, PART),
      );
    }
  }

  /** How many entries of [from, to) are non-zero. */
  countNonZero(from: number, to: number): number {
    const start = Math.max(0, from);
    const end = Math.min(this.entries, to);
    let n = 0;
    for (let pi = Math.floor(start / PART); pi * PART < end; pi++) {
      const base = pi * PART;
      n += this.#parts[pi]?.countNonZero(Math.max(start - base, 0), Math.min(end - base, PART)) ?? 0;
    }
    return n;
  }

  get denseChunks(): number {
    let n = 0;
    for (const part of this.#parts) n += part?.denseChunks ?? 0;
    return n;
  }

  get residentBytes(): number {
    let n = 0;
    for (const part of this.#parts) n += part?.residentBytes ?? 0;
    return n;
  }
}

/** The entry (ua | perm) of a page at host address `ua` (exact, below 2^53) into `halves`. */
function entryHalves(ua: number, perm: number): void {
  const high = Math.floor(ua / TWO_32);
  halves[0] = high;
  halves[1] = ua - high * TWO_32 + perm;
}

/** The entry (ua | perm) of a page at host address `ua` into `halves`. */
function entryHalvesBig(ua: bigint, perm: number): void {
  const v = ua | BigInt(perm);
  halves[0] = Number(v >> 32n);
  halves[1] = Number(v & 0xffffffffn);
}

/**
 * How many of `n` pages of `size` bytes from host address `v`, page k at v + k * step * size, end
 * at or below `end` (all page addresses exact).
 */
function pagesBelow(v: number, size: number, step: number, end: number, n: number): number {
  if (v + size > end) return 0;
  if (step === 0) return n;
  return Math.min(n, Math.floor((end - size - v) / (step * size)) + 1);
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
  readonly table: TceStore;
  readonly end: bigint;
  readonly shift: bigint;
  readonly pageSize: bigint;
  /** The page size as a number (exact: a power of two). */
  readonly pageBytes: number;
  /** pageSize - 1: the offset bits of a bus address within a page. */
  readonly mask: bigint;
  /** Non-empty entries. */
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
    this.mask = this.pageSize - 1n;
    this.table = new TceStore(Number(info.tableSpan >> this.shift));
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
  readonly vaddr: bigint;
  readonly size: bigint;
  readonly end: bigint;
  readonly pageShift: number;
  readonly lockedPages: number;
  /** Containers referencing it, plus one while it is pinned without an owner. */
  refs: number;
  readonly owners: Set<SimulatedSpaprTceContainer>;
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
  #lastHit: Region | undefined;
  /** The windows of every v2 container: their entries are what keeps a region busy. */
  readonly v2Windows = new Set<Window>();
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
      vaddr,
      size,
      end: vaddr + size,
      pageShift,
      lockedPages,
      refs: 1,
      owners: new Set(),
    };
    this.regions.push(region);
    this.regions.sort((a, b) => (a.vaddr < b.vaddr ? -1 : 1));
    return region;
  }

  /**
   * Drops one reference. The last one frees the region unless TCEs still point into it: then the
   * reference stays and -EBUSY says so (whether a caller passes that on depends on the kernel era).
   */
  putRegion(region: Region): number {
    region.refs--;
    if (region.refs > 0) return 0;
    if (this.mappedIn(region) > 0) {
      region.refs = 1;
      return -Errno.EBUSY;
    }
    this.regions.splice(this.regions.indexOf(region), 1);
    if (this.#lastHit === region) this.#lastHit = undefined;
    this.unaccount(region.lockedPages);
    return 0;
  }

  /**
   * TCEs, in any container, that point into the region: the kernel finds a TCE's region again from
   * its userspace address (mm_iommu_lookup). Counted when asked (an unregister, a report) by the
   * tables' runs rather than kept up to date on every map, which would cost on the DMA path.
   */
  mappedIn(region: Region): number {
    let n = 0;
    for (const window of this.v2Windows) {
      window.table.forEachRun((_first, count, high, low, stride) => {
        n += entriesIn(region, high, low, stride, count);
      });
    }
    return n;
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
      mapped: this.#state.mappedIn(r),
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
   * A run of pages, each exactly as its own MAP_DMA (UNMAP_DMA for flags 0) of one page would be
   * (see HostIommuContainer.mapRun): the checks that do not depend on the page are made once, as
   * the first page's ioctl makes them (creating the pending default window, as that ioctl would),
   * then the pages are taken by groups lying in one window and one registered region (v1: one
   * host memory block), each group written as runs. A page spanning two regions or blocks is
   * checked by mapDma's own walk. Stops before the first page whose ioctl would not return 0.
   */
  mapRun(
    iova: bigint,
    pageShift: number,
    count: number,
    vaddr: number | Float64Array,
    step: number,
    flags: number,
  ): number {
    if (!(Number.isSafeInteger(count) && count >= 1) || this.#closed) return 0;
    const list = typeof vaddr === 'number' ? undefined : vaddr;
    if (list !== undefined && list.length < count) return 0;
    const host = this.#host;
    const unmap = flags === 0;
    if (host.faultDue(unmap ? 'unmapDma' : 'mapDma')) return 0;
    if (!this.#type || !this.#enabled || (flags & ~MAP_FLAGS) !== 0) return 0;
    if (!(Number.isInteger(pageShift) && pageShift >= 0 && pageShift <= 52)) return 0;
    if (list === undefined && !(Number.isSafeInteger(vaddr) && (vaddr as number) >= 0)) return 0;
    if (!(Number.isSafeInteger(step) && step >= 0)) return 0;
    if (this.#defaultPending && this.#createPendingDefault() !== 0) return 0;
    const v2 = this.#type === 'v2';
    const size = 2 ** pageShift;
    const sizeBig = BigInt(size);
    const stepBytes = step * size;
    const perm = (flags & VFIO_DMA_MAP_FLAG_WRITE) !== 0 ? TCE_READ | TCE_WRITE : TCE_READ;
    const base = u64(iova);
    let done = 0;
    // The window of page `done` and its index there, carried from page to page while they stay in
    // that window (bus addresses above 2^53 are only handled as BigInt when the window changes).
    let window: Window | undefined;
    let first = 0;
    let perPage = 1;
    let lastRegion: Region | undefined;
    let lastLo = 0;
    let lastHi = 0;
    while (done < count) {
      if (window === undefined || first + perPage > window.table.entries) {
        const at = done === 0 ? base : u64(base + BigInt(done) * sizeBig);
        window = this.#findWindow(at);
        if (!window) return done;
        // Page-size and window-end checks in numbers: the index of a window page is exact.
        if (size % window.pageBytes !== 0 || (at & window.mask) !== 0n) return done;
        first = Number((at - window.start) >> window.shift);
        perPage = size / window.pageBytes;
        if (first + perPage > window.table.entries) return done;
      }
      const entries = window.table.entries;
      const v = list === undefined ? (vaddr as number) + done * stepBytes : list[done]!;
      if (!unmap && (!Number.isSafeInteger(v) || v < 0 || v % window.pageBytes !== 0 || !(v < EXACT_LIMIT)))
        return done;
      if (list !== undefined && v2 && perPage === 1 && !unmap) {
        // An irregular list: the pages from `done` that lie in this window and in regions that take
        // them are written in one go (the old entries uncounted by runs, the new ones copied in).
        const taken = this.#mapList(window, first, list, done, count, perm);
        if (taken > 0) {
          done += taken;
          first += taken;
          continue;
        }
      }
      const n = Math.min(list === undefined ? count - done : 1, Math.floor((entries - first) / perPage));
      if (unmap) {
        this.#clear(window, first, n * perPage);
        done += n;
        first += n * perPage;
        continue;
      }
      // The pages from `done` lying wholly in one region (v2) or block (v1) that takes them.
      let fit = 0;
      let region: Region | undefined;
      if (v2) {
        // The last region found, by its bounds as numbers: a list's pages mostly share one.
        if (lastRegion !== undefined && v >= lastLo && v + size <= lastHi) region = lastRegion;
        else {
          region = host.regionHolding(BigInt(v), window.pageSize);
          if (region) {
            lastRegion = region;
            lastLo = Number(region.vaddr);
            lastHi = Math.min(Number(region.end), EXACT_LIMIT);
          }
        }
        if (region && region.pageShift >= window.info.pageShift) {
          fit = pagesBelow(v, size, step, Math.min(Number(region.end), EXACT_LIMIT), n);
        }
      } else {
        const hit = host.memory.find(BigInt(v));
        if (hit && hit.block.pageSize >= window.pageSize) {
          fit = pagesBelow(v, size, step, Math.min(Number(hit.block.vaddr + hit.block.size), EXACT_LIMIT), n);
        }
      }
      if (fit === 0) {
        // Outside every usable region or block, or running past this one: mapDma's walk decides.
        const ua = BigInt(v);
        if (!(v2 ? this.#v2Fits(window, ua, perPage) : this.#v1Fits(window, ua, perPage))) return done;
        if (v2) this.#mapV2(window, first, perPage, ua, perm);
        else this.#mapV1(window, first, perPage, ua, perm);
        done++;
        first += perPage;
        continue;
      }
      if (step === 1 || fit === 1) {
        // Consecutive memory: one run of entries a window page apart.
        entryHalves(v, perm);
        this.#write(window, first, fit * perPage, halves[0]!, halves[1]!, window.pageBytes);
      } else if (perPage === 1) {
        entryHalves(v, perm);
        this.#write(window, first, fit, halves[0]!, halves[1]!, stepBytes);
      } else {
        for (let k = 0; k < fit; k++) {
          entryHalves(v + k * stepBytes, perm);
          this.#write(window, first + k * perPage, perPage, halves[0]!, halves[1]!, window.pageBytes);
        }
      }
      done += fit;
      first += fit * perPage;
    }
    return count;
  }

  /**
   * Pages `from`.. of a list map (v2, one window page each) from window index `first`, for as long
   * as each lies in the window, is page aligned and lies in a registered region that can back it:
   * exactly what their MAP_DMA calls would do, in one write. Returns how many it took.
   */
  #mapList(
    window: Window,
    first: number,
    list: Float64Array,
    from: number,
    count: number,
    perm: number,
  ): number {
    const host = this.#host;
    const size = window.pageBytes;
    const room = Math.min(count - from, window.table.entries - first);
    if (this.#listBytes.length < room * 8) this.#listBytes = new Uint8Array(room * 8);
    const view = new DataView(this.#listBytes.buffer);
    let region: Region | undefined;
    let lo = 0;
    let hi = 0;
    // Page alignment checked on the entry's 32-bit halves (a float modulo per page costs more).
    const lowMask = size >= TWO_32 ? -1 : size - 1;
    const highMask = size > TWO_32 ? size / TWO_32 - 1 : 0;
    let m = 0;
    for (; m < room; m++) {
      const v = list[from + m]!;
      if (!(Number.isSafeInteger(v) && v >= 0 && v < EXACT_LIMIT)) break;
      entryHalves(v, 0);
      if (((halves[0]! & highMask) | (halves[1]! & lowMask)) !== 0) break;
      if (region === undefined || !(v >= lo && v + size <= hi)) {
        region = host.regionHolding(BigInt(v), window.pageSize);
        if (!region || region.pageShift < window.info.pageShift) break;
        lo = Number(region.vaddr);
        hi = Math.min(Number(region.end), EXACT_LIMIT);
        if (!(v >= lo && v + size <= hi)) break;
      }
      view.setUint32(m * 8, halves[0]!);
      view.setUint32(m * 8 + 4, halves[1]! + perm);
    }
    if (m === 0) return 0;
    if (window.mapped > 0) this.#uncount(window, first, m);
    window.table.setList(first, m, view);
    window.mapped += m;
    return m;
  }

  #listBytes = new Uint8Array(4096);

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
    const mappable = (ua: bigint): Region | undefined => {
      if (this.#type !== 'v2') return undefined;
      const region = host.regionHolding(ua, window.pageSize);
      return region && region.pageShift >= window.info.pageShift ? region : undefined;
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
        entryHalvesBig(ua & ~(window.pageSize - 1n), write ? TCE_READ | TCE_WRITE : TCE_READ);
        this.#write(window, index(iova), 1, halves[0]!, halves[1]!, 0);
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
      const entry = window.table.get(index);
      if (entry === 0n) return undefined;
      const perm = Number(entry & BigInt(TCE_PERM));
      return {
        iova: window.start + (BigInt(index) << window.shift),
        size: window.pageSize,
        vaddr: entry - BigInt(perm),
        read: (perm & TCE_READ) !== 0,
        write: (perm & TCE_WRITE) !== 0,
      };
    }
    return undefined;
  }

  mappings(): HostMapping[] {
    const out: HostMapping[] = [];
    this.forEachMapping((iova, pages, size, vaddr, read, write, step) => {
      const advance = BigInt(step) * size;
      for (let k = 0; k < pages; k++) {
        out.push({ iova: iova + BigInt(k) * size, size, vaddr: vaddr + BigInt(k) * advance, read, write });
      }
    });
    return out;
  }

  mappedCount(): number {
    let n = 0;
    for (const window of this.#active) n += window.mapped;
    return n;
  }

  forEachMapping(fn: HostMappingRunVisitor): void {
    const windows = [...this.#active].sort((a, b) => (a.start < b.start ? -1 : 1));
    for (const window of windows) visitMappings(window, fn);
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

  /**
   * What the TCE storage costs: mapped entries, chunks of 2^14 entries stored one slot per entry
   * (irregular writes), and an estimate of the bytes the entries take.
   */
  storage(): { mapped: number; denseChunks: number; bytes: number } {
    let mapped = 0;
    let denseChunks = 0;
    let bytes = 0;
    for (const window of this.#active) {
      mapped += window.mapped;
      denseChunks += window.table.denseChunks;
      bytes += window.table.residentBytes;
    }
    return { mapped, denseChunks, bytes };
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
    if (this.#type === 'v2') this.#host.v2Windows.add(window);
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
    this.#host.v2Windows.delete(window);
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

  /**
   * Writes `count` entries from `first`: entry first + k = (high:low) + k * stride (page-aligned
   * userspace address | permission). The old entries are replaced without complaint (no -EEXIST).
   */
  #write(window: Window, first: number, count: number, high: number, low: number, stride: number): void {
    if (count <= 0) return;
    if (window.mapped > 0) this.#uncount(window, first, count);
    if (stride < MAX_RUN_STRIDE) window.table.setRun(first, count, high, low, stride);
    else {
      // Pages of 64 GiB or more: a progression the run table does not take, entry by entry.
      for (let k = 0; k < count; k++) {
        runEntryHalves(high, low, stride, k, halves);
        window.table.setRun(first + k, 1, halves[0]!, halves[1]!, 0);
      }
    }
    window.mapped += count;
  }

  /** The non-empty entries of [first, first + count) stop counting. */
  #uncount(window: Window, first: number, count: number): void {
    window.mapped -= window.table.countNonZero(first, first + count);
  }

  /** Whether MAP_DMA of `pages` window pages from `ua` would succeed (v2, the checks of #mapV2). */
  #v2Fits(window: Window, ua: bigint, pages: number): boolean {
    let done = 0;
    while (done < pages) {
      const at = ua + (BigInt(done) << window.shift);
      const region = this.#host.regionHolding(at, window.pageSize);
      if (!region || region.pageShift < window.info.pageShift) return false;
      done += Number((region.end - at) >> window.shift);
    }
    return true;
  }

  /** Whether MAP_DMA of `pages` window pages from `ua` would succeed (v1, the checks of #mapV1). */
  #v1Fits(window: Window, ua: bigint, pages: number): boolean {
    let done = 0;
    while (done < pages) {
      const at = ua + (BigInt(done) << window.shift);
      const hit = this.#host.memory.find(at);
      if (!hit || hit.block.pageSize < window.pageSize) return false;
      const inBlock = Number((hit.block.vaddr + hit.block.size - at) >> window.shift);
      if (inBlock === 0) return false;
      done += inBlock;
    }
    return true;
  }

  /** Per page, the IOMMU page must lie in one registered region that can back pages this large. */
  #mapV2(window: Window, first: number, pages: number, vaddr: bigint, perm: number): number {
    const host = this.#host;
    const pageShift = window.info.pageShift;
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
      entryHalvesBig(ua, perm);
      this.#write(window, first + done, run, halves[0]!, halves[1]!, window.pageBytes);
      done += run;
    }
    return 0;
  }

  /** Per page, v1 pins the host page under vaddr, which must hold the whole IOMMU page. */
  #mapV1(window: Window, first: number, pages: number, vaddr: bigint, perm: number): number {
    const memory = this.#host.memory;
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
      entryHalvesBig(ua, perm);
      this.#write(window, first + done, run, halves[0]!, halves[1]!, window.pageBytes);
      done += run;
    }
    return 0;
  }

  /** Empties `count` entries from `first`: costs per run of entries, not per entry. */
  #clear(window: Window, first: number, count: number): void {
    if (count <= 0 || window.mapped === 0) return;
    this.#uncount(window, first, count);
    window.table.clearRange(first, count);
  }
}

/**
 * How many of the `n` entries (high:low) + k * stride point into `region`. A region's bounds are
 * aligned to every page it maps, so an entry (address | permission) lies in the region exactly
 * when its page does: the entries in a region are an interval of k.
 */
function entriesIn(region: Region, high: number, low: number, stride: number, n: number): number {
  const v0 = (BigInt(high) << 32n) | BigInt(low);
  const last = v0 + BigInt(stride) * BigInt(n - 1);
  if (region.end <= v0 || region.vaddr > last) return 0;
  if (stride === 0) return n;
  const s = BigInt(stride);
  const from = region.vaddr <= v0 ? 0n : (region.vaddr - v0 + s - 1n) / s;
  const to = region.end > last ? BigInt(n) : (region.end - v0 + s - 1n) / s;
  return to > from ? Number(to - from) : 0;
}

/**
 * The mapped pages of `window` as maximal runs (see forEachMapping): the table's runs read as
 * pages (a run whose stride is not whole pages changes permission: page by page), joined while
 * they continue one progression with one permission.
 */
function visitMappings(window: Window, fn: HostMappingRunVisitor): void {
  const size = window.pageSize;
  const pageBytes = window.pageBytes;
  let pIova = 0n;
  let pPages = 0;
  let pVaddr = 0n;
  let pPerm = 0;
  let pStep = 1;
  const flush = () => {
    if (pPages > 0)
      fn(pIova, pPages, size, pVaddr, (pPerm & TCE_READ) !== 0, (pPerm & TCE_WRITE) !== 0, pStep);
  };
  const add = (index: number, pages: number, vaddr: bigint, perm: number, step: number) => {
    const iova = window.start + (BigInt(index) << window.shift);
    if (pPages > 0 && perm === pPerm && pIova + BigInt(pPages) * size === iova) {
      const next = pVaddr + BigInt(pPages - 1) * BigInt(pStep) * size;
      let joined = -1;
      if (pPages > 1 && pages > 1) joined = step === pStep ? step : -1;
      else if (pPages > 1) joined = pStep;
      else if (pages > 1) joined = step;
      else if (vaddr >= pVaddr && (vaddr - pVaddr) % size === 0n) joined = Number((vaddr - pVaddr) / size);
      if (joined >= 0 && next + BigInt(joined) * size === vaddr) {
        pPages += pages;
        pStep = joined;
        return;
      }
    }
    flush();
    pIova = iova;
    pPages = pages;
    pVaddr = vaddr;
    pPerm = perm;
    pStep = pages > 1 ? step : 1;
  };
  const page = new Uint32Array(2);
  window.table.forEachRun((first, count, high, low, stride) => {
    if (count === 1 || stride % pageBytes === 0) {
      const perm = low & TCE_PERM;
      const vaddr = ((BigInt(high) << 32n) | BigInt(low)) - BigInt(perm);
      add(first, count, vaddr, perm, count === 1 ? 1 : stride / pageBytes);
      return;
    }
    for (let k = 0; k < count; k++) {
      runEntryHalves(high, low, stride, k, page);
      const perm = page[1]! & TCE_PERM;
      add(first + k, 1, ((BigInt(page[0]!) << 32n) | BigInt(page[1]!)) - BigInt(perm), perm, 1);
    }
  });
  flush();
}

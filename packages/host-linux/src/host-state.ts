import { Errno, type HostIommuConfig, type HostMemoryBlock, type HostVirtualMemory } from '@ddw/vfio-common';
import { log2, lowestSetBit } from './bit-math.js';
import { InjectedFaults } from './injected-faults.js';
import { MAX_SLOTS } from './powernv-table.js';
import type { SimulatedSpaprTceContainer } from './simulated-container.js';
import type { TceWindow } from './tce-window.js';

/** A pre-registered region of the process (mm_iommu_table_group_mem_t). */
export interface RegisteredRegion {
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
export class HostState {
  readonly hostPageShift: number;
  readonly hostPageSize: bigint;
  readonly slots: number;
  lockedPages = 0;
  readonly #limitPages: number | undefined;
  /** Sorted by vaddr; they never overlap. */
  readonly regions: RegisteredRegion[] = [];
  #lastHit: RegisteredRegion | undefined;
  /** The windows of every v2 container: their entries are what keeps a region busy. */
  readonly v2Windows = new Set<TceWindow>();
  readonly groups = new Map<string, SimulatedSpaprTceContainer>();
  /** Faults injected for the next calls of an ioctl, on any container. */
  readonly faults = new InjectedFaults();

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

  exactRegion(vaddr: bigint, size: bigint): RegisteredRegion | undefined {
    return this.regions.find((r) => r.vaddr === vaddr && r.size === size);
  }

  /** The region holding all of [ua, ua + len), searched across the whole process. */
  regionHolding(ua: bigint, len: bigint): RegisteredRegion | undefined {
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

  addRegion(vaddr: bigint, size: bigint, pageShift: number, lockedPages: number): RegisteredRegion {
    const region: RegisteredRegion = {
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
  putRegion(region: RegisteredRegion): number {
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
  mappedIn(region: RegisteredRegion): number {
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
 * How many of the `n` entries (high:low) + k * stride point into `region`. A region's bounds are
 * aligned to every page it maps, so an entry (address | permission) lies in the region exactly
 * when its page does: the entries in a region are an interval of k.
 */
function entriesIn(region: RegisteredRegion, high: number, low: number, stride: number, n: number): number {
  const v0 = (BigInt(high) << 32n) | BigInt(low);
  const last = v0 + BigInt(stride) * BigInt(n - 1);
  if (region.end <= v0 || region.vaddr > last) return 0;
  if (stride === 0) return n;
  const s = BigInt(stride);
  const from = region.vaddr <= v0 ? 0n : (region.vaddr - v0 + s - 1n) / s;
  const to = region.end > last ? BigInt(n) : (region.end - v0 + s - 1n) / s;
  return to > from ? Number(to - from) : 0;
}

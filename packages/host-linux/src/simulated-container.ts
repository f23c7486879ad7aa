import { UINT64_SPAN } from '@ddw/memory';
import {
  Errno,
  type HostIommuContainer,
  type HostIommuInfo,
  type HostIommuType,
  type HostKvmTable,
  type HostMapping,
  type HostMappingRunVisitor,
  type HostRegisteredRegion,
  type TceCreateRequest,
  type TceCreateResult,
  VFIO_DMA_MAP_FLAG_READ,
  VFIO_DMA_MAP_FLAG_WRITE,
  VFIO_IOMMU_SPAPR_INFO_DDW,
  VFIO_SPAPR_TCE_IOMMU,
  VFIO_SPAPR_TCE_v2_IOMMU,
} from '@ddw/vfio-common';
import { u64 } from './bit-math.js';
import {
  blocksFit,
  type EntryListBuffer,
  EXACT_LIMIT,
  mapFromBlocks,
  mapFromRegions,
  mapListFromRegions,
  pagesBelow,
  regionsFit,
} from './dma-map.js';
import type { HostState, RegisteredRegion } from './host-state.js';
import { kvmTableView } from './kvm-table.js';
import { createPowernvWindow, DEFAULT_WINDOW_PAGE_SHIFT, powernvV1Window } from './powernv-table.js';
import { entryHalves, halves, TCE_READ, TCE_WRITE } from './tce-store.js';
import { type SimulatedHostWindow, type TceWindow, visitMappings } from './tce-window.js';

/** A closed container fd; Errno has no EBADF because no ioctl of a live container returns it. */
export const EBADF = 9;

/** The structure sizes Linux checks argsz against. */
export const ARGSZ = {
  info: 32,
  infoMin: 16,
  registerMemory: 24,
  tceCreate: 40,
  tceRemove: 16,
  dmaMap: 32,
  dmaUnmap: 24,
} as const;

const MAP_FLAGS = VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE;

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
  #slots: (TceWindow | undefined)[] = [];
  /** The existing windows, for lookups on the DMA path. */
  #active: TceWindow[] = [];
  readonly #regions = new Set<RegisteredRegion>();
  /** The KVM view of each window, made once (KVM holds on to it). */
  readonly #kvmTables = new WeakMap<TceWindow, HostKvmTable>();
  /** Where an irregular list's entries are assembled before they are written in one go. */
  readonly #listBuffer: EntryListBuffer = { bytes: new Uint8Array(4096) };

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
    const fault = this.#host.faults.take('attachGroup');
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
    const fault = this.#host.faults.take('setIommu');
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
      const window = powernvV1Window(this.#host.config);
      if (window) this.#install(window);
    }
    return 0;
  }

  getInfo(argsz: number = ARGSZ.info): { ret: number; info?: HostIommuInfo } {
    if (this.#closed) return { ret: -EBADF };
    const fault = this.#host.faults.take('getInfo');
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
    const fault = this.#host.faults.take('enable');
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
    const fault = this.#host.faults.take('disable');
    if (fault) return fault;
    if (!this.#type) return -Errno.EINVAL;
    if (this.#type === 'v2') return -Errno.ENOTTY;
    // The TCEs stay: Linux only stops MAP/UNMAP and returns the booked pages.
    this.#disableV1();
    return 0;
  }

  registerMemory(req: { vaddr: bigint; size: bigint; flags?: number; argsz?: number }): number {
    if (this.#closed) return -EBADF;
    const fault = this.#host.faults.take('registerMemory');
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
    if ((vaddr & mask) !== 0n || (size & mask) !== 0n || vaddr + size >= UINT64_SPAN) return -Errno.EINVAL;
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
    const fault = this.#host.faults.take('unregisterMemory');
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
    const fault = this.#host.faults.take('createWindow');
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
    const fault = this.#host.faults.take('removeWindow');
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
    const fault = this.#host.faults.take('mapDma');
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
      ? mapFromRegions(this.#host, window, first, pages, vaddr, perm)
      : mapFromBlocks(this.#host, window, first, pages, vaddr, perm);
  }

  unmapDma(req: { iova: bigint; size: bigint; flags?: number; argsz?: number }): number {
    if (this.#closed) return -EBADF;
    const fault = this.#host.faults.take('unmapDma');
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
    window.clear(Number((iova - window.start) >> window.shift), Number(size >> window.shift));
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
    if (host.faults.due(unmap ? 'unmapDma' : 'mapDma')) return 0;
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
    let window: TceWindow | undefined;
    let first = 0;
    let perPage = 1;
    let lastRegion: RegisteredRegion | undefined;
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
        const taken = mapListFromRegions(host, window, first, list, done, count, perm, this.#listBuffer);
        if (taken > 0) {
          done += taken;
          first += taken;
          continue;
        }
      }
      const n = Math.min(list === undefined ? count - done : 1, Math.floor((entries - first) / perPage));
      if (unmap) {
        window.clear(first, n * perPage);
        done += n;
        first += n * perPage;
        continue;
      }
      // The pages from `done` lying wholly in one region (v2) or block (v1) that takes them.
      let fit = 0;
      let region: RegisteredRegion | undefined;
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
        if (!(v2 ? regionsFit(host, window, ua, perPage) : blocksFit(host, window, ua, perPage))) return done;
        if (v2) mapFromRegions(host, window, first, perPage, ua, perm);
        else mapFromBlocks(host, window, first, perPage, ua, perm);
        done++;
        first += perPage;
        continue;
      }
      if (step === 1 || fit === 1) {
        // Consecutive memory: one run of entries a window page apart.
        entryHalves(v, perm);
        window.write(first, fit * perPage, halves[0]!, halves[1]!, window.pageBytes);
      } else if (perPage === 1) {
        entryHalves(v, perm);
        window.write(first, fit, halves[0]!, halves[1]!, stepBytes);
      } else {
        for (let k = 0; k < fit; k++) {
          entryHalves(v + k * stepBytes, perm);
          window.write(first + k * perPage, perPage, halves[0]!, halves[1]!, window.pageBytes);
        }
      }
      done += fit;
      first += fit * perPage;
    }
    return count;
  }

  /** The windows' tables as the host's KVM drives them (see kvmTableView). */
  kvmTables(): HostKvmTable[] {
    return this.#active.map((window) => {
      let table = this.#kvmTables.get(window);
      if (!table) {
        table = kvmTableView(
          this.#host,
          window,
          () => this.#active.includes(window),
          () => this.#type === 'v2',
        );
        this.#kvmTables.set(window, table);
      }
      return table;
    });
  }

  close(): void {
    if (this.#closed) return;
    for (const group of this.#groups) this.#host.groups.delete(group);
    this.#groups.length = 0;
    this.#release();
    this.#closed = true;
  }

  translate(iova: bigint): HostMapping | undefined {
    for (const window of this.#active) if (window.contains(iova)) return window.translate(iova);
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
    return this.#slots.filter((w): w is TceWindow => w !== undefined).map((w) => w.info);
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

  #adopt(region: RegisteredRegion): void {
    region.owners.add(this);
    this.#regions.add(region);
    this.#enabled = true;
  }

  #drop(region: RegisteredRegion): void {
    region.owners.delete(this);
    this.#regions.delete(region);
  }

  #findWindow(iova: bigint): TceWindow | undefined {
    for (const window of this.#active) if (window.contains(iova)) return window;
    return undefined;
  }

  #freeSlot(): number {
    return this.#slots.indexOf(undefined);
  }

  #install(window: TceWindow): void {
    if (this.#type === 'v2') this.#host.v2Windows.add(window);
    this.#slots[window.info.slot] = window;
    this.#active = this.#slots.filter((w): w is TceWindow => w !== undefined);
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

  /** TCE_CREATE from the slot search on: the window is installed when the platform makes it. */
  #createWindow(
    pageShift: number,
    windowSize: bigint,
    levels: number,
    isDefault: boolean,
  ): TceWindow | number {
    const made = createPowernvWindow(this.#host, this.#freeSlot(), pageShift, windowSize, levels, isDefault);
    if (typeof made !== 'number') this.#install(made);
    return made;
  }

  #freeWindow(window: TceWindow): void {
    window.clear(0, Number(window.info.tableSpan >> window.shift));
    this.#slots[window.info.slot] = undefined;
    this.#active = this.#slots.filter((w): w is TceWindow => w !== undefined);
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
}

import { formatHex } from '@ddw/machine';
import {
  type AddressSpace,
  batchAddress,
  batchAddressNumber,
  type FlatView,
  IOMMUAccessFlags,
  type IOMMUBatch,
  IOMMUBatchBuffer,
  type IOMMUTLBEntry,
  RamRegion,
  UINT64_MAX,
} from '@ddw/memory';
import type { VfioContainer, VfioContainerDeps } from './container.js';
import type { GuestIommu } from './container-listener.js';
import {
  type HostIommuContainer,
  VFIO_DMA_MAP_FLAG_READ,
  VFIO_DMA_MAP_FLAG_WRITE,
} from './host/host-iommu.js';
import { strerror } from './traces.js';

/**
 * The container's side of its guest IOMMU notifiers (QEMU's vfio_iommu_map_notify): every MAP or
 * UNMAP of a guest window becomes host maps and unmaps, by runs where the pages allow it and page
 * by page, with QEMU's checks and messages, where they do not. One per container: it keeps the
 * buffers and the guest RAM range it last looked up between notifications.
 */
export class VfioMapNotifier {
  readonly #container: VfioContainer;
  readonly #fd: HostIommuContainer;
  readonly #deps: VfioContainerDeps;

  constructor(container: VfioContainer) {
    this.#container = container;
    this.#fd = container.fd;
    this.#deps = container.deps;
  }

  /**
   * vfio_iommu_map_notify for one entry: the entry as a batch of one page, into mapNotifyBatch. An
   * entry no batch can carry (a mask that is not a page, an unaligned address) goes to mapPage,
   * which is what mapNotifyBatch does with any page it cannot take by runs.
   */
  mapNotify(giommu: GuestIommu, entry: IOMMUTLBEntry): void {
    const mask = entry.addrMask;
    const size = mask + 1n;
    const shift = size.toString(2).length - 1;
    const aligned =
      (size & mask) === 0n &&
      size <= 1n << 52n &&
      (entry.iova & mask) === 0n &&
      entry.iova >= 0n &&
      entry.iova >> BigInt(shift) < 1n << 53n &&
      (entry.perm === IOMMUAccessFlags.NONE ||
        ((entry.translatedAddr & mask) === 0n &&
          entry.translatedAddr >= 0n &&
          entry.translatedAddr <= UINT64_MAX));
    if (!aligned || this.#oneBusy) {
      this.mapPage(giommu, entry.targetAs, entry.iova, mask, entry.perm, entry.translatedAddr);
      return;
    }
    const addr = entry.perm === IOMMUAccessFlags.NONE ? 0n : entry.translatedAddr;
    const one = this.#one.reset(entry.targetAs, shift);
    one.push(
      Number(entry.iova >> BigInt(shift)),
      1,
      Number(addr >> 32n),
      Number(addr & 0xffffffffn),
      0,
      entry.perm,
    );
    this.#oneBusy = true;
    try {
      this.mapNotifyBatch(giommu, one);
    } finally {
      this.#oneBusy = false;
    }
  }

  readonly #one = new IOMMUBatchBuffer();
  #oneBusy = false;

  /**
   * vfio_iommu_map_notify for every page of `batch`, in order: what QEMU does page by page, done by
   * segments. A segment's pages inside one guest RAM range become host addresses by arithmetic
   * (the range's guest-to-host offset) and reach the host as one run (HostIommuContainer.mapRun),
   * which stops before any page whose ioctl would not succeed; that page, and any page that is not
   * plain RAM, goes through mapPage, QEMU's per-page code with its messages and EBUSY retry. The
   * vfio_iommu_map_notify trace, when enabled, is emitted page by page from the same loop.
   */
  mapNotifyBatch(giommu: GuestIommu, batch: IOMMUBatch): void {
    const shift = batch.pageShift;
    const pageBytes = 2 ** shift;
    const shiftBig = BigInt(shift);
    const trace = this.#deps.traces.mapNotify;
    // QEMU checks the target per page; a batch has one, so a wrong one fails every page alike.
    const runs = batch.targetAs === this.#deps.systemMemory && shift <= 52;
    for (let s = 0; s < batch.length; s++) {
      const index = batch.index[s]!;
      const count = batch.pages[s]!;
      const perm = batch.perm[s]! as IOMMUAccessFlags;
      const step = batch.step[s]!;
      if (runs && count === 1 && perm !== IOMMUAccessFlags.NONE && s + 1 < batch.length) {
        // Single pages of an irregular list: one host call for the stretch of them.
        const taken = this.mapPageList(giommu, batch, s, pageBytes);
        if (taken > 0) {
          s += taken - 1;
          continue;
        }
      }
      let k = 0;
      while (k < count) {
        const planned = runs ? this.plannedRun(batch, s, k, pageBytes) : 0;
        if (planned > 0) {
          const iova = (BigInt(index + k) << shiftBig) + giommu.iommuOffset;
          const applied =
            perm === IOMMUAccessFlags.NONE
              ? this.#fd.mapRun(iova, shift, planned, 0, 0, 0)
              : this.#fd.mapRun(iova, shift, planned, this.#plan.vaddr, step, this.#plan.flags);
          if (trace.enabled) {
            const mask = BigInt(pageBytes - 1);
            for (let p = 0; p < applied; p++) {
              const at = iova + (BigInt(p) << shiftBig);
              trace.emit(perm === IOMMUAccessFlags.NONE ? 'UNMAP' : 'MAP', at, at + mask);
            }
          }
          k += applied;
          if (applied === planned) continue;
        }
        this.mapPage(
          giommu,
          batch.targetAs,
          BigInt(index + k) << shiftBig,
          (1n << shiftBig) - 1n,
          perm,
          perm === IOMMUAccessFlags.NONE ? 0n : batchAddress(batch, s, k),
        );
        k++;
      }
    }
  }

  /**
   * Consecutive one-page segments from `s` (pages next to each other, one permission, each plain
   * RAM with the same map flags), as an irregular TCE list gives them: their host addresses go to
   * the host in one mapRun, exactly the per-page maps in order. Returns how many segments it took
   * (the page the host stopped at included, taken by mapPage), or 0 for fewer than two.
   */
  private mapPageList(giommu: GuestIommu, batch: IOMMUBatch, s: number, pageBytes: number): number {
    const perm = batch.perm[s]!;
    const index = batch.index[s]!;
    let n = 0;
    let flags = -1;
    for (let t = s; t < batch.length; t++) {
      if (batch.pages[t] !== 1 || batch.perm[t] !== perm || batch.index[t] !== index + n) break;
      if (this.plannedRun(batch, t, 0, pageBytes) !== 1) break;
      if (flags === -1) flags = this.#plan.flags;
      else if (this.#plan.flags !== flags) break;
      if (n === this.#list.length) {
        const longer = new Float64Array(this.#list.length * 2);
        longer.set(this.#list);
        this.#list = longer;
      }
      this.#list[n++] = this.#plan.vaddr;
    }
    if (n < 2) return 0;
    const shiftBig = BigInt(batch.pageShift);
    const iova = (BigInt(index) << shiftBig) + giommu.iommuOffset;
    const applied = this.#fd.mapRun(iova, batch.pageShift, n, this.#list, 0, flags);
    const trace = this.#deps.traces.mapNotify;
    if (trace.enabled) {
      const mask = BigInt(pageBytes - 1);
      for (let p = 0; p < applied; p++) {
        const at = iova + (BigInt(p) << shiftBig);
        trace.emit('MAP', at, at + mask);
      }
    }
    if (applied >= n) return n;
    this.mapPage(
      giommu,
      batch.targetAs,
      BigInt(index + applied) << shiftBig,
      (1n << shiftBig) - 1n,
      perm as IOMMUAccessFlags,
      batchAddress(batch, s + applied, 0),
    );
    return applied + 1;
  }

  #list = new Float64Array(512);

  /**
   * How many pages of segment `s` from page `k` the host can be asked for as one run: for an
   * unmap, all of them; for a map, those whose guest page lies wholly in the guest RAM range of
   * page k, with their host address and map flags left in #plan. 0 when page k is not plain RAM
   * (or its address is not an exact number): mapPage then takes it.
   */
  private plannedRun(batch: IOMMUBatch, s: number, k: number, pageBytes: number): number {
    const left = batch.pages[s]! - k;
    const perm = batch.perm[s]!;
    if (perm === IOMMUAccessFlags.NONE) return left;
    // Below 2^53 the page's guest address is exact as a number.
    if (batch.addrHigh[s]! >= 0x200000) return 0;
    const a = batchAddressNumber(batch, s, k);
    let ram = this.#ram;
    if (!(ram.view === this.#deps.systemMemory.flatView && a >= ram.lo && a + pageBytes <= ram.hi)) {
      if (!(a < 2 ** 53 && this.cacheRam(a))) return 0;
      ram = this.#ram;
      // A page running past the end of RAM is QEMU's granularity error: mapPage reports it.
      if (!(a >= ram.lo && a + pageBytes <= ram.hi)) return 0;
    }
    const step = batch.step[s]!;
    const n =
      step === 0 ? left : Math.min(left, Math.floor((ram.hi - pageBytes - a) / (step * pageBytes)) + 1);
    const writable = (perm & IOMMUAccessFlags.WO) !== 0;
    this.#plan.vaddr = a + ram.toHost;
    this.#plan.flags = VFIO_DMA_MAP_FLAG_READ | (writable && !ram.readonly ? VFIO_DMA_MAP_FLAG_WRITE : 0);
    return n;
  }

  /**
   * Guest RAM around `addr` (a page start, exact) as one range of the current view with a fixed
   * guest-to-host offset, what translate() + memory_region_get_ram_ptr give for every page of it;
   * false when it is not plain RAM with a host pointer. Kept until the view changes.
   */
  private cacheRam(addr: number): boolean {
    const view = this.#deps.systemMemory.flatView;
    const fr = view.lookup(BigInt(addr));
    if (!fr || !(fr.mr instanceof RamRegion)) return false;
    const base = this.#deps.hostPointer(fr.mr, BigInt(addr) - fr.start + fr.offsetInRegion);
    if (base === undefined) return false;
    if (!(base >= 0n && base < 1n << 53n)) return false;
    const toHost = Number(base) - addr;
    // Host addresses must stay exact numbers too: the range is cut to where they are.
    const lo = Math.max(Number(fr.start), -toHost);
    const hi = Math.min(Number(fr.end < 1n << 53n ? fr.end : 1n << 53n), 2 ** 53 - Math.max(toHost, 0));
    if (hi <= addr) return false;
    this.#ram = { view, lo, hi, toHost, readonly: fr.readonly };
    return true;
  }

  #ram: { view: FlatView | undefined; lo: number; hi: number; toHost: number; readonly: boolean } = {
    view: undefined,
    lo: 0,
    hi: 0,
    toHost: 0,
    readonly: false,
  };
  readonly #plan = { vaddr: 0, flags: 0 };

  /**
   * vfio_iommu_map_notify's body for one page (region-relative `iova`, page mask `addrMask`): the
   * trace, the target check, translation to RAM, and the host map or unmap with QEMU's messages.
   */
  private mapPage(
    giommu: GuestIommu,
    targetAs: AddressSpace | null,
    entryIova: bigint,
    addrMask: bigint,
    perm: IOMMUAccessFlags,
    translatedAddr: bigint,
  ): void {
    const iova = entryIova + giommu.iommuOffset;
    const t = this.#deps.traces.mapNotify;
    if (t.enabled) t.emit(perm === IOMMUAccessFlags.NONE ? 'UNMAP' : 'MAP', iova, iova + addrMask);
    if (targetAs !== this.#deps.systemMemory) {
      this.#container.report(`Wrong target AS "${targetAs?.name ?? 'none'}", only system memory is allowed`);
      return;
    }
    const size = addrMask + 1n;
    if ((perm & IOMMUAccessFlags.RW) !== IOMMUAccessFlags.NONE) {
      const writable = (perm & IOMMUAccessFlags.WO) !== 0;
      const x = this.#deps.systemMemory.translate(translatedAddr, writable, size);
      if (!(x.mr instanceof RamRegion)) {
        this.#container.report(`iommu map to non memory area ${x.xlat.toString(16)}`);
        return;
      }
      if ((x.plen & addrMask) !== 0n) {
        this.#container.report('iommu has granularity incompatible with target AS');
        return;
      }
      const vaddr = this.#deps.hostPointer(x.mr, x.xlat);
      if (vaddr === undefined) {
        this.#container.report(`iommu map to non memory area ${x.xlat.toString(16)}`);
        return;
      }
      const ret = this.#container.dmaMap(iova, size, vaddr, !writable || x.readonly);
      if (ret !== 0) {
        this.#container.report(
          `${this.#container.qemu === '10.0' ? 'vfio_container_dma_map' : 'vfio_dma_map'}(${formatHex(this.#container.pointer)}, ${formatHex(iova)}, ${formatHex(size)}, ${formatHex(vaddr)}) = ${ret} (${strerror(ret)})`,
        );
      }
    } else {
      const ret = this.#container.dmaUnmap(iova, size);
      if (ret !== 0)
        this.#container.report(
          `${this.#container.qemu === '10.0' ? 'vfio_container_dma_unmap' : 'vfio_dma_unmap'}(${formatHex(this.#container.pointer)}, ${formatHex(iova)}, ${formatHex(size)}) = ${ret} (${strerror(ret)})`,
        );
    }
  }
}

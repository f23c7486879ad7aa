import { MAX_RUN_STRIDE, runEntryHalves } from '@ddw/memory';
import type { HostMapping, HostMappingRunVisitor, HostWindow } from '@ddw/vfio-common';
import { halves, TCE_PERM, TCE_READ, TCE_WRITE, TceStore } from './tce-store.js';

/** What windows() reports, plus the IOVA extent the table really accepts. */
export interface SimulatedHostWindow extends HostWindow {
  /**
   * Bytes of IOVA the table's entries cover, from startAddr. PowerNV sizes a table to at least one
   * host page of TCEs and takes its extent from the allocation, so a small window accepts IOVAs
   * beyond `size` (1 MiB of 64K pages on a 64K host covers 8192 entries: 512 MiB).
   */
  readonly tableSpan: bigint;
}

/** One host DMA window of a container: an iommu_table in a slot, with its TCEs and their count. */
export class TceWindow {
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

  /**
   * Writes `count` entries from `first`: entry first + k = (high:low) + k * stride (page-aligned
   * userspace address | permission). The old entries are replaced without complaint (no -EEXIST).
   */
  write(first: number, count: number, high: number, low: number, stride: number): void {
    if (count <= 0) return;
    if (this.mapped > 0) this.#uncount(first, count);
    if (stride < MAX_RUN_STRIDE) this.table.setRun(first, count, high, low, stride);
    else {
      // Pages of 64 GiB or more: a progression the run table does not take, entry by entry.
      for (let k = 0; k < count; k++) {
        runEntryHalves(high, low, stride, k, halves);
        this.table.setRun(first + k, 1, halves[0]!, halves[1]!, 0);
      }
    }
    this.mapped += count;
  }

  /** Entries first + k (k < count) become the big-endian u64 values at view[8k], replacing the old ones. */
  writeList(first: number, count: number, view: DataView): void {
    if (this.mapped > 0) this.#uncount(first, count);
    this.table.setList(first, count, view);
    this.mapped += count;
  }

  /** Empties `count` entries from `first`: costs per run of entries, not per entry. */
  clear(first: number, count: number): void {
    if (count <= 0 || this.mapped === 0) return;
    this.#uncount(first, count);
    this.table.clearRange(first, count);
  }

  /** The non-empty entries of [first, first + count) stop counting. */
  #uncount(first: number, count: number): void {
    this.mapped -= this.table.countNonZero(first, first + count);
  }

  /** The page mapped at `iova` (inside the window), undefined when its entry is empty. */
  translate(iova: bigint): HostMapping | undefined {
    const index = Number((iova - this.start) >> this.shift);
    const entry = this.table.get(index);
    if (entry === 0n) return undefined;
    const perm = Number(entry & BigInt(TCE_PERM));
    return {
      iova: this.start + (BigInt(index) << this.shift),
      size: this.pageSize,
      vaddr: entry - BigInt(perm),
      read: (perm & TCE_READ) !== 0,
      write: (perm & TCE_WRITE) !== 0,
    };
  }
}

/**
 * The mapped pages of `window` as maximal runs (see forEachMapping): the table's runs read as
 * pages (a run whose stride is not whole pages changes permission: page by page), joined while
 * they continue one progression with one permission.
 */
export function visitMappings(window: TceWindow, fn: HostMappingRunVisitor): void {
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

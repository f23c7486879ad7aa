import type { AddressSpace } from './address-space.js';
import { IOMMUAccessFlags, IOMMUNotifierFlag, TARGET_PAGE_SIZE, TWO_32, UINT64_MAX } from './constants.js';
import {
  describeValue,
  IommuNotifierRefusedError,
  MemoryArgumentError,
  MemoryConfigError,
} from './errors.js';
import { formatHex } from './format.js';
import { MemoryRegion } from './region.js';

/**
 * The result of an IOMMU lookup (QEMU's IOMMUTLBEntry). `iova` and `translatedAddr` are page
 * aligned to `addrMask` (0xfff for a 4 KiB page); `iova` is relative to the IOMMU region.
 */
export interface IOMMUTLBEntry {
  targetAs: AddressSpace | null;
  iova: bigint;
  translatedAddr: bigint;
  addrMask: bigint;
  perm: IOMMUAccessFlags;
}

/** What happened to a translation: a new mapping (MAP) or its removal (UNMAP). */
export interface IOMMUTLBEvent {
  type: typeof IOMMUNotifierFlag.MAP | typeof IOMMUNotifierFlag.UNMAP;
  entry: IOMMUTLBEntry;
}

export type IOMMUNotify = (entry: IOMMUTLBEntry, notifier: IOMMUNotifier) => void;

/**
 * The pages of one IOMMU region that one operation changed (a TCE hypercall, a replay), carried as
 * segments instead of QEMU's one IOMMUTLBEvent per page. Segment `s` covers `pages[s]` pages from
 * region page `index[s]` (region-relative, in pages of 1 << pageShift bytes); its page k translates
 * to the page-aligned address (addrHigh[s]:addrLow[s]) + k * step[s] pages, with permission
 * `perm[s]` (NONE: the page is unmapped). Segments are in page order and do not overlap. A batch
 * means exactly the per-page events `batchEvent` gives, in order: that is its definition.
 */
export interface IOMMUBatch {
  readonly targetAs: AddressSpace | null;
  readonly pageShift: number;
  /** Number of segments. */
  readonly length: number;
  readonly index: Float64Array;
  readonly pages: Float64Array;
  readonly addrHigh: Uint32Array;
  readonly addrLow: Uint32Array;
  /** Pages the translation advances per page: 1 for consecutive memory, 0 for one page repeated. */
  readonly step: Float64Array;
  readonly perm: Uint8Array;
}

/** A notifier's handler for batches; it must act exactly as `notify` called for every page in order. */
export type IOMMUNotifyBatch = (batch: IOMMUBatch, notifier: IOMMUNotifier) => void;

/** A reusable, growable IOMMUBatch: producers fill it and hand it to notifyBatch synchronously. */
export class IOMMUBatchBuffer implements IOMMUBatch {
  targetAs: AddressSpace | null = null;
  pageShift = 12;
  length = 0;
  index = new Float64Array(16);
  pages = new Float64Array(16);
  addrHigh = new Uint32Array(16);
  addrLow = new Uint32Array(16);
  step = new Float64Array(16);
  perm = new Uint8Array(16);

  /** Empties the batch for pages of 1 << pageShift bytes translating into `targetAs`. */
  reset(targetAs: AddressSpace | null, pageShift: number): this {
    this.targetAs = targetAs;
    this.pageShift = pageShift;
    this.length = 0;
    return this;
  }

  /** Appends a segment (the caller keeps segments in page order). */
  push(index: number, pages: number, addrHigh: number, addrLow: number, step: number, perm: number): void {
    if (pages <= 0) return;
    const n = this.length;
    if (n === this.index.length) this.#grow();
    this.index[n] = index;
    this.pages[n] = pages;
    this.addrHigh[n] = addrHigh;
    this.addrLow[n] = addrLow;
    this.step[n] = step;
    this.perm[n] = perm;
    this.length = n + 1;
  }

  #grow(): void {
    const size = this.index.length * 2;
    const grow = <T extends Float64Array | Uint32Array | Uint8Array>(a: T, make: (n: number) => T): T => {
      const next = make(size);
      next.set(a);
      return next;
    };
    this.index = grow(this.index, (n) => new Float64Array(n));
    this.pages = grow(this.pages, (n) => new Float64Array(n));
    this.addrHigh = grow(this.addrHigh, (n) => new Uint32Array(n));
    this.addrLow = grow(this.addrLow, (n) => new Uint32Array(n));
    this.step = grow(this.step, (n) => new Float64Array(n));
    this.perm = grow(this.perm, (n) => new Uint8Array(n));
  }
}

/** Total pages of a batch. */
export function batchPages(batch: IOMMUBatch): number {
  let n = 0;
  for (let s = 0; s < batch.length; s++) n += batch.pages[s]!;
  return n;
}

/** The translated address of page `k` of segment `s`, exactly. */
export function batchAddress(batch: IOMMUBatch, s: number, k: number): bigint {
  const base = (BigInt(batch.addrHigh[s]!) << 32n) | BigInt(batch.addrLow[s]!);
  const step = batch.step[s]!;
  if (k === 0 || step === 0) return base;
  return BigInt.asUintN(64, base + ((BigInt(k) * BigInt(step)) << BigInt(batch.pageShift)));
}

/** The translated address of page `k` of segment `s` as a number: exact below 2^53. */
export function batchAddressNumber(batch: IOMMUBatch, s: number, k: number): number {
  const first = batch.addrHigh[s]! * TWO_32 + batch.addrLow[s]!;
  const step = batch.step[s]!;
  return k === 0 || step === 0 ? first : first + k * step * 2 ** batch.pageShift;
}

/** The event page `k` of segment `s` of a batch stands for (QEMU's per-page IOMMUTLBEvent). */
export function batchEvent(batch: IOMMUBatch, s: number, k: number): IOMMUTLBEvent {
  const shift = BigInt(batch.pageShift);
  const perm = batch.perm[s]! as IOMMUAccessFlags;
  return {
    type: perm === IOMMUAccessFlags.NONE ? IOMMUNotifierFlag.UNMAP : IOMMUNotifierFlag.MAP,
    entry: {
      targetAs: batch.targetAs,
      iova: BigInt(batch.index[s]! + k) << shift,
      translatedAddr: batchAddress(batch, s, k),
      addrMask: (1n << shift) - 1n,
      perm,
    },
  };
}

/**
 * A subscription to an IOMMU region's mapping changes (QEMU's IOMMUNotifier): the events it wants
 * (`flags`) and the region-relative range [start, end] (inclusive) it cares about.
 */
export class IOMMUNotifier {
  constructor(
    readonly notify: IOMMUNotify,
    readonly flags: IOMMUNotifierFlag,
    readonly start = 0n,
    readonly end = UINT64_MAX,
    readonly iommuIdx = 0,
    /**
     * Optional handler for batches (see IOMMUBatch); without it every page of a batch reaches
     * `notify` as its own entry.
     */
    readonly notifyBatch?: IOMMUNotifyBatch,
  ) {
    if (typeof notify !== 'function') {
      throw new MemoryArgumentError(
        'new IOMMUNotifier(notify, flags)',
        `notify is ${describeValue(notify)}, not a function`,
      );
    }
    if (typeof start !== 'bigint' || typeof end !== 'bigint') {
      throw new MemoryArgumentError(
        'new IOMMUNotifier(notify, flags, start, end)',
        'start and end must be bigints',
      );
    }
    if (!Number.isInteger(flags)) {
      throw new MemoryArgumentError(
        'new IOMMUNotifier(notify, flags)',
        `flags ${describeValue(flags)} is not an IOMMUNotifierFlag`,
      );
    }
    if (start > end) throw new MemoryConfigError('IOMMU notifier', `start ${formatHex(start)} is above end`);
    if (flags === IOMMUNotifierFlag.NONE)
      throw new MemoryConfigError('IOMMU notifier', 'flags must not be NONE');
  }

  /** Whether an event of this type over [iova, iova + mask] is for this notifier. */
  wants(type: IOMMUNotifierFlag, iova: bigint, addrMask: bigint): boolean {
    // QEMU asserts that an overlapping entry lies wholly inside the range; one that straddles
    // the edge is skipped here instead of aborting.
    return (type & this.flags) !== 0 && iova >= this.start && iova + addrMask <= this.end;
  }
}

function splitAddress(v: bigint, out: Uint32Array): void {
  out[0] = Number(v >> 32n);
  out[1] = Number(v & 0xffffffffn);
}

/** One notifier's share of a batch (see IommuMemoryRegion.notifyBatch); `clip` is scratch space. */
function deliverBatch(n: IOMMUNotifier, batch: IOMMUBatch, clip: IOMMUBatchBuffer): void {
  const shift = BigInt(batch.pageShift);
  // The pages wholly inside [start, end]: from `lo` up to, not including, `hi`.
  const lo = Number((n.start + (1n << shift) - 1n) >> shift);
  const hi = Number((n.end + 1n) >> shift);
  const wantMap = (n.flags & IOMMUNotifierFlag.MAP) !== 0;
  const wantUnmap = (n.flags & IOMMUNotifierFlag.UNMAP) !== 0;
  let whole = true;
  for (let s = 0; s < batch.length && whole; s++) {
    const first = batch.index[s]!;
    const wanted = batch.perm[s] === IOMMUAccessFlags.NONE ? wantUnmap : wantMap;
    if (!wanted || first < lo || first + batch.pages[s]! > hi) whole = false;
  }
  let b: IOMMUBatch = batch;
  if (!whole) {
    clip.reset(batch.targetAs, batch.pageShift);
    const halves = new Uint32Array(2);
    for (let s = 0; s < batch.length; s++) {
      const wanted = batch.perm[s] === IOMMUAccessFlags.NONE ? wantUnmap : wantMap;
      if (!wanted) continue;
      const first = batch.index[s]!;
      const from = Math.max(first, lo);
      const to = Math.min(first + batch.pages[s]!, hi);
      if (from >= to) continue;
      splitAddress(batchAddress(batch, s, from - first), halves);
      clip.push(from, to - from, halves[0]!, halves[1]!, batch.step[s]!, batch.perm[s]!);
    }
    if (clip.length === 0) return;
    b = clip;
  }
  if (n.notifyBatch) {
    n.notifyBatch(b, n);
    return;
  }
  for (let s = 0; s < b.length; s++) {
    for (let k = 0; k < b.pages[s]!; k++) n.notify(batchEvent(b, s, k).entry, n);
  }
}

/** A translation miss: no permission, and the mask of the whole space (as sPAPR reports). */
export function iommuMiss(iova: bigint): IOMMUTLBEntry {
  return { targetAs: null, iova, translatedAddr: 0n, addrMask: UINT64_MAX, perm: IOMMUAccessFlags.NONE };
}

/**
 * An IOMMU region (memory_region_init_iommu): accesses to it are translated and forwarded into
 * another address space. Subclasses implement `translate`; the notifier bookkeeping lives here.
 */
export abstract class IommuMemoryRegion extends MemoryRegion {
  readonly kind = 'iommu' as const;
  readonly #notifiers: IOMMUNotifier[] = [];
  /** The OR of every registered notifier's flags, as last accepted by notifyFlagChanged. */
  #notifyFlags: IOMMUNotifierFlag = IOMMUNotifierFlag.NONE;

  /**
   * Looks up region-relative `addr` for an access needing `flag` (IOMMU_NONE for a lookup with no
   * access, as replay does). Misses return perm NONE.
   */
  abstract translate(addr: bigint, flag: IOMMUAccessFlags, iommuIdx?: number): IOMMUTLBEntry;

  /** The smallest page this IOMMU maps (get_min_page_size); the target page size if unknown. */
  getMinPageSize(): bigint {
    return TARGET_PAGE_SIZE;
  }

  /** Every page size this IOMMU can map, as a mask of sizes (by default, all from the minimum up). */
  getPageSizeMask(): bigint {
    return UINT64_MAX & ~(this.getMinPageSize() - 1n);
  }

  /**
   * Called when the union of notifier flags changes, notably from NONE (first subscriber) and to
   * NONE (last one gone). Return a reason string to refuse a new subscription.
   */
  notifyFlagChanged(_oldFlags: IOMMUNotifierFlag, _newFlags: IOMMUNotifierFlag): string | undefined {
    return undefined;
  }

  get notifiers(): readonly IOMMUNotifier[] {
    return this.#notifiers;
  }

  get notifyFlags(): IOMMUNotifierFlag {
    return this.#notifyFlags;
  }

  /** Subscribes `notifier`; throws IommuNotifierRefusedError if the region refuses it. */
  registerNotifier(notifier: IOMMUNotifier): void {
    if (!(notifier instanceof IOMMUNotifier)) {
      throw new MemoryArgumentError(
        `"${this.name}".registerNotifier(notifier)`,
        `notifier is ${describeValue(notifier)}, not an IOMMUNotifier`,
      );
    }
    if (this.#notifiers.includes(notifier)) {
      throw new MemoryConfigError(this.name, 'this IOMMU notifier is already registered');
    }
    this.#notifiers.push(notifier);
    const refusal = this.updateNotifyFlags();
    if (refusal !== undefined) {
      this.#notifiers.splice(this.#notifiers.indexOf(notifier), 1);
      throw new IommuNotifierRefusedError(this.name, refusal);
    }
  }

  unregisterNotifier(notifier: IOMMUNotifier): void {
    const at = this.#notifiers.indexOf(notifier);
    if (at < 0) return;
    this.#notifiers.splice(at, 1);
    this.updateNotifyFlags();
  }

  /** Delivers `event` to every notifier whose flags and range cover it (memory_region_notify_iommu). */
  notify(event: IOMMUTLBEvent): void {
    const { entry } = event;
    for (const n of this.#notifiers) {
      if (n.wants(event.type, entry.iova, entry.addrMask)) n.notify(entry, n);
    }
  }

  /**
   * Delivers a batch: each notifier gets the pages its flags and range take (pages straddling its
   * range's edge are skipped, as `wants` skips them), through its batch handler if it has one,
   * else page by page. With several notifiers, QEMU tells every notifier about a page before the
   * next page: the batch is then delivered one page at a time, in that order.
   */
  notifyBatch(batch: IOMMUBatch): void {
    const notifiers = this.#notifiers;
    if (notifiers.length === 0 || batch.length === 0) return;
    this.#clip ??= new IOMMUBatchBuffer();
    if (notifiers.length === 1) {
      deliverBatch(notifiers[0]!, batch, this.#clip);
      return;
    }
    this.#single ??= new IOMMUBatchBuffer();
    const single = this.#single;
    const halves = new Uint32Array(2);
    for (let s = 0; s < batch.length; s++) {
      for (let k = 0; k < batch.pages[s]!; k++) {
        splitAddress(batchAddress(batch, s, k), halves);
        single.reset(batch.targetAs, batch.pageShift);
        single.push(batch.index[s]! + k, 1, halves[0]!, halves[1]!, 0, batch.perm[s]!);
        for (const n of [...notifiers]) deliverBatch(n, single, this.#clip);
      }
    }
  }

  /**
   * Hands a replay's batch to `notifier`: like QEMU's replay, which calls the notifier directly,
   * neither its flags nor its range filter anything.
   */
  protected replayBatch(notifier: IOMMUNotifier, batch: IOMMUBatch): void {
    if (batch.length === 0) return;
    if (notifier.notifyBatch) {
      notifier.notifyBatch(batch, notifier);
      return;
    }
    for (let s = 0; s < batch.length; s++) {
      for (let k = 0; k < batch.pages[s]!; k++) notifier.notify(batchEvent(batch, s, k).entry, notifier);
    }
  }

  #clip: IOMMUBatchBuffer | undefined;
  #single: IOMMUBatchBuffer | undefined;

  /** Whether anyone listens: lets hot paths skip building events nobody receives. */
  hasNotifiers(): boolean {
    return this.#notifiers.length > 0;
  }

  /**
   * Tells `notifier` about every current mapping (memory_region_iommu_replay): walks the region
   * from its own start in minimum-page steps and reports MAP only, with region-relative iovas.
   */
  replay(notifier: IOMMUNotifier): void {
    const granule = this.getMinPageSize();
    const size = this.size;
    for (let addr = 0n; addr < size; addr += granule) {
      const entry = this.translate(addr, IOMMUAccessFlags.NONE, notifier.iommuIdx);
      if (entry.perm !== IOMMUAccessFlags.NONE) notifier.notify(entry, notifier);
      if (addr + granule > UINT64_MAX) break;
    }
  }

  private updateNotifyFlags(): string | undefined {
    let flags: IOMMUNotifierFlag = IOMMUNotifierFlag.NONE;
    for (const n of this.#notifiers) flags |= n.flags;
    if (flags === this.#notifyFlags) return undefined;
    const refusal = this.notifyFlagChanged(this.#notifyFlags, flags);
    if (refusal === undefined) this.#notifyFlags = flags;
    return refusal;
  }
}

import type { AddressSpace } from './address-space.js';
import { IOMMUAccessFlags, IOMMUNotifierFlag, TARGET_PAGE_SIZE, UINT64_MAX } from './constants.js';
import {
  describeValue,
  IommuNotifierRefusedError,
  MemoryArgumentError,
  MemoryConfigError,
} from './errors.js';
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
 * Consecutive pages of one IOMMU region changed by one operation (a batch hypercall). Page `i` is
 * at region-relative `iova + i << pageShift`; `addr[i]` is its page-aligned translated address
 * (exact: runs are only built when every address is below 2^53) and `perm[i]` its permission, NONE
 * for an unmap. Equivalent to one IOMMUTLBEvent per page, in order.
 */
export interface IOMMURun {
  readonly iova: bigint;
  readonly pageShift: number;
  readonly count: number;
  readonly targetAs: AddressSpace | null;
  readonly addr: Float64Array;
  readonly perm: Uint8Array;
}

/** A notifier's fast path for runs; it must act exactly as `notify` called for every page in order. */
export type IOMMUNotifyRun = (run: IOMMURun, notifier: IOMMUNotifier) => void;

/** The per-page events a run stands for (the path for notifiers without a run handler). */
export function runEntry(run: IOMMURun, i: number): IOMMUTLBEvent {
  const mask = (1n << BigInt(run.pageShift)) - 1n;
  const perm = run.perm[i]! as IOMMUAccessFlags;
  return {
    type: perm === IOMMUAccessFlags.NONE ? IOMMUNotifierFlag.UNMAP : IOMMUNotifierFlag.MAP,
    entry: {
      targetAs: run.targetAs,
      iova: run.iova + (BigInt(i) << BigInt(run.pageShift)),
      translatedAddr: BigInt(run.addr[i]!),
      addrMask: mask,
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
    /** Optional fast path for runs of pages; see IOMMURun. */
    readonly notifyRun?: IOMMUNotifyRun,
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
    if (start > end)
      throw new MemoryConfigError('IOMMU notifier', `start 0x${start.toString(16)} is above end`);
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
   * Delivers a run of page events. A notifier with a run handler whose range covers the whole run
   * gets it at once (when it is the only notifier, so no interleaving is lost); everyone else gets
   * the per-page events, in page order.
   */
  notifyRun(run: IOMMURun): void {
    const only = this.#notifiers.length === 1 ? this.#notifiers[0]! : undefined;
    if (only?.notifyRun && run.count > 0) {
      const last = run.iova + (BigInt(run.count) << BigInt(run.pageShift)) - 1n;
      if (
        run.iova >= only.start &&
        last <= only.end &&
        (only.flags & IOMMUNotifierFlag.MAP) !== 0 &&
        (only.flags & IOMMUNotifierFlag.UNMAP) !== 0
      ) {
        only.notifyRun(run, only);
        return;
      }
    }
    for (let i = 0; i < run.count; i++) this.notify(runEntry(run, i));
  }

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

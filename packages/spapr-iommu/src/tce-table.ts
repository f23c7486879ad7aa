import { H_PARAMETER, H_SUCCESS, type MachineEventBus, type TraceBus, type TraceEvent } from '@ddw/machine';
import {
  type AddressSpace,
  ContainerRegion,
  formatHex,
  IOMMUAccessFlags,
  IOMMUBatchBuffer,
  type IOMMUNotifier,
  IOMMUNotifierFlag,
  type IOMMUTLBEntry,
  IommuMemoryRegion,
  MAX_RUN_STRIDE,
  RunTable,
  TWO_32,
  UINT64_MAX,
} from '@ddw/memory';
import type { KvmHost, KvmTceAttachment } from './kvm-tce.js';
import { SPAPR_IOMMU_TRACE_EVENTS } from './traces.js';

/** PCI LIOBNs have bit 31 set (SPAPR_IS_PCI_LIOBN); VIO ones do not. */
export function isPciLiobn(liobn: number): boolean {
  return (liobn & 0x80000000) !== 0;
}

/** The trace events a TCE table emits, defined once per machine. */
export class SpaprIommuTraces {
  readonly put: TraceEvent;
  readonly get: TraceEvent;
  readonly indirect: TraceEvent;
  readonly stuff: TraceEvent;
  readonly pciPut: TraceEvent;
  readonly pciGet: TraceEvent;
  readonly pciIndirect: TraceEvent;
  readonly pciStuff: TraceEvent;
  readonly xlate: TraceEvent;
  readonly newTable: TraceEvent;
  readonly preSave: TraceEvent;
  readonly postLoad: TraceEvent;

  constructor(bus: TraceBus) {
    const ev = new Map(bus.defineAll(SPAPR_IOMMU_TRACE_EVENTS, 'spapr_iommu').map((e) => [e.name, e]));
    const get = (name: string) => ev.get(name)!;
    this.put = get('spapr_iommu_put');
    this.get = get('spapr_iommu_get');
    this.indirect = get('spapr_iommu_indirect');
    this.stuff = get('spapr_iommu_stuff');
    this.pciPut = get('spapr_iommu_pci_put');
    this.pciGet = get('spapr_iommu_pci_get');
    this.pciIndirect = get('spapr_iommu_pci_indirect');
    this.pciStuff = get('spapr_iommu_pci_stuff');
    this.xlate = get('spapr_iommu_xlate');
    this.newTable = get('spapr_iommu_new_table');
    this.preSave = get('spapr_iommu_pre_save');
    this.postLoad = get('spapr_iommu_post_load');
  }
}

/** Host pointers in new_table traces are not reproducible anyway; hand out plausible ones. */
let nextFakeTablePointer = 0x7f00_0000_0000n;
/** Segments a replay collects before handing them on, so a table of random entries stays bounded. */
const REPLAY_FLUSH = 4096;
/** The fd of the next simulated in-kernel (KVM) table. */
let nextFakeKvmFd = 30;

/**
 * One TCE table (QEMU's SpaprTceTable): the entries of one DMA window and the IOMMU region that
 * translates through them. Enabled exactly when nbTable != 0. While enabled, the IOMMU region sits
 * in `root` at `busOffset`, so listeners on the PHB's address space see the window come and go.
 */
export class SpaprTceTable {
  nbTable = 0;
  busOffset = 0n;
  pageShift = 0;
  /** Used only by VIO devices (migrated, never interpreted here). */
  bypass = false;
  /** Some VFIO container listens: TCE updates must reach the emulator (see notifyFlagChanged). */
  needVfio = false;
  /** Set while RTAS create enables the table, so VFIO does not walk a brand-new empty table. */
  skippingReplay = false;
  /** This is the PHB's default window (set by every PHB DMA reset, never cleared). */
  defWin = false;
  /** Where the entries live: -1 for emulator memory (an in-kernel table has an fd). */
  fd = -1;
  /** The raw TCEs, kept as runs where the guest wrote progressions (null while disabled). */
  storage: RunTable | null = null;
  /**
   * The simulated KVM's host, when the VFIO plugin (@ddw/vfio-common) described one from its host model: its
   * KVM_CAP_SPAPR_TCE_VFIO decides whether VFIO keeps this table in the kernel.
   */
  kvmHost: KvmHost | undefined;
  /**
   * Host IOMMU tables KVM attached to this in-kernel table (KVM_DEV_VFIO_GROUP_SET_SPAPR_TCE; the
   * kernel's stt->iommu_tables): KVM writes the guest's TCEs into them directly.
   */
  readonly kvmIommuTables: KvmTceAttachment[] = [];
  /** Container of size 2^64-1 that holds the IOMMU region while enabled (get_iommu returns it). */
  readonly root: ContainerRegion;
  readonly iommu: SpaprIommuRegion;

  constructor(
    readonly liobn: number,
    /** Guest physical memory: where translations lead. */
    readonly targetAs: AddressSpace,
    readonly traces: SpaprIommuTraces,
    private readonly events: MachineEventBus,
    /** Who created the table (a PHB, a VIO device), for messages. */
    readonly owner: string,
    /**
     * Simulated KVM: tables are allocated in the kernel (fd >= 0), where the guest's TCE
     * hypercalls are handled without reaching the emulator, until VFIO needs them in userspace.
     */
    readonly kvm = false,
  ) {
    const hex = liobn.toString(16);
    this.root = new ContainerRegion(`tce-root-${hex}`, UINT64_MAX);
    this.iommu = new SpaprIommuRegion(`tce-iommu-${hex}`, this);
  }

  get enabled(): boolean {
    return this.nbTable !== 0;
  }

  get pageSize(): bigint {
    return 1n << BigInt(this.pageShift);
  }

  /**
   * Enables the window (spapr_tce_table_enable). `nbTable` is a uint32 in QEMU: callers pass what
   * they computed, and a value that truncates to 0 leaves the table disabled (see rtas-ddw).
   * `entries` (migration's post_load) become the table's contents before the region appears, so
   * listeners replaying the new window (VFIO) see them.
   */
  enable(pageShift: number, busOffset: bigint, nbTable: number, entries?: RunTable): void {
    if (this.enabled) {
      this.events.guestError(
        'spapr-iommu',
        `trying to enable already enabled TCE table ${formatHex(this.liobn)}`,
      );
      return;
    }
    if (this.iommu.container) {
      // A create whose nb_table truncated to 0 left a zero-sized region in the root; QEMU would
      // assert when adding it again. ddw removes the leftover first.
      this.root.removeSubregion(this.iommu);
    }
    this.pageShift = pageShift;
    this.busOffset = busOffset;
    this.nbTable = nbTable >>> 0;
    this.allocate(entries?.entries === this.nbTable ? entries : undefined);
    // QEMU inserts the region even when nb_table truncated to 0: a zero-sized leftover, kept here.
    this.iommu.setSize(BigInt(this.nbTable) << BigInt(pageShift));
    this.root.addSubregion(busOffset, this.iommu);
  }

  /** Disables the window and frees its entries (spapr_tce_table_disable). */
  disable(): void {
    if (!this.enabled) return;
    this.root.removeSubregion(this.iommu);
    this.iommu.setSize(0n);
    this.storage = null;
    // Closing the table's fd releases KVM's attachments with it (kvm_spapr_tce_release).
    this.kvmIommuTables.length = 0;
    this.fd = -1;
    this.busOffset = 0n;
    this.pageShift = 0;
    this.nbTable = 0;
  }

  /** Device reset: zero every entry in place, telling no one (spapr_tce_reset). */
  reset(): void {
    this.storage?.clear();
  }

  /** The entries live in the (simulated) kernel: hypercalls on them bypass the emulator. */
  get inKernel(): boolean {
    return this.fd >= 0;
  }

  /**
   * The table is in the kernel although VFIO follows it (KVM_CAP_SPAPR_TCE_VFIO): the guest's TCE
   * hypercalls on it are KVM's (see kvm-tce.ts), reaching QEMU only when KVM answers H_TOO_HARD.
   */
  get kvmAccelerated(): boolean {
    return this.fd >= 0 && this.needVfio;
  }

  /**
   * need_vfio follows whether any IOMMU notifier is registered ([cur] spapr_tce_set_need_vfio):
   * when it becomes true, an in-kernel table moves to userspace with its entries, so that VFIO sees
   * every update, unless the host's KVM has KVM_CAP_SPAPR_TCE_VFIO: then the table stays in the
   * kernel, where VFIO attached its group to it. When it becomes false the table stays where it is.
   */
  setNeedVfio(needVfio: boolean): void {
    if (this.needVfio === needVfio) return;
    this.needVfio = needVfio;
    if (!needVfio || this.fd < 0) return;
    if (this.kvmHost?.spaprTceVfio) return;
    // Re-allocating in userspace copies the entries: the storage itself carries over.
    this.traceNewTable(-1);
  }

  /** kvmppc_tce_put: KVM stores a TCE in the in-kernel table; QEMU's notifiers never hear of it. */
  kernelPut(ioba: bigint, tce: bigint): void {
    const index = Number((ioba - this.busOffset) >> BigInt(this.pageShift));
    this.storage?.set(index, tce);
  }

  /**
   * Replaces every entry of an enabled table with `next` (of the same size), as migration's
   * post_load copies the incoming entries in. QEMU copies silently; ddw tells the notifiers (VFIO)
   * about every entry that changes, one MAP or UNMAP each as put_entry would, so host mappings
   * keep matching the table.
   */
  replaceEntries(next: RunTable): void {
    const old = this.storage;
    if (old === null || next.entries !== this.nbTable) return;
    this.storage = next;
    if (!this.iommu.hasNotifiers()) return;
    const changed = (index: number, high: number, low: number) => {
      this.#notifyRun(index, 1, high, low, 0);
      if (this.#pending.length >= REPLAY_FLUSH) this.#flush();
    };
    // Entries that were set and now differ (cleared ones become UNMAPs)...
    old.forEachNonZero((index, high, low) => {
      const h = next.high(index);
      const l = next.low(index);
      if (h !== high || l !== low) changed(index, h, l);
    });
    // ...then entries that were clear and now are set.
    next.forEachNonZero((index, high, low) => {
      if (old.high(index) === 0 && old.low(index) === 0) changed(index, high, low);
    });
    this.#flush();
  }

  /** The entry at `index` as a raw 64-bit TCE (0 outside the window). */
  entry(index: number): bigint {
    if (!this.storage || index < 0 || index >= this.nbTable) return 0n;
    return this.storage.get(index);
  }

  /**
   * Stores one TCE at bus address `ioba` (put_tce_emu): the index wraps as unsigned 64-bit, an
   * index outside the window is H_PARAMETER, and every store sends exactly one notification.
   */
  putEntry(ioba: bigint, tce: bigint): bigint {
    const high = Number(tce >> 32n) >>> 0;
    const low = Number(tce & 0xffffffffn) >>> 0;
    if (this.putRepeated(ioba, 1, high, low) === 1) return H_SUCCESS;
    this.events.guestError('spapr-iommu', `spapr_vio_put_tce on out-of-bounds IOBA ${formatHex(ioba)}`);
    return H_PARAMETER;
  }

  /**
   * H_STUFF_TCE's stores: `count` entries from `startIoba` (page aligned) all set to (high:low).
   * Stops at the window's end; returns how many were stored.
   */
  putRepeated(startIoba: bigint, count: number, high: number, low: number): number {
    const start = this.#firstIndex(startIoba);
    if (start < 0) return 0;
    const fit = Math.min(count, this.nbTable - start);
    this.#store(start, fit, high, low, 0);
    this.#flush();
    return fit;
  }

  /**
   * H_PUT_TCE_INDIRECT's stores: `count` TCEs read big-endian from `list` at `byteOffset`, into
   * the entries from `startIoba` (page aligned). Stops at the window's end; returns how many were
   * stored. Progressions in the list are stored and notified as runs.
   */
  putList(startIoba: bigint, count: number, list: DataView, byteOffset = 0): number {
    const start = this.#firstIndex(startIoba);
    if (start < 0) return 0;
    const fit = Math.min(count, this.nbTable - start);
    if (this.#isProgression(list, byteOffset, fit)) {
      const stride =
        fit === 1
          ? 0
          : (list.getUint32(byteOffset + 8) - list.getUint32(byteOffset)) * TWO_32 +
            (list.getUint32(byteOffset + 12) - list.getUint32(byteOffset + 4));
      this.#store(start, fit, list.getUint32(byteOffset), list.getUint32(byteOffset + 4), stride);
    } else {
      this.#storeList(start, fit, list, byteOffset);
    }
    this.#flush();
    return fit;
  }

  /**
   * Whether the `count` TCEs of a list are one progression (what Linux writes for a direct
   * window, or for consecutive pages of one mapping) that does not wrap past 2^64. The first,
   * second and last entries decide cheaply that a list is not; every entry is checked before
   * saying it is.
   */
  #isProgression(list: DataView, byteOffset: number, count: number): boolean {
    if (count <= 1) return true;
    const h0 = list.getUint32(byteOffset);
    const l0 = list.getUint32(byteOffset + 4);
    const stride = (list.getUint32(byteOffset + 8) - h0) * TWO_32 + (list.getUint32(byteOffset + 12) - l0);
    if (!(stride >= 0 && stride < MAX_RUN_STRIDE)) return false;
    const last = byteOffset + (count - 1) * 8;
    const lastLow = l0 + (count - 1) * stride;
    const lastCarry = Math.floor(lastLow / TWO_32);
    if (list.getUint32(last + 4) !== lastLow - lastCarry * TWO_32) return false;
    if (list.getUint32(last) !== h0 + lastCarry) return false;
    if (stride < TWO_32) {
      // Halves as int32: adding wraps like the unsigned words, and a wrap of the low word is the
      // carry into the high one.
      const step = stride | 0;
      let h = h0 | 0;
      let l = l0 | 0;
      for (let p = byteOffset + 8, end = last + 8; p < end; p += 8) {
        const next = (l + step) | 0;
        if (next >>> 0 < l >>> 0) h = (h + 1) | 0;
        l = next;
        if (list.getInt32(p + 4) !== l || list.getInt32(p) !== h) return false;
      }
      return true;
    }
    let h = h0;
    let l = l0;
    for (let p = byteOffset + 8, end = last + 8; p < end; p += 8) {
      l += stride;
      if (l >= TWO_32) {
        const carry = Math.floor(l / TWO_32);
        h += carry;
        l -= carry * TWO_32;
      }
      if (list.getUint32(p + 4) !== l || list.getUint32(p) !== h) return false;
    }
    return true;
  }

  /** Stores entries of a list that follow no progression, notifying each. */
  #storeList(index: number, count: number, list: DataView, byteOffset: number): void {
    this.storage!.setList(index, count, list, byteOffset);
    if (!this.iommu.hasNotifiers()) return;
    for (let k = 0; k < count; k++) {
      const p = byteOffset + k * 8;
      this.#notifyRun(index + k, 1, list.getUint32(p), list.getUint32(p + 4), 0);
    }
  }

  /** The window index of page-aligned bus address `ioba`, or -1 outside the window. */
  #firstIndex(ioba: bigint): number {
    const first = BigInt.asUintN(64, ioba - this.busOffset) >> BigInt(this.pageShift);
    return this.storage === null || first >= BigInt(this.nbTable) ? -1 : Number(first);
  }

  /**
   * The one store path: `count` entries from `index` become (high:low) + k * stride, and the
   * notifiers hear of every one of them (as batch segments, sent by #flush).
   */
  #store(index: number, count: number, high: number, low: number, stride: number): void {
    if (count <= 0) return;
    this.storage!.setRun(index, count, high, low, stride);
    if (this.iommu.hasNotifiers()) this.#notifyRun(index, count, high, low, stride);
  }

  /** Adds the events of a run of raw entries to the pending batch (one segment when it can be). */
  #notifyRun(index: number, count: number, high: number, low: number, stride: number): void {
    const batch = this.#pending;
    if (batch.length === 0) batch.reset(this.targetAs, this.pageShift);
    pushRunEvents(batch, this.pageShift, index, count, high, low, stride, false);
  }

  /** Sends the pending batch. */
  #flush(): void {
    if (this.#pending.length === 0) return;
    this.iommu.notifyBatch(this.#pending);
    this.#pending.length = 0;
  }

  readonly #pending = new IOMMUBatchBuffer();

  /** Entries that map something (a TCE with a permission bit). */
  mappedEntries(): number {
    return mappedTces(this.storage);
  }

  private allocate(entries?: RunTable): void {
    this.storage = entries ?? new RunTable(this.nbTable);
    // kvmppc_create_spapr_tce refuses a table for VFIO only without KVM_CAP_SPAPR_TCE_VFIO.
    const inKernel = this.kvm && (!this.needVfio || this.kvmHost?.spaprTceVfio === true);
    this.traceNewTable(inKernel ? nextFakeKvmFd++ : -1);
  }

  /** Records where the entries now live and traces it (spapr_tce_alloc_table). */
  private traceNewTable(fd: number): void {
    this.fd = fd;
    if (this.traces.newTable.enabled) this.traces.newTable.emit(this.liobn, nextFakeTablePointer, fd);
    nextFakeTablePointer += 0x1000n;
  }
}

/** How many TCEs of `storage` map something (have a permission bit), counted by runs. */
export function mappedTces(storage: RunTable | null): number {
  let n = 0;
  storage?.forEachRun((_first, count, _high, low, stride) => {
    if (stride % 4 === 0) {
      if ((low & 3) !== 0) n += count;
      return;
    }
    for (let k = 0; k < count; k++) if (((low + k * stride) & 3) !== 0) n++;
  });
  return n;
}

/**
 * Appends the events of a run of raw entries (entry index + k = (high:low) + k * stride) to
 * `batch`: one segment when every entry has the run's permission and page-aligned steps, else one
 * per entry. `mapsOnly` leaves out entries without a permission bit (a replay reports MAPs only).
 */
function pushRunEvents(
  batch: IOMMUBatchBuffer,
  shift: number,
  index: number,
  count: number,
  high: number,
  low: number,
  stride: number,
  mapsOnly: boolean,
): void {
  const pageBytes = stride === 0 ? 1 : 2 ** shift;
  if (stride % pageBytes === 0 && stride % 4 === 0) {
    if (!mapsOnly || (low & 3) !== 0)
      batch.push(index, count, pageHigh(high, shift), pageLow(low, shift), stride / pageBytes, low & 3);
    return;
  }
  let h = high;
  let l = low;
  for (let k = 0; k < count; k++) {
    if (!mapsOnly || (l & 3) !== 0) batch.push(index + k, 1, pageHigh(h, shift), pageLow(l, shift), 0, l & 3);
    l += stride;
    if (l >= TWO_32) {
      const carry = Math.floor(l / TWO_32);
      h = (h + carry) >>> 0;
      l -= carry * TWO_32;
    }
  }
}

/** The high half of the page-aligned address of a TCE whose halves are (high, low). */
function pageHigh(high: number, shift: number): number {
  return shift <= 32 ? high : (high & ~((1 << (shift - 32)) - 1)) >>> 0;
}

/** The low half of the page-aligned address of a TCE whose halves are (high, low). */
function pageLow(low: number, shift: number): number {
  return shift >= 32 ? 0 : (low & ~((1 << shift) - 1)) >>> 0;
}

/** The IOMMU region of a TCE table (QEMU's spapr_iommu_memory_region class). */
export class SpaprIommuRegion extends IommuMemoryRegion {
  /** The name QEMU gives every TCE table's IOMMU region (memory_region_name), which its VFIO traces print. */
  readonly qemuName = 'iommu-spapr';

  constructor(
    name: string,
    readonly table: SpaprTceTable,
  ) {
    super(name, 0n);
  }

  /** spapr_tce_translate_iommu: `addr` is relative to the window. */
  override translate(addr: bigint, _flag: IOMMUAccessFlags): IOMMUTLBEntry {
    const t = this.table;
    const shift = BigInt(t.pageShift);
    const index = addr >> shift;
    let entry: IOMMUTLBEntry;
    if (t.storage !== null && index < BigInt(t.nbTable)) {
      const mask = (1n << shift) - 1n;
      const tce = t.storage.get(Number(index));
      entry = {
        targetAs: t.targetAs,
        iova: addr & ~mask,
        translatedAddr: tce & ~mask,
        addrMask: mask,
        perm: Number(tce & 3n) as IOMMUAccessFlags,
      };
    } else {
      entry = {
        targetAs: t.targetAs,
        iova: 0n,
        translatedAddr: 0n,
        addrMask: UINT64_MAX,
        perm: IOMMUAccessFlags.NONE,
      };
    }
    const xlate = t.traces.xlate;
    if (xlate.enabled) xlate.emit(t.liobn, addr, entry.translatedAddr, entry.perm, entry.addrMask);
    return entry;
  }

  /**
   * IOMMU_ATTR_SPAPR_TCE_FD (spapr_tce_get_attr): the table's fd, answered only when the host's
   * KVM has KVM_CAP_SPAPR_TCE_VFIO (the fd is -1 for a table in userspace); undefined otherwise.
   */
  spaprTceFd(): number | undefined {
    return this.table.kvmHost?.spaprTceVfio ? this.table.fd : undefined;
  }

  /** 1 << page_shift; 1 for a disabled table, as QEMU. */
  override getMinPageSize(): bigint {
    return 1n << BigInt(this.table.pageShift);
  }

  override notifyFlagChanged(oldFlags: number, newFlags: number): string | undefined {
    if (newFlags & IOMMUNotifierFlag.DEVIOTLB_UNMAP) return 'spart_tce does not support dev-iotlb yet';
    const was = oldFlags !== IOMMUNotifierFlag.NONE;
    const now = newFlags !== IOMMUNotifierFlag.NONE;
    if (was !== now) this.table.setNeedVfio(now);
    return undefined;
  }

  /**
   * memory_region_iommu_replay as QEMU's generic walk does it: every page of the window is looked
   * up from the window's start (each lookup traced by spapr_iommu_xlate), and the populated ones
   * reach `notifier` as MAP events, window-relative. The walk goes by runs of entries; pages are
   * visited one by one only to trace them. Suppressed while RTAS create enables a fresh table.
   */
  override replay(notifier: IOMMUNotifier): void {
    const t = this.table;
    const storage = t.storage;
    if (t.skippingReplay || storage === null) return;
    const xlate = t.traces.xlate;
    const shift = t.pageShift;
    const batch = new IOMMUBatchBuffer().reset(t.targetAs, shift);
    const traceMisses = (from: number, to: number) => {
      for (let i = from; i < to; i++) this.translate(BigInt(i) << BigInt(shift), IOMMUAccessFlags.NONE);
    };
    let traced = 0;
    storage.forEachRun((first, count, high, low, stride) => {
      if (xlate.enabled) {
        traceMisses(traced, first + count);
        traced = first + count;
      }
      pushRunEvents(batch, shift, first, count, high, low, stride, true);
      if (batch.length >= REPLAY_FLUSH) {
        this.replayBatch(notifier, batch);
        batch.reset(t.targetAs, shift);
      }
    });
    if (xlate.enabled) traceMisses(traced, t.nbTable);
    this.replayBatch(notifier, batch);
  }
}

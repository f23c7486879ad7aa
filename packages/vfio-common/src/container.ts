import { DdwError, type MachineEventBus, type TraceEvent } from '@ddw/machine';
import {
  type AddressSpace,
  batchAddress,
  batchAddressNumber,
  type FlatView,
  IOMMUAccessFlags,
  type IOMMUBatch,
  IOMMUBatchBuffer,
  IOMMUNotifier,
  IOMMUNotifierFlag,
  type IOMMUTLBEntry,
  IommuMemoryRegion,
  type MemoryListener,
  type MemoryRegionSection,
  RamRegion,
} from '@ddw/memory';
import type { HostKvmTable } from './host/host-iommu.js';
import {
  Errno,
  type HostIommu,
  type HostIommuContainer,
  type HostIommuType,
  VFIO_DMA_MAP_FLAG_READ,
  VFIO_DMA_MAP_FLAG_WRITE,
  VFIO_SPAPR_TCE_IOMMU,
  VFIO_SPAPR_TCE_v2_IOMMU,
  VFIO_TYPE1_IOMMU,
  VFIO_TYPE1v2_IOMMU,
} from './host/host-iommu.js';
import { strerror, type VfioQemuVersion } from './traces.js';

/** A failure QEMU reports while setting a device up; the device's realize fails with it. */
export class VfioError extends DdwError {
  override name = 'VfioError';
  constructor(message: string) {
    super('VFIO', message);
  }
}

/**
 * The trace events the container emits, as the QEMU version of VfioContainerDeps.qemu declares
 * them: under 10.0 regionAddSkip and regionDelSkip are both vfio_listener_region_skip (its first
 * argument says which), and regionAddIommu takes the region's name first.
 */
export interface VfioContainerTraces {
  mapNotify: TraceEvent;
  regionAddSkip: TraceEvent;
  regionAddIommu: TraceEvent;
  regionDelSkip: TraceEvent;
  regionDel: TraceEvent;
  createWindow: TraceEvent;
  removeWindow: TraceEvent;
  /** vfio_listener_region_del_iommu (10.0 only). */
  regionDelIommu?: TraceEvent;
  /** vfio_spapr_group_attach (KVM with KVM_CAP_SPAPR_TCE_VFIO). */
  groupAttach?: TraceEvent;
}

/**
 * The KVM side VFIO talks to under `-accel kvm` (QEMU's KVM-VFIO device): attaching a group to an
 * in-kernel TCE table, and letting it go.
 */
export interface VfioKvm {
  /**
   * KVM_SET_DEVICE_ATTR(KVM_DEV_VFIO_GROUP_SET_SPAPR_TCE) for a group whose host tables are
   * `hostTables`, to the in-kernel table `tablefd`: 0 or -errno.
   */
  setSpaprTce(tablefd: number, hostTables: readonly HostKvmTable[]): number;
  /** KVM_DEV_VFIO_GROUP_DEL: the group's host tables leave every in-kernel table. */
  releaseGroup(hostTables: readonly HostKvmTable[]): void;
  /** The fd QEMU holds for a group (/dev/vfio/N), for messages and traces. */
  groupFd(group: string): number;
}

/** An IOMMU region that answers IOMMU_ATTR_SPAPR_TCE_FD (@ddw/spapr-iommu's region does). */
interface SpaprTceFdRegion {
  spaprTceFd(): number | undefined;
}

function hasSpaprTceFd(mr: unknown): mr is SpaprTceFdRegion {
  return typeof (mr as Partial<SpaprTceFdRegion>).spaprTceFd === 'function';
}

/** memory_region_name as QEMU prints it: a region may carry QEMU's own name for it (qemuName). */
function qemuRegionName(mr: { name: string }): string {
  const qemuName = (mr as { qemuName?: unknown }).qemuName;
  return typeof qemuName === 'string' ? qemuName : mr.name;
}

/** What a container needs from the machine and the host. */
export interface VfioContainerDeps {
  host: HostIommu;
  /** Guest physical memory (QEMU's address_space_memory): the only legal translation target. */
  systemMemory: AddressSpace;
  /** The host pointer of a RAM region's byte `offset` (memory_region_get_ram_ptr), if it has one. */
  hostPointer(mr: RamRegion, offset: bigint): bigint | undefined;
  /** qemu_real_host_page_size. */
  hostPageSize: bigint;
  /** qemu_minrampagesize: the smallest page backing guest RAM. */
  ramPageSize: bigint;
  traces: VfioContainerTraces;
  events: MachineEventBus;
  /** Builds the v2 pre-registration listener (from @ddw/vfio-prereg); absent means no v2 support. */
  preregListener?: (container: VfioContainer) => MemoryListener;
  /** Which QEMU's listener this is: its trace events and where they fire (default '7.2'). */
  qemu?: VfioQemuVersion;
  /** The KVM-VFIO device, when the machine runs under KVM (kvm_enabled()); absent under TCG. */
  kvm?: VfioKvm;
}

/** QEMU's VFIOHostDMAWindow: an IOVA range the host IOMMU can map, inclusive. */
export interface HostDmaWindow {
  minIova: bigint;
  maxIova: bigint;
  pgSizes: bigint;
}

/** QEMU's VFIOGuestIOMMU: one IOMMU section this container follows. */
interface GuestIommu {
  readonly mr: IommuMemoryRegion;
  readonly notifier: IOMMUNotifier;
  /** offset_within_address_space - offset_within_region: turns region-relative iovas into bus addresses. */
  readonly iommuOffset: bigint;
}

let nextFakePointer = 0x55d0_0000_0000n;
function nextPointer(): bigint {
  nextFakePointer += 0x1000n;
  return nextFakePointer;
}
const hex = (v: bigint) => v.toString(16);

const UINT64_MASK = (1n << 64n) - 1n;

function ctz64(v: bigint): number {
  if (v === 0n) return 64;
  let n = 0;
  while ((v & 1n) === 0n) {
    v >>= 1n;
    n++;
  }
  return n;
}

function highestBit(v: bigint): bigint {
  let bit = 1n;
  while (bit << 1n <= v) bit <<= 1n;
  return bit;
}

/**
 * A VFIO container as QEMU 7.2 runs it for sPAPR (hw/vfio/common.c and hw/vfio/spapr.c): one per
 * PHB address space, holding the host IOMMU container, the host DMA window list, and one IOMMU
 * notifier per guest window, turning every guest TCE change into a host map or unmap.
 */
export class VfioContainer {
  readonly fd: HostIommuContainer;
  type: HostIommuType = 'v2';
  /** Page sizes the host IOMMU offers (container->pgsizes). */
  pgSizes = 0n;
  readonly hostWindows: HostDmaWindow[] = [];
  readonly #giommus: GuestIommu[] = [];
  readonly groups = new Set<string>();
  /** The first error while the container was being set up (container->error). */
  error: string | undefined;
  /** Set once set-up succeeded: later failures are runtime failures (QEMU's hw_error). */
  initialized = false;
  /** Why the container stopped working: what QEMU aborts on with hw_error. */
  broken: string | undefined;
  /** The container's %p in messages (not reproducible anyway). */
  readonly pointer = nextPointer();
  readonly #listener: MemoryListener;
  #prereg: MemoryListener | undefined;

  private constructor(
    readonly as: AddressSpace,
    readonly deps: VfioContainerDeps,
  ) {
    this.fd = deps.host.openContainer();
    this.#listener = {
      name: 'vfio',
      regionAdd: (section) => this.regionAdd(section),
      regionDel: (section) => this.regionDel(section),
    };
  }

  /** The QEMU version whose behaviour the container follows. */
  get qemu(): VfioQemuVersion {
    return this.deps.qemu ?? '7.2';
  }

  /** Guest IOMMU sections followed, for inspection. */
  get guestIommus(): readonly { mr: IommuMemoryRegion; iommuOffset: bigint }[] {
    return this.#giommus;
  }

  /**
   * vfio_connect_container for a new container: IOMMU type, SET_IOMMU with the v2 -> v1
   * fallback, the sPAPR set-up, then the listener, whose replay creates the host windows of the
   * guest windows already enabled. Throws VfioError with QEMU's message; nothing is left behind.
   */
  static create(as: AddressSpace, group: string, deps: VfioContainerDeps): VfioContainer {
    const c = new VfioContainer(as, deps);
    try {
      c.setUp(group);
    } catch (error) {
      c.tearDown();
      throw error;
    }
    return c;
  }

  private setUp(group: string): void {
    const fd = this.fd;
    const host = this.deps.host;
    let iommuType = [
      VFIO_TYPE1v2_IOMMU,
      VFIO_TYPE1_IOMMU,
      VFIO_SPAPR_TCE_v2_IOMMU,
      VFIO_SPAPR_TCE_IOMMU,
    ].find((t) => host.checkExtension(t) === 1);
    if (iommuType === undefined) throw new VfioError('No available IOMMU models');
    const attached = fd.attachGroup(group);
    if (attached !== 0) throw new VfioError(`Failed to set group container: ${strerror(attached)}`);
    this.groups.add(group);
    for (;;) {
      const ret = fd.setIommu(iommuType);
      if (ret === 0) break;
      // sPAPR hosts advertise v2 even where the platform cannot do it; only the group tells.
      if (iommuType === VFIO_SPAPR_TCE_v2_IOMMU) {
        iommuType = VFIO_SPAPR_TCE_IOMMU;
        continue;
      }
      throw new VfioError(`Failed to set iommu for container: ${strerror(ret)}`);
    }
    if (iommuType !== VFIO_SPAPR_TCE_IOMMU && iommuType !== VFIO_SPAPR_TCE_v2_IOMMU) {
      throw new VfioError(`IOMMU type ${iommuType} is not a sPAPR TCE IOMMU; ddw models only those`);
    }
    this.type = iommuType === VFIO_SPAPR_TCE_v2_IOMMU ? 'v2' : 'v1';

    if (this.type === 'v1') {
      const ret = fd.enable();
      if (ret !== 0) throw new VfioError(`failed to enable container: ${strerror(ret)}`);
    } else {
      const make = this.deps.preregListener;
      if (!make) {
        throw new VfioError(
          'the host IOMMU is SPAPR TCE v2, which needs guest RAM pre-registered: add the vfio-prereg plugin',
        );
      }
      this.#prereg = make(this);
      this.deps.systemMemory.addListener(this.#prereg);
      if (this.error !== undefined) {
        throw new VfioError(`RAM memory listener initialization failed: ${this.error}`);
      }
    }
    const { ret, info } = fd.getInfo();
    if (ret !== 0 || !info) throw new VfioError(`VFIO_IOMMU_SPAPR_TCE_GET_INFO failed: ${strerror(ret)}`);
    if (this.type === 'v2') {
      this.pgSizes = info.ddw.pgSizes;
      // Every window, the default one included, is created when its section appears.
      const removed = this.removeHostWindow(info.dma32WindowStart);
      if (removed !== 0) throw new VfioError(`failed to remove existing window: ${strerror(removed)}`);
    } else {
      this.pgSizes = 0x1000n;
      this.hostWindows.push({
        minIova: info.dma32WindowStart,
        maxIova: info.dma32WindowStart + info.dma32WindowSize - 1n,
        pgSizes: 0x1000n,
      });
    }
    this.as.addListener(this.#listener);
    if (this.error !== undefined) throw new VfioError(`memory listener initialization failed: ${this.error}`);
    this.initialized = true;
  }

  /** VFIO_GROUP_SET_CONTAINER for another device's group; false when the host refuses it. */
  attachGroup(group: string): boolean {
    if (this.groups.has(group)) return true;
    if (this.fd.attachGroup(group) !== 0) return false;
    this.groups.add(group);
    return true;
  }

  /** A device left: the last one takes the container down (listeners go, the fd is closed). */
  detachGroup(group: string): void {
    if (!this.groups.has(group)) return;
    // The last group out takes the listeners down first, while the host container still works.
    if (this.groups.size === 1) {
      this.tearDown();
      return;
    }
    // vfio_put_group: the group leaves the KVM-VFIO device before its container.
    this.releaseKvm();
    this.groups.delete(group);
    this.fd.detachGroup(group);
  }

  /** KVM_DEV_VFIO_GROUP_DEL for one group: KVM lets go of the container's host tables once. */
  private releaseKvm(): void {
    this.deps.kvm?.releaseGroup(this.fd.kvmTables?.() ?? []);
  }

  private tearDown(): void {
    for (const _group of this.groups) this.releaseKvm();
    // Unregistering replays region_del: notifiers go, host windows are unmapped and removed.
    this.as.removeListener(this.#listener);
    if (this.#prereg) this.deps.systemMemory.removeListener(this.#prereg);
    this.#prereg = undefined;
    for (const group of this.groups) this.fd.detachGroup(group);
    this.groups.clear();
    this.fd.close();
  }

  /** QEMU's error_report. */
  report(message: string): void {
    this.deps.events.hostError('vfio', message);
  }

  /**
   * A failure while the listener runs (the fail: path of region_add): kept as the set-up error
   * before `initialized`; afterwards QEMU reports it and aborts with hw_error. ddw keeps the
   * machine running, reports both messages (the second as fatal) and marks the container broken.
   */
  fail(region: string, message: string): void {
    if (!this.initialized) {
      this.error ??= `Region ${region}: ${message}`;
      return;
    }
    this.report(message);
    this.abort('vfio: DMA mapping failed, unable to continue');
  }

  /**
   * QEMU's hw_error: QEMU stops there. ddw reports it as a fatal host error and marks the
   * container broken, leaving the guest-visible state as it was.
   */
  abort(message: string): void {
    this.broken ??= message;
    this.deps.events.hostError('vfio', message, true);
  }

  private skipped(section: MemoryRegionSection): boolean {
    const mr = section.mr;
    return (
      (!(mr instanceof RamRegion) && !(mr instanceof IommuMemoryRegion)) ||
      (section.offsetWithinAddressSpace & (1n << 63n)) !== 0n
    );
  }

  /** [iova, end] of a section trimmed to host pages, or undefined when nothing is left. */
  private hostPageRange(section: MemoryRegionSection): { iova: bigint; end: bigint } | undefined {
    const mask = this.deps.hostPageSize - 1n;
    const iova = (section.offsetWithinAddressSpace + mask) & ~mask;
    const llend = (section.offsetWithinAddressSpace + section.size) & ~mask;
    return iova >= llend ? undefined : { iova, end: llend - 1n };
  }

  private unaligned(section: MemoryRegionSection): boolean {
    const mask = this.deps.hostPageSize - 1n;
    return (section.offsetWithinAddressSpace & mask) !== (section.offsetWithinRegion & mask);
  }

  /** vfio_listener_region_{add,del}_skip (7.2) or vfio_listener_region_skip (10.0). */
  private traceSkip(op: 'region_add' | 'region_del', start: bigint, last: bigint): void {
    const t = op === 'region_add' ? this.deps.traces.regionAddSkip : this.deps.traces.regionDelSkip;
    if (!t.enabled) return;
    if (this.qemu === '10.0') t.emit(op, start, last);
    else t.emit(start, last);
  }

  /** A section whose address and offset disagree within a host page: QEMU reports it and ignores it. */
  private reportUnaligned(where: string, section: MemoryRegionSection): void {
    if (this.qemu !== '10.0') {
      this.report(`${where} received unaligned region`);
      return;
    }
    // 10.0 checks in vfio_listener_valid_section and says more.
    this.report(
      `vfio_listener_valid_section received unaligned region ${qemuRegionName(section.mr)} iova=0x${hex(section.offsetWithinAddressSpace)} offset_within_region=0x${hex(section.offsetWithinRegion)} qemu_real_host_page_size=0x${hex(this.deps.hostPageSize)}`,
    );
  }

  /**
   * Under KVM, after a v2 host window is created for an IOMMU section: every group of the container
   * is attached to the section's in-kernel TCE table (KVM_DEV_VFIO_GROUP_SET_SPAPR_TCE), if the
   * region gives its table fd (IOMMU_ATTR_SPAPR_TCE_FD: only with KVM_CAP_SPAPR_TCE_VFIO). A refusal
   * ends region_add: 7.2 reports it and returns (the notifier is never registered, so the guest's
   * TCEs never reach the host: QEMU's quirk, followed), 10.0 fails the section like any other error.
   * Returns whether region_add goes on.
   */
  private attachToKvm(section: MemoryRegionSection): boolean {
    const kvm = this.deps.kvm;
    const mr = section.mr;
    if (!kvm || !(mr instanceof IommuMemoryRegion) || !hasSpaprTceFd(mr)) return true;
    const tablefd = mr.spaprTceFd();
    if (tablefd === undefined) return true;
    for (const group of this.groups) {
      const groupfd = kvm.groupFd(group);
      const ret = kvm.setSpaprTce(tablefd, this.fd.kvmTables?.() ?? []);
      if (ret !== 0) {
        if (this.qemu === '10.0') {
          this.fail(
            qemuRegionName(mr),
            `vfio: failed GROUP_SET_SPAPR_TCE for KVM VFIO device ${tablefd} and group fd ${groupfd}: ${strerror(ret)}`,
          );
        } else {
          this.report(`vfio: failed to setup fd ${tablefd} for a group with fd ${groupfd}: ${strerror(ret)}`);
        }
        return false;
      }
      const t = this.deps.traces.groupAttach;
      if (t?.enabled) t.emit(groupfd, tablefd);
    }
    return true;
  }

  private regionAdd(section: MemoryRegionSection): void {
    const start = section.offsetWithinAddressSpace;
    const last = start + section.size - 1n;
    if (this.skipped(section)) {
      this.traceSkip('region_add', start, last);
      return;
    }
    if (this.unaligned(section)) {
      this.reportUnaligned('vfio_listener_region_add', section);
      return;
    }
    const range = this.hostPageRange(section);
    if (!range) return;
    const { iova, end } = range;
    const v10 = this.qemu === '10.0';
    // The "Region NAME:" of a set-up error: 10.0 with QEMU's region name; 7.2 keeps ddw's (as before).
    const regionName = v10 ? qemuRegionName(section.mr) : section.mr.name;

    // 10.0 checks a v1 section whole, before anything else (vfio_spapr_container_add_section_window).
    if (v10 && this.type === 'v1' && !this.hostWindows.some((w) => w.minIova <= start && last <= w.maxIova)) {
      this.fail(
        regionName,
        `Container 0x${hex(this.pointer)} can't map guest IOVA region 0x${hex(start)}..0x${hex(last)}`,
      );
      return;
    }

    if (this.type === 'v2') {
      const clash = this.hostWindows.find((w) => w.minIova <= last && start <= w.maxIova);
      if (clash) {
        // QEMU's message lacks the space after "existing"; kept so logs compare.
        this.fail(
          regionName,
          `region [0x${hex(start)},0x${hex(last)}] overlaps with existinghost DMA window [0x${hex(clash.minIova)},0x${hex(clash.maxIova)}]`,
        );
        return;
      }
      const created = this.createHostWindow(section);
      if ('errno' in created) {
        this.fail(regionName, `Failed to create SPAPR window: ${strerror(created.errno)}`);
        return;
      }
      this.hostWindows.push({ minIova: start, maxIova: last, pgSizes: created.pageSize });
      if (!this.attachToKvm(section)) return;
    }

    if (!v10 && !this.hostWindows.some((w) => w.minIova <= iova && end <= w.maxIova)) {
      this.fail(
        section.mr.name,
        `Container 0x${hex(this.pointer)} can't map guest IOVA region 0x${hex(iova)}..0x${hex(end)}`,
      );
      return;
    }

    const mr = section.mr;
    if (mr instanceof IommuMemoryRegion) {
      const t = this.deps.traces.regionAddIommu;
      if (t.enabled) {
        if (v10) t.emit(qemuRegionName(mr), iova, end);
        else t.emit(iova, end);
      }
      const giommu: GuestIommu = {
        mr,
        iommuOffset: section.offsetWithinAddressSpace - section.offsetWithinRegion,
        notifier: new IOMMUNotifier(
          (entry) => this.mapNotify(giommu, entry),
          IOMMUNotifierFlag.MAP | IOMMUNotifierFlag.UNMAP,
          section.offsetWithinRegion,
          section.offsetWithinRegion + section.size - 1n,
          0,
          (batch) => this.mapNotifyBatch(giommu, batch),
        ),
      };
      try {
        // Registering flips need_vfio: an in-kernel table moves to userspace here, unless the
        // host's KVM_CAP_SPAPR_TCE_VFIO keeps it in the kernel (attached above).
        mr.registerNotifier(giommu.notifier);
      } catch (error) {
        this.fail(mr.name, `${error instanceof Error ? error.message : String(error)}`);
        return;
      }
      this.#giommus.unshift(giommu);
      mr.replay(giommu.notifier);
      return;
    }

    // Plain RAM in this address space: map it whole.
    if (mr instanceof RamRegion) {
      const vaddr = this.deps.hostPointer(mr, section.offsetWithinRegion + (iova - start));
      if (vaddr === undefined) {
        this.fail(mr.name, 'RAM without a host pointer');
        return;
      }
      const ret = this.dmaMap(iova, end - iova + 1n, vaddr, section.readonly);
      if (ret !== 0) {
        this.fail(
          mr.name,
          `${this.qemu === '10.0' ? 'vfio_container_dma_map' : 'vfio_dma_map'}(0x${hex(this.pointer)}, 0x${hex(iova)}, 0x${hex(end - iova + 1n)}, 0x${hex(vaddr)}) = ${ret} (${strerror(ret)})`,
        );
      }
    }
  }

  private regionDel(section: MemoryRegionSection): void {
    const start = section.offsetWithinAddressSpace;
    if (this.skipped(section)) {
      this.traceSkip('region_del', start, start + section.size - 1n);
      return;
    }
    if (this.unaligned(section)) {
      this.reportUnaligned('vfio_listener_region_del', section);
      return;
    }
    const mr = section.mr;
    if (mr instanceof IommuMemoryRegion) {
      // 10.0 names the region first, whether or not a notifier of it is found.
      const t = this.deps.traces.regionDelIommu;
      if (this.qemu === '10.0' && t?.enabled) t.emit(qemuRegionName(mr));
      const at = this.#giommus.findIndex(
        (g) => g.mr === mr && g.notifier.start === section.offsetWithinRegion,
      );
      if (at >= 0) {
        mr.unregisterNotifier(this.#giommus[at]!.notifier);
        this.#giommus.splice(at, 1);
      }
    }
    const range = this.hostPageRange(section);
    if (!range) return;
    const { iova, end } = range;
    const t = this.deps.traces.regionDel;
    if (t.enabled) t.emit(iova, end);
    // One unmap for the whole section clears whatever the notifier mapped in it.
    const size = end - iova + 1n;
    const ret = this.dmaUnmap(iova, size);
    if (ret !== 0)
      this.report(
        `${this.qemu === '10.0' ? 'vfio_container_dma_unmap' : 'vfio_dma_unmap'}(0x${hex(this.pointer)}, 0x${hex(iova)}, 0x${hex(size)}) = ${ret} (${strerror(ret)})`,
      );
    if (this.type === 'v2') {
      this.removeHostWindow(start);
      const last = start + section.size - 1n;
      const at = this.hostWindows.findIndex((w) => w.minIova === start && w.maxIova === last);
      if (at < 0) {
        const where =
          this.qemu === '10.0' ? 'vfio_spapr_container_del_section_window' : 'vfio_listener_region_del';
        this.abort(`${where}: Cannot delete missing window at ${hex(start)}`);
        return;
      }
      this.hostWindows.splice(at, 1);
    }
  }

  /**
   * vfio_spapr_create_window: the page size is the guest window's, capped by the RAM backing page
   * and reduced to one the host offers; levels are guessed from the table size and retried
   * upwards; a start address other than the window's is refused.
   */
  private createHostWindow(section: MemoryRegionSection): { pageSize: bigint } | { errno: number } {
    const mr = section.mr as IommuMemoryRegion;
    const minPage = mr.getMinPageSize();
    let pageSize = minPage > this.deps.ramPageSize ? this.deps.ramPageSize : minPage;
    const usable = this.pgSizes & (pageSize | (pageSize - 1n));
    pageSize = usable === 0n ? 0n : highestBit(usable);
    if (pageSize === 0n) {
      this.report(
        `Host doesn't support page size 0x${hex(minPage)}, the supported mask is 0x${hex(this.pgSizes)}`,
      );
      return { errno: -Errno.EINVAL };
    }
    const windowSize = section.size;
    const pageShift = ctz64(pageSize);
    // entries is a 32-bit unsigned in QEMU: a window of 2^32 pages or more truncates.
    const entries = (windowSize >> BigInt(pageShift)) & 0xffffffffn;
    const bitsTotal = ctz64((entries * 8n) & UINT64_MASK);
    const hostShift = ctz64(this.deps.hostPageSize);
    const bitsPerLevel = hostShift + 8;
    let levels = Math.ceil(bitsTotal / bitsPerLevel);
    const maxLevels = Math.floor((64 - pageShift) / hostShift);
    let result: { ret: number; startAddr?: bigint } = { ret: -Errno.EINVAL };
    for (; levels <= maxLevels; levels++) {
      result = this.fd.createWindow({ pageShift, windowSize, levels });
      if (result.ret === 0) break;
    }
    if (result.ret !== 0) {
      this.report(`Failed to create a window, ret = -1 (${strerror(result.ret)})`);
      return { errno: result.ret };
    }
    const startAddr = result.startAddr ?? 0n;
    if (startAddr !== section.offsetWithinAddressSpace) {
      this.removeHostWindow(startAddr);
      this.report(
        `Host doesn't support DMA window at ${hex(section.offsetWithinAddressSpace)}, must be ${hex(startAddr)}`,
      );
      return { errno: -Errno.EINVAL };
    }
    const t = this.deps.traces.createWindow;
    if (t.enabled) t.emit(pageShift, levels, windowSize, startAddr);
    return { pageSize };
  }

  /** vfio_spapr_remove_window. */
  private removeHostWindow(startAddr: bigint): number {
    const ret = this.fd.removeWindow({ startAddr });
    if (ret !== 0) {
      this.report(`Failed to remove window at ${hex(startAddr)}`);
      return ret;
    }
    const t = this.deps.traces.removeWindow;
    if (t.enabled) t.emit(startAddr);
    return 0;
  }

  /**
   * vfio_iommu_map_notify for one entry: the entry as a batch of one page, into mapNotifyBatch. An
   * entry no batch can carry (a mask that is not a page, an unaligned address) goes to mapPage,
   * which is what mapNotifyBatch does with any page it cannot take by runs.
   */
  private mapNotify(giommu: GuestIommu, entry: IOMMUTLBEntry): void {
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
          entry.translatedAddr <= UINT64_MASK));
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
  private mapNotifyBatch(giommu: GuestIommu, batch: IOMMUBatch): void {
    const shift = batch.pageShift;
    const pageBytes = 2 ** shift;
    const shiftBig = BigInt(shift);
    const trace = this.deps.traces.mapNotify;
    // QEMU checks the target per page; a batch has one, so a wrong one fails every page alike.
    const runs = batch.targetAs === this.deps.systemMemory && shift <= 52;
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
              ? this.fd.mapRun(iova, shift, planned, 0, 0, 0)
              : this.fd.mapRun(iova, shift, planned, this.#plan.vaddr, step, this.#plan.flags);
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
    const applied = this.fd.mapRun(iova, batch.pageShift, n, this.#list, 0, flags);
    const trace = this.deps.traces.mapNotify;
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
    if (!(ram.view === this.deps.systemMemory.flatView && a >= ram.lo && a + pageBytes <= ram.hi)) {
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
    const view = this.deps.systemMemory.flatView;
    const fr = view.lookup(BigInt(addr));
    if (!fr || !(fr.mr instanceof RamRegion)) return false;
    const base = this.deps.hostPointer(fr.mr, BigInt(addr) - fr.start + fr.offsetInRegion);
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
    const t = this.deps.traces.mapNotify;
    if (t.enabled) t.emit(perm === IOMMUAccessFlags.NONE ? 'UNMAP' : 'MAP', iova, iova + addrMask);
    if (targetAs !== this.deps.systemMemory) {
      this.report(`Wrong target AS "${targetAs?.name ?? 'none'}", only system memory is allowed`);
      return;
    }
    const size = addrMask + 1n;
    if ((perm & IOMMUAccessFlags.RW) !== IOMMUAccessFlags.NONE) {
      const writable = (perm & IOMMUAccessFlags.WO) !== 0;
      const x = this.deps.systemMemory.translate(translatedAddr, writable, size);
      if (!(x.mr instanceof RamRegion)) {
        this.report(`iommu map to non memory area ${hex(x.xlat)}`);
        return;
      }
      if ((x.plen & addrMask) !== 0n) {
        this.report('iommu has granularity incompatible with target AS');
        return;
      }
      const vaddr = this.deps.hostPointer(x.mr, x.xlat);
      if (vaddr === undefined) {
        this.report(`iommu map to non memory area ${hex(x.xlat)}`);
        return;
      }
      const ret = this.dmaMap(iova, size, vaddr, !writable || x.readonly);
      if (ret !== 0) {
        this.report(
          `${this.qemu === '10.0' ? 'vfio_container_dma_map' : 'vfio_dma_map'}(0x${hex(this.pointer)}, 0x${hex(iova)}, 0x${hex(size)}, 0x${hex(vaddr)}) = ${ret} (${strerror(ret)})`,
        );
      }
    } else {
      const ret = this.dmaUnmap(iova, size);
      if (ret !== 0)
        this.report(
          `${this.qemu === '10.0' ? 'vfio_container_dma_unmap' : 'vfio_dma_unmap'}(0x${hex(this.pointer)}, 0x${hex(iova)}, 0x${hex(size)}) = ${ret} (${strerror(ret)})`,
        );
    }
  }

  /**
   * vfio_dma_map: READ always, WRITE unless read-only, so a write-only TCE maps read+write. EBUSY
   * gets one unmap-and-retry. Linux's +1 (misaligned iova) is not an error code: QEMU reports
   * "Success" and carries on.
   */
  dmaMap(iova: bigint, size: bigint, vaddr: bigint, readonly: boolean): number {
    const flags = VFIO_DMA_MAP_FLAG_READ | (readonly ? 0 : VFIO_DMA_MAP_FLAG_WRITE);
    let ret = this.fd.mapDma({ iova, size, vaddr, flags });
    if (ret === 0) return 0;
    if (ret === -Errno.EBUSY && this.dmaUnmap(iova, size) === 0) {
      ret = this.fd.mapDma({ iova, size, vaddr, flags });
      if (ret === 0) return 0;
    }
    const errno = ret < 0 ? ret : 0;
    this.report(`VFIO_MAP_DMA failed: ${strerror(errno)}`);
    return errno;
  }

  dmaUnmap(iova: bigint, size: bigint): number {
    const ret = this.fd.unmapDma({ iova, size });
    if (ret === 0) return 0;
    const errno = ret < 0 ? ret : 0;
    this.report(`VFIO_UNMAP_DMA failed: ${strerror(errno)}`);
    return errno;
  }
}

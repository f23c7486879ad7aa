import type { MachineEventBus, TraceEvent } from '@ddw/machine';
import type { AddressSpace, IommuMemoryRegion, MemoryListener, RamRegion } from '@ddw/memory';
import { VfioListener } from './container-listener.js';
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
import type { VfioKvm } from './kvm.js';
import { type HostDmaWindow, removeHostWindow } from './spapr-host-window.js';
import { strerror, type VfioQemuVersion } from './traces.js';
import { VfioError } from './vfio-error.js';

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

let nextFakePointer = 0x55d0_0000_0000n;
function nextPointer(): bigint {
  nextFakePointer += 0x1000n;
  return nextFakePointer;
}

/**
 * A VFIO container as QEMU 7.2 runs it for sPAPR (hw/vfio/common.c and hw/vfio/spapr.c): one per
 * PCI bus DMA address space, holding the host IOMMU container, the host DMA window list, and one
 * IOMMU notifier per guest window, turning every guest TCE change into a host map or unmap. Its
 * listener on the address space is a VfioListener; the notifiers' host side a VfioMapNotifier.
 */
export class VfioContainer {
  readonly fd: HostIommuContainer;
  type: HostIommuType = 'v2';
  /** Page sizes the host IOMMU offers (container->pgsizes). */
  pgSizes = 0n;
  readonly hostWindows: HostDmaWindow[] = [];
  readonly groups = new Set<string>();
  /** The first error while the container was being set up (container->error). */
  error: string | undefined;
  /** Set once set-up succeeded: later failures are runtime failures (QEMU's hw_error). */
  initialized = false;
  /** Why the container stopped working: what QEMU aborts on with hw_error. */
  broken: string | undefined;
  /** The container's %p in messages (not reproducible anyway). */
  readonly pointer = nextPointer();
  readonly #listener: VfioListener;
  #prereg: MemoryListener | undefined;

  private constructor(
    readonly as: AddressSpace,
    readonly deps: VfioContainerDeps,
  ) {
    this.fd = deps.host.openContainer();
    this.#listener = new VfioListener(this);
  }

  /** The QEMU version whose behaviour the container follows. */
  get qemu(): VfioQemuVersion {
    return this.deps.qemu ?? '7.2';
  }

  /** Guest IOMMU sections followed, for inspection. */
  get guestIommus(): readonly { mr: IommuMemoryRegion; iommuOffset: bigint }[] {
    return this.#listener.guestIommus;
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
      const removed = removeHostWindow(this, info.dma32WindowStart);
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

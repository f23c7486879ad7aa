import { formatHex } from '@ddw/machine';
import {
  IOMMUNotifier,
  IOMMUNotifierFlag,
  IommuMemoryRegion,
  type MemoryListener,
  type MemoryRegionSection,
  RamRegion,
} from '@ddw/memory';
import type { VfioContainer } from './container.js';
import { VfioMapNotifier } from './map-notifier.js';
import { createHostWindow, removeHostWindow } from './spapr-host-window.js';
import { strerror } from './traces.js';

/** QEMU's VFIOGuestIOMMU: one IOMMU section this container follows. */
export interface GuestIommu {
  readonly mr: IommuMemoryRegion;
  readonly notifier: IOMMUNotifier;
  /** offset_within_address_space - offset_within_region: turns region-relative iovas into bus addresses. */
  readonly iommuOffset: bigint;
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

/**
 * A container's listener on its address space (QEMU's vfio_memory_listener): a section that
 * appears gets its host window (v2), then, for a guest IOMMU region, a notifier replayed at once
 * or, for RAM, one map; a section that goes is unmapped and loses its notifier and host window.
 */
export class VfioListener implements MemoryListener {
  readonly name = 'vfio';
  readonly #container: VfioContainer;
  readonly #giommus: GuestIommu[] = [];
  readonly #mapper: VfioMapNotifier;

  constructor(container: VfioContainer) {
    this.#container = container;
    this.#mapper = new VfioMapNotifier(container);
  }

  /** The guest IOMMU sections followed, newest first. */
  get guestIommus(): readonly GuestIommu[] {
    return this.#giommus;
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
    const mask = this.#container.deps.hostPageSize - 1n;
    const iova = (section.offsetWithinAddressSpace + mask) & ~mask;
    const llend = (section.offsetWithinAddressSpace + section.size) & ~mask;
    return iova >= llend ? undefined : { iova, end: llend - 1n };
  }

  private unaligned(section: MemoryRegionSection): boolean {
    const mask = this.#container.deps.hostPageSize - 1n;
    return (section.offsetWithinAddressSpace & mask) !== (section.offsetWithinRegion & mask);
  }

  /** vfio_listener_region_{add,del}_skip (7.2) or vfio_listener_region_skip (10.0). */
  private traceSkip(op: 'region_add' | 'region_del', start: bigint, last: bigint): void {
    const t =
      op === 'region_add'
        ? this.#container.deps.traces.regionAddSkip
        : this.#container.deps.traces.regionDelSkip;
    if (!t.enabled) return;
    if (this.#container.qemu === '10.0') t.emit(op, start, last);
    else t.emit(start, last);
  }

  /** A section whose address and offset disagree within a host page: QEMU reports it and ignores it. */
  private reportUnaligned(where: string, section: MemoryRegionSection): void {
    if (this.#container.qemu !== '10.0') {
      this.#container.report(`${where} received unaligned region`);
      return;
    }
    // 10.0 checks in vfio_listener_valid_section and says more.
    this.#container.report(
      `vfio_listener_valid_section received unaligned region ${qemuRegionName(section.mr)} iova=${formatHex(section.offsetWithinAddressSpace)} offset_within_region=${formatHex(section.offsetWithinRegion)} qemu_real_host_page_size=${formatHex(this.#container.deps.hostPageSize)}`,
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
    const kvm = this.#container.deps.kvm;
    const mr = section.mr;
    if (!kvm || !(mr instanceof IommuMemoryRegion) || !hasSpaprTceFd(mr)) return true;
    const tablefd = mr.spaprTceFd();
    if (tablefd === undefined) return true;
    for (const group of this.#container.groups) {
      const groupfd = kvm.groupFd(group);
      const ret = kvm.setSpaprTce(tablefd, this.#container.fd.kvmTables?.() ?? []);
      if (ret !== 0) {
        if (this.#container.qemu === '10.0') {
          this.#container.fail(
            qemuRegionName(mr),
            `vfio: failed GROUP_SET_SPAPR_TCE for KVM VFIO device ${tablefd} and group fd ${groupfd}: ${strerror(ret)}`,
          );
        } else {
          this.#container.report(
            `vfio: failed to setup fd ${tablefd} for a group with fd ${groupfd}: ${strerror(ret)}`,
          );
        }
        return false;
      }
      const t = this.#container.deps.traces.groupAttach;
      if (t?.enabled) t.emit(groupfd, tablefd);
    }
    return true;
  }

  regionAdd(section: MemoryRegionSection): void {
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
    const v10 = this.#container.qemu === '10.0';
    // The "Region NAME:" of a set-up error: 10.0 with QEMU's region name; 7.2 keeps ddw's (as before).
    const regionName = v10 ? qemuRegionName(section.mr) : section.mr.name;

    // 10.0 checks a v1 section whole, before anything else (vfio_spapr_container_add_section_window).
    if (
      v10 &&
      this.#container.type === 'v1' &&
      !this.#container.hostWindows.some((w) => w.minIova <= start && last <= w.maxIova)
    ) {
      this.#container.fail(
        regionName,
        `Container ${formatHex(this.#container.pointer)} can't map guest IOVA region ${formatHex(start)}..${formatHex(last)}`,
      );
      return;
    }

    if (this.#container.type === 'v2') {
      const clash = this.#container.hostWindows.find((w) => w.minIova <= last && start <= w.maxIova);
      if (clash) {
        // QEMU's message lacks the space after "existing"; kept so logs compare.
        this.#container.fail(
          regionName,
          `region [${formatHex(start)},${formatHex(last)}] overlaps with existinghost DMA window [${formatHex(clash.minIova)},${formatHex(clash.maxIova)}]`,
        );
        return;
      }
      const created = createHostWindow(this.#container, section);
      if ('errno' in created) {
        this.#container.fail(regionName, `Failed to create SPAPR window: ${strerror(created.errno)}`);
        return;
      }
      this.#container.hostWindows.push({ minIova: start, maxIova: last, pgSizes: created.pageSize });
      if (!this.attachToKvm(section)) return;
    }

    if (!v10 && !this.#container.hostWindows.some((w) => w.minIova <= iova && end <= w.maxIova)) {
      this.#container.fail(
        section.mr.name,
        `Container ${formatHex(this.#container.pointer)} can't map guest IOVA region ${formatHex(iova)}..${formatHex(end)}`,
      );
      return;
    }

    const mr = section.mr;
    if (mr instanceof IommuMemoryRegion) {
      const t = this.#container.deps.traces.regionAddIommu;
      if (t.enabled) {
        if (v10) t.emit(qemuRegionName(mr), iova, end);
        else t.emit(iova, end);
      }
      const giommu: GuestIommu = {
        mr,
        iommuOffset: section.offsetWithinAddressSpace - section.offsetWithinRegion,
        notifier: new IOMMUNotifier(
          (entry) => this.#mapper.mapNotify(giommu, entry),
          IOMMUNotifierFlag.MAP | IOMMUNotifierFlag.UNMAP,
          section.offsetWithinRegion,
          section.offsetWithinRegion + section.size - 1n,
          0,
          (batch) => this.#mapper.mapNotifyBatch(giommu, batch),
        ),
      };
      try {
        // Registering flips need_vfio: an in-kernel table moves to userspace here, unless the
        // host's KVM_CAP_SPAPR_TCE_VFIO keeps it in the kernel (attached above).
        mr.registerNotifier(giommu.notifier);
      } catch (error) {
        this.#container.fail(mr.name, `${error instanceof Error ? error.message : String(error)}`);
        return;
      }
      this.#giommus.unshift(giommu);
      mr.replay(giommu.notifier);
      return;
    }

    // Plain RAM in this address space: map it whole.
    if (mr instanceof RamRegion) {
      const vaddr = this.#container.deps.hostPointer(mr, section.offsetWithinRegion + (iova - start));
      if (vaddr === undefined) {
        this.#container.fail(mr.name, 'RAM without a host pointer');
        return;
      }
      const ret = this.#container.dmaMap(iova, end - iova + 1n, vaddr, section.readonly);
      if (ret !== 0) {
        this.#container.fail(
          mr.name,
          `${this.#container.qemu === '10.0' ? 'vfio_container_dma_map' : 'vfio_dma_map'}(${formatHex(this.#container.pointer)}, ${formatHex(iova)}, ${formatHex(end - iova + 1n)}, ${formatHex(vaddr)}) = ${ret} (${strerror(ret)})`,
        );
      }
    }
  }

  regionDel(section: MemoryRegionSection): void {
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
      const t = this.#container.deps.traces.regionDelIommu;
      if (this.#container.qemu === '10.0' && t?.enabled) t.emit(qemuRegionName(mr));
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
    const t = this.#container.deps.traces.regionDel;
    if (t.enabled) t.emit(iova, end);
    // One unmap for the whole section clears whatever the notifier mapped in it.
    const size = end - iova + 1n;
    const ret = this.#container.dmaUnmap(iova, size);
    if (ret !== 0)
      this.#container.report(
        `${this.#container.qemu === '10.0' ? 'vfio_container_dma_unmap' : 'vfio_dma_unmap'}(${formatHex(this.#container.pointer)}, ${formatHex(iova)}, ${formatHex(size)}) = ${ret} (${strerror(ret)})`,
      );
    if (this.#container.type === 'v2') {
      removeHostWindow(this.#container, start);
      const last = start + section.size - 1n;
      const at = this.#container.hostWindows.findIndex((w) => w.minIova === start && w.maxIova === last);
      if (at < 0) {
        const where =
          this.#container.qemu === '10.0'
            ? 'vfio_spapr_container_del_section_window'
            : 'vfio_listener_region_del';
        this.#container.abort(`${where}: Cannot delete missing window at ${start.toString(16)}`);
        return;
      }
      this.#container.hostWindows.splice(at, 1);
    }
  }
}

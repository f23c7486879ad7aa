import type { TraceEvent } from '@ddw/machine';
import { IommuMemoryRegion, type MemoryListener, type MemoryRegionSection, RamRegion } from '@ddw/memory';
import type { VfioContainer } from '@ddw/vfio-common';

export interface PreregTraces {
  addSkip: TraceEvent;
  delSkip: TraceEvent;
  register: TraceEvent;
  unregister: TraceEvent;
}

/**
 * QEMU's vfio_prereg_listener (hw/vfio/spapr.c) for one SPAPR TCE v2 container: follows guest
 * physical memory and registers every RAM section with the host IOMMU, which maps DMA only into
 * registered memory. Device RAM (a passthrough BAR) is skipped; a section not aligned to the host
 * page size is refused before any host call.
 */
export function preregListener(container: VfioContainer, traces: PreregTraces): MemoryListener {
  const { hostPageSize } = container.deps;
  const mask = hostPageSize - 1n;

  /** Not RAM, or device RAM: nothing to register. An IOMMU in system memory cannot be. */
  const skipped = (section: MemoryRegionSection): boolean => {
    if (section.mr instanceof IommuMemoryRegion) {
      container.abort('Cannot possibly preregister IOMMU memory');
      return true;
    }
    return !(section.mr instanceof RamRegion) || section.mr.ramDevice;
  };
  const unaligned = (section: MemoryRegionSection): boolean =>
    (section.offsetWithinAddressSpace & mask) !== 0n ||
    (section.offsetWithinRegion & mask) !== 0n ||
    (section.size & mask) !== 0n;
  /** The host pointer of the section's first byte. */
  const vaddrOf = (section: MemoryRegionSection): bigint | undefined =>
    container.deps.hostPointer(section.mr as RamRegion, section.offsetWithinRegion);

  return {
    name: 'vfio-prereg',
    regionAdd(section) {
      if (skipped(section)) {
        if (traces.addSkip.enabled) {
          traces.addSkip.emit(
            section.offsetWithinAddressSpace,
            section.offsetWithinAddressSpace + section.size - 1n,
          );
        }
        return;
      }
      if (unaligned(section)) {
        container.report('vfio_prereg_listener_region_add received unaligned region');
        return;
      }
      if (section.size === 0n) return;
      const vaddr = vaddrOf(section);
      if (vaddr === undefined) return;
      const ret = container.fd.registerMemory({ vaddr, size: section.size });
      if (traces.register.enabled) traces.register.emit(vaddr, section.size, ret);
      if (ret === 0) return;
      if (!container.initialized) {
        // QEMU builds this message from the ioctl's -1, not from errno, so it always reads
        // "Operation not permitted"; kept as QEMU prints it.
        container.error ??= 'Memory registering failed: Operation not permitted';
      } else {
        container.abort('vfio: Memory registering failed, unable to continue');
      }
    },
    regionDel(section) {
      if (skipped(section)) {
        if (traces.delSkip.enabled) {
          traces.delSkip.emit(
            section.offsetWithinAddressSpace,
            section.offsetWithinAddressSpace + section.size - 1n,
          );
        }
        return;
      }
      if (unaligned(section)) {
        container.report('vfio_prereg_listener_region_del received unaligned region');
        return;
      }
      if (section.size === 0n) return;
      const vaddr = vaddrOf(section);
      if (vaddr === undefined) return;
      const ret = container.fd.unregisterMemory({ vaddr, size: section.size });
      if (traces.unregister.enabled) traces.unregister.emit(vaddr, section.size, ret);
    },
  };
}

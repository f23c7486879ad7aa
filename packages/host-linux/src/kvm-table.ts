import type { HostKvmTable } from '@ddw/vfio-common';
import type { HostState, RegisteredRegion } from './host-state.js';
import { entryHalvesBig, halves, TCE_READ, TCE_WRITE } from './tce-store.js';
import type { TceWindow } from './tce-window.js';

/**
 * A window's table as the host's KVM drives it (book3s_64_vio.c): a map needs the page in a
 * region pre-registered by this process with pages at least as large, else it is H_TOO_HARD (a v1
 * container registers nothing, so KVM can never map for it: "v1 is handled via ioctl()"). A map
 * replaces the entry as iommu_tce_xchg does; write implies read, as PowerNV sets it. `live` says
 * whether the window is still in its container, `isV2` whether the container is a v2 one now.
 */
export function kvmTableView(
  host: HostState,
  window: TceWindow,
  live: () => boolean,
  isV2: () => boolean,
): HostKvmTable {
  const mappable = (ua: bigint): RegisteredRegion | undefined => {
    if (!isV2()) return undefined;
    const region = host.regionHolding(ua, window.pageSize);
    return region && region.pageShift >= window.info.pageShift ? region : undefined;
  };
  const index = (iova: bigint) => Number((iova - window.start) >> window.shift);
  return {
    startAddr: window.start,
    pageShift: window.info.pageShift,
    span: window.info.tableSpan,
    canMap: (ua) => mappable(ua) !== undefined,
    map: (iova, ua, write) => {
      const region = mappable(ua);
      if (region === undefined) return 'H_TOO_HARD';
      // A table KVM still holds after its window was removed is no longer in the hardware.
      if (!live() || !window.contains(iova)) return 0;
      entryHalvesBig(ua & ~(window.pageSize - 1n), write ? TCE_READ | TCE_WRITE : TCE_READ);
      window.write(index(iova), 1, halves[0]!, halves[1]!, 0);
      return 0;
    },
    unmap: (iova) => {
      if (live() && window.contains(iova)) window.clear(index(iova), 1);
      return 0;
    },
  };
}

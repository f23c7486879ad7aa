import { formatHex } from '@ddw/machine';
import { type IommuMemoryRegion, type MemoryRegionSection, UINT64_MAX } from '@ddw/memory';
import type { VfioContainer } from './container.js';
import { Errno } from './host/host-iommu.js';
import { strerror } from './traces.js';

/** QEMU's VFIOHostDMAWindow: an IOVA range the host IOMMU can map, inclusive. */
export interface HostDmaWindow {
  minIova: bigint;
  maxIova: bigint;
  pgSizes: bigint;
}

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
 * vfio_spapr_create_window: the page size is the guest window's, capped by the RAM backing page
 * and reduced to one the host offers; levels are guessed from the table size and retried
 * upwards; a start address other than the window's is refused.
 */
export function createHostWindow(
  container: VfioContainer,
  section: MemoryRegionSection,
): { pageSize: bigint } | { errno: number } {
  const mr = section.mr as IommuMemoryRegion;
  const minPage = mr.getMinPageSize();
  let pageSize = minPage > container.deps.ramPageSize ? container.deps.ramPageSize : minPage;
  const usable = container.pgSizes & (pageSize | (pageSize - 1n));
  pageSize = usable === 0n ? 0n : highestBit(usable);
  if (pageSize === 0n) {
    container.report(
      `Host doesn't support page size ${formatHex(minPage)}, the supported mask is ${formatHex(container.pgSizes)}`,
    );
    return { errno: -Errno.EINVAL };
  }
  const windowSize = section.size;
  const pageShift = ctz64(pageSize);
  // entries is a 32-bit unsigned in QEMU: a window of 2^32 pages or more truncates.
  const entries = (windowSize >> BigInt(pageShift)) & 0xffffffffn;
  const bitsTotal = ctz64((entries * 8n) & UINT64_MAX);
  const hostShift = ctz64(container.deps.hostPageSize);
  const bitsPerLevel = hostShift + 8;
  let levels = Math.ceil(bitsTotal / bitsPerLevel);
  const maxLevels = Math.floor((64 - pageShift) / hostShift);
  let result: { ret: number; startAddr?: bigint } = { ret: -Errno.EINVAL };
  for (; levels <= maxLevels; levels++) {
    result = container.fd.createWindow({ pageShift, windowSize, levels });
    if (result.ret === 0) break;
  }
  if (result.ret !== 0) {
    container.report(`Failed to create a window, ret = -1 (${strerror(result.ret)})`);
    return { errno: result.ret };
  }
  const startAddr = result.startAddr ?? 0n;
  if (startAddr !== section.offsetWithinAddressSpace) {
    removeHostWindow(container, startAddr);
    container.report(
      `Host doesn't support DMA window at ${section.offsetWithinAddressSpace.toString(16)}, must be ${startAddr.toString(16)}`,
    );
    return { errno: -Errno.EINVAL };
  }
  const t = container.deps.traces.createWindow;
  if (t.enabled) t.emit(pageShift, levels, windowSize, startAddr);
  return { pageSize };
}

/** vfio_spapr_remove_window. */
export function removeHostWindow(container: VfioContainer, startAddr: bigint): number {
  const ret = container.fd.removeWindow({ startAddr });
  if (ret !== 0) {
    container.report(`Failed to remove window at ${startAddr.toString(16)}`);
    return ret;
  }
  const t = container.deps.traces.removeWindow;
  if (t.enabled) t.emit(startAddr);
  return 0;
}

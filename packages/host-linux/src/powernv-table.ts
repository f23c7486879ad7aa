import { Errno, type HostIommuConfig } from '@ddw/vfio-common';
import { isPowerOfTwo, log2 } from './bit-math.js';
import type { HostState } from './host-state.js';
import { type SimulatedHostWindow, TceWindow } from './tce-window.js';

/**
 * PowerNV's (IODA2) DMA windows: where a window sits, the table the platform allocates for it,
 * what that table books against RLIMIT_MEMLOCK, and the geometry rules it refuses windows by.
 */

/** Bus address of window slot 1 on PowerNV: the PHB selects TVE#1 by address bit 59. */
export const POWERNV_SLOT1_ADDR = 1n << 59n;

/** The table geometry rule of PowerNV rejects a table whose indexing would reach bit 60. */
const TABLE_BITS_LIMIT = 60;
/** The default window always uses 4K IOMMU pages, whatever the platform also supports. */
export const DEFAULT_WINDOW_PAGE_SHIFT = 12;
/** IOMMU_TABLE_GROUP_MAX_TABLES: window slots exist for at most two tables. */
export const MAX_SLOTS = 2;

/**
 * PowerNV's table for a window of 2^windowShift bytes in 2^pageShift pages on `levels` levels: the
 * bytes it books against RLIMIT_MEMLOCK, its per-level block shift and its index bits.
 */
function tableGeometry(
  pageShift: number,
  windowShift: number,
  levels: number,
  hostPageShift: number,
): { accountedBytes: bigint; levelShift: number; entriesShift: number } {
  const entriesShift = windowShift - pageShift;
  // Each level is cut into blocks of one level's share of the index bits, never less than a host page.
  const levelShift = Math.max(Math.ceil(entriesShift / levels) + 3, hostPageShift);
  const block = 1n << BigInt(levelShift);
  // The leaves hold every TCE (at least 4 KiB of them); each level above holds one 8-byte pointer
  // per block below, and is itself at least one block. Every level is rounded up to whole blocks.
  let levelBytes = 1n << BigInt(entriesShift + 3);
  if (levelBytes < 0x1000n) levelBytes = 0x1000n;
  let bytes = 0n;
  for (let level = 0; level < levels; level++) {
    bytes += ((levelBytes + block - 1n) / block) * block;
    levelBytes = (levelBytes / block) * 8n;
    if (levelBytes < block) levelBytes = block;
  }
  // The v2 driver keeps a userspace copy of every TCE next to the hardware table.
  return { accountedBytes: bytes * 2n, levelShift, entriesShift };
}

/**
 * TCE_CREATE in `slot` (the container's first free slot, -1 when none), in the kernel's order of
 * checks: the window with its table booked against the process's locked memory, or -errno with
 * nothing booked.
 */
export function createPowernvWindow(
  host: HostState,
  slot: number,
  pageShift: number,
  windowSize: bigint,
  levels: number,
  isDefault: boolean,
): TceWindow | number {
  const config = host.config;
  if (slot < 0) return -Errno.ENOSPC;
  if (!Number.isInteger(pageShift) || pageShift < 0 || pageShift > 63) return -Errno.EINVAL;
  if ((config.pgSizes & (1n << BigInt(pageShift))) === 0n) return -Errno.EINVAL;
  if (!Number.isInteger(levels) || levels < 1 || levels > config.levels || !isPowerOfTwo(windowSize)) {
    return -Errno.EINVAL;
  }
  const windowShift = log2(windowSize);
  // Linux would shift by a negative count here; QEMU never asks for a window below one page.
  if (windowShift < pageShift) return -Errno.EINVAL;
  const geometry = tableGeometry(pageShift, windowShift, levels, host.hostPageShift);
  const lockedPages = Number(geometry.accountedBytes >> BigInt(host.hostPageShift));
  const accounted = host.account(lockedPages);
  if (accounted) return accounted;
  if ((geometry.levelShift - 3) * levels + pageShift >= TABLE_BITS_LIMIT) {
    host.unaccount(lockedPages);
    return -Errno.EINVAL;
  }
  // The table is at least one host page of TCEs and the platform takes the window's extent from
  // the table, not from the request: the it_size quirk (see SimulatedHostWindow.tableSpan).
  const tableEntriesShift = Math.max(geometry.entriesShift, host.hostPageShift - 3);
  const info: SimulatedHostWindow = Object.freeze({
    slot,
    startAddr: slot === 0 ? config.dma32WindowStart : POWERNV_SLOT1_ADDR,
    size: windowSize,
    pageShift,
    levels,
    isDefault,
    tableSpan: 1n << BigInt(tableEntriesShift + pageShift),
  });
  return new TceWindow(info, lockedPages);
}

/**
 * v1 uses the platform's own 32-bit table: it is there as soon as the type is set (nothing booked);
 * undefined when the 32-bit window is smaller than one of its pages.
 */
export function powernvV1Window(config: HostIommuConfig): TceWindow | undefined {
  const size = config.dma32WindowSize;
  if (size < 1n << BigInt(DEFAULT_WINDOW_PAGE_SHIFT)) return undefined;
  const info: SimulatedHostWindow = Object.freeze({
    slot: 0,
    startAddr: config.dma32WindowStart,
    size,
    pageShift: DEFAULT_WINDOW_PAGE_SHIFT,
    levels: 1,
    isDefault: true,
    tableSpan: (size >> BigInt(DEFAULT_WINDOW_PAGE_SHIFT)) << BigInt(DEFAULT_WINDOW_PAGE_SHIFT),
  });
  return new TceWindow(info, 0);
}

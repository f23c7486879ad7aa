import { TWO_32 } from '@ddw/memory';
import { Errno } from '@ddw/vfio-common';
import type { HostState, RegisteredRegion } from './host-state.js';
import { entryHalves, entryHalvesBig, halves } from './tce-store.js';
import type { TceWindow } from './tce-window.js';

/**
 * MAP_DMA's walk over the pages of one request, as each IOMMU type checks them: v2 maps only
 * memory pre-registered in regions that can back the window's pages, v1 pins the host memory
 * blocks under the pages. Whole runs of pages that pass are written at once.
 */

/** Host addresses the run path carries as numbers stay below this (exact doubles). */
export const EXACT_LIMIT = 2 ** 53;

/** Scratch bytes for an irregular list's entries, kept by a container and grown as needed. */
export interface EntryListBuffer {
  bytes: Uint8Array;
}

/**
 * How many of `n` pages of `size` bytes from host address `v`, page k at v + k * step * size, end
 * at or below `end` (all page addresses exact).
 */
export function pagesBelow(v: number, size: number, step: number, end: number, n: number): number {
  if (v + size > end) return 0;
  if (step === 0) return n;
  return Math.min(n, Math.floor((end - size - v) / (step * size)) + 1);
}

/** Whether MAP_DMA of `pages` window pages from `ua` would succeed (v2, the checks of mapFromRegions). */
export function regionsFit(host: HostState, window: TceWindow, ua: bigint, pages: number): boolean {
  let done = 0;
  while (done < pages) {
    const at = ua + (BigInt(done) << window.shift);
    const region = host.regionHolding(at, window.pageSize);
    if (!region || region.pageShift < window.info.pageShift) return false;
    done += Number((region.end - at) >> window.shift);
  }
  return true;
}

/** Whether MAP_DMA of `pages` window pages from `ua` would succeed (v1, the checks of mapFromBlocks). */
export function blocksFit(host: HostState, window: TceWindow, ua: bigint, pages: number): boolean {
  let done = 0;
  while (done < pages) {
    const at = ua + (BigInt(done) << window.shift);
    const hit = host.memory.find(at);
    if (!hit || hit.block.pageSize < window.pageSize) return false;
    const inBlock = Number((hit.block.vaddr + hit.block.size - at) >> window.shift);
    if (inBlock === 0) return false;
    done += inBlock;
  }
  return true;
}

/** Per page, the IOMMU page must lie in one registered region that can back pages this large. */
export function mapFromRegions(
  host: HostState,
  window: TceWindow,
  first: number,
  pages: number,
  vaddr: bigint,
  perm: number,
): number {
  const pageShift = window.info.pageShift;
  let done = 0;
  while (done < pages) {
    const ua = vaddr + (BigInt(done) << window.shift);
    const region = host.regionHolding(ua, window.pageSize);
    if (!region || region.pageShift < pageShift) {
      window.clear(first, done);
      return -Errno.EINVAL;
    }
    const inRegion = Number((region.end - ua) >> window.shift);
    const run = Math.min(pages - done, inRegion);
    entryHalvesBig(ua, perm);
    window.write(first + done, run, halves[0]!, halves[1]!, window.pageBytes);
    done += run;
  }
  return 0;
}

/** Per page, v1 pins the host page under vaddr, which must hold the whole IOMMU page. */
export function mapFromBlocks(
  host: HostState,
  window: TceWindow,
  first: number,
  pages: number,
  vaddr: bigint,
  perm: number,
): number {
  const memory = host.memory;
  let done = 0;
  while (done < pages) {
    const ua = vaddr + (BigInt(done) << window.shift);
    const hit = memory.find(ua);
    let ret = 0;
    if (!hit) ret = -Errno.EFAULT;
    else if (hit.block.pageSize < window.pageSize) ret = -Errno.EPERM;
    const inBlock = hit ? Number((hit.block.vaddr + hit.block.size - ua) >> window.shift) : 0;
    if (ret === 0 && inBlock === 0) ret = -Errno.EFAULT;
    if (ret) {
      window.clear(first, done);
      return ret;
    }
    const run = Math.min(pages - done, inBlock);
    entryHalvesBig(ua, perm);
    window.write(first + done, run, halves[0]!, halves[1]!, window.pageBytes);
    done += run;
  }
  return 0;
}

/**
 * Pages `from`.. of a list map (v2, one window page each) from window index `first`, for as long
 * as each lies in the window, is page aligned and lies in a registered region that can back it:
 * exactly what their MAP_DMA calls would do, in one write. Returns how many it took.
 */
export function mapListFromRegions(
  host: HostState,
  window: TceWindow,
  first: number,
  list: Float64Array,
  from: number,
  count: number,
  perm: number,
  buffer: EntryListBuffer,
): number {
  const size = window.pageBytes;
  const room = Math.min(count - from, window.table.entries - first);
  if (buffer.bytes.length < room * 8) buffer.bytes = new Uint8Array(room * 8);
  const view = new DataView(buffer.bytes.buffer);
  let region: RegisteredRegion | undefined;
  let lo = 0;
  let hi = 0;
  // Page alignment checked on the entry's 32-bit halves (a float modulo per page costs more).
  const lowMask = size >= TWO_32 ? -1 : size - 1;
  const highMask = size > TWO_32 ? size / TWO_32 - 1 : 0;
  let m = 0;
  for (; m < room; m++) {
    const v = list[from + m]!;
    if (!(Number.isSafeInteger(v) && v >= 0 && v < EXACT_LIMIT)) break;
    entryHalves(v, 0);
    if (((halves[0]! & highMask) | (halves[1]! & lowMask)) !== 0) break;
    if (region === undefined || !(v >= lo && v + size <= hi)) {
      region = host.regionHolding(BigInt(v), window.pageSize);
      if (!region || region.pageShift < window.info.pageShift) break;
      lo = Number(region.vaddr);
      hi = Math.min(Number(region.end), EXACT_LIMIT);
      if (!(v >= lo && v + size <= hi)) break;
    }
    view.setUint32(m * 8, halves[0]!);
    view.setUint32(m * 8 + 4, halves[1]! + perm);
  }
  if (m === 0) return 0;
  window.writeList(first, m, view);
  return m;
}

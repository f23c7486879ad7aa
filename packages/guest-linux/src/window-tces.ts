/**
 * The TCE work around a DDW, through the guest's TCE hypercalls: mapping RAM 1:1 into a direct
 * window, clearing a window before it is removed, and the table a dynamic window allocates from.
 */
import type { DmaWindowInfo } from './api.js';
import { propertyCell } from './device-tree.js';
import { IommuTable } from './iommu-table.js';
import { orderBase2, type RamLayout } from './ram.js';
import type { TceCalls } from './tce.js';

/** The bus range of a QEMU PHB's 32-bit MMIO window, which a dynamic window never hands out. */
const MMIO32_BUS_START = 0x80000000n;
const MMIO32_BUS_END = 0x100000000n;

/**
 * Maps all RAM 1:1 (bus = phys + window address), range by range in whole guest pages of
 * `pageSize`, each range's start rounded down to the TCE size and its count rounded down (a tail
 * shorter than a TCE stays unmapped), RAM above `limit` left out. Stops at the first failing
 * range and returns its hypercall's return code (0 when everything was mapped).
 */
export function populateDirectWindow(
  tce: TceCalls,
  pageSize: bigint,
  ram: RamLayout,
  info: DmaWindowInfo,
  limit?: bigint,
): bigint {
  const P = pageSize;
  const T = 1n << BigInt(info.pageShift);
  for (const range of ram.ranges) {
    const end = limit !== undefined && range.end > limit ? limit : range.end;
    const firstPfn = (range.start + P - 1n) / P;
    const endPfn = end / P;
    if (endPfn <= firstPfn) continue;
    const start = firstPfn * P;
    const aligned = start & ~(T - 1n);
    const count = ((endPfn - firstPfn) * P + (start - aligned)) >> BigInt(info.pageShift);
    const rc = tce.populate(info.liobn, info.busOffset, aligned, info.pageShift, Number(count));
    if (rc !== 0n) return rc;
  }
  return 0n;
}

/** Clears a whole window the way its removal does: 2^windowShift bytes from its start. */
export function clearWindow(tce: TceCalls, pageSize: bigint, info: DmaWindowInfo): void {
  const P = pageSize;
  const pfns = info.windowShift >= 64 ? 0n : (1n << BigInt(info.windowShift)) / P;
  const count = (pfns * P) >> BigInt(info.pageShift);
  tce.clearRange(info.liobn, info.busOffset, info.pageShift, count);
}

/**
 * The clear before removing the default window. ibm,dma-window (liobn, address, size cells) is
 * read as a window-info property: bus address from bytes 8-15, TCE shift from 16-19, window shift
 * from 20-23 (past a 20-byte property: read as 0 here; in the kernel it is whatever follows).
 * Shifts behave as the 64-bit POWER shift instructions (amount mod 128, 64 and more give 0).
 * On QEMU's property this is one H_STUFF_TCE of 0 entries, which QEMU answers H_PARAMETER.
 * Returns the last hypercall's return code.
 */
export function clearDefaultWindow(tce: TceCalls, pageSize: bigint, prop: Uint8Array): bigint {
  const liobn = propertyCell(prop, 0);
  const base = (BigInt(propertyCell(prop, 8)) << 32n) | BigInt(propertyCell(prop, 12));
  const tceShift = propertyCell(prop, 16);
  const windowShift = propertyCell(prop, 20);
  const pageShift = BigInt(orderBase2(pageSize));
  const pfns = shl64(1n, (windowShift - Number(pageShift)) >>> 0);
  const tceSize = shl64(1n, tceShift);
  const count = shr64(BigInt.asUintN(64, pfns << pageShift), tceShift);
  let left = count;
  let ioba = base;
  let rc = 0n;
  do {
    const k = left < 512n ? left : 512n;
    rc = tce.stuffTce(liobn, BigInt.asUintN(64, ioba), 0n, Number(k));
    ioba += k * tceSize;
    left -= k;
  } while (left > 0n && rc === 0n);
  return rc;
}

/**
 * The table the DMA API allocates from in a dynamic window (RAM does not fit): the 32-bit MMIO
 * bus range is kept out, and the whole table is cleared before use.
 */
export function dynamicWindowTable(tce: TceCalls, info: DmaWindowInfo): IommuTable {
  const entries = Number((2n ** BigInt(info.windowShift)) >> BigInt(info.pageShift));
  const table = new IommuTable(info.liobn, info.busOffset, info.pageShift, entries);
  table.reserveBus(MMIO32_BUS_START, MMIO32_BUS_END);
  tce.freePages(info.liobn, info.busOffset, info.pageShift, entries);
  return table;
}

function shl64(value: bigint, amount: number): bigint {
  const n = amount & 127;
  return n >= 64 ? 0n : BigInt.asUintN(64, value << BigInt(n));
}

function shr64(value: bigint, amount: number): bigint {
  const n = amount & 127;
  return n >= 64 ? 0n : value >> BigInt(n);
}

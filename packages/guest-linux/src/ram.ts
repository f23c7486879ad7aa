import type { LinuxGeneration } from './api.js';
import { cellsToBigint, type GuestTreeView } from './device-tree.js';

/** Guest RAM as Linux learns it from the device tree. */
export interface RamLayout {
  /** System RAM ranges [start, end), sorted, adjacent ones merged (memblock merges them). */
  ranges: { start: bigint; end: bigint }[];
  /** The first 64-bit value of /rtas ibm,lrdr-capacity: the end of hotpluggable memory (0: none). */
  hotplugMax: bigint;
  /** Whether /rtas has ibm,lrdr-capacity at all. */
  lrdrPresent: boolean;
  /**
   * The memory block (LMB) size: ibm,lrdr-capacity's second 64-bit value, 256 MiB when absent.
   * Memory comes online one block at a time.
   */
  lmbSize: bigint;
  /**
   * The highest RAM address a window must cover: the larger of hotplugMax and the end of every
   * memory node's reg ranges.
   */
  maxAddress: bigint;
}

/** Reads `/memory*` nodes' reg (with the root's cell counts) and /rtas ibm,lrdr-capacity. */
export function readRamLayout(tree: GuestTreeView): RamLayout {
  const addressCells = tree.getCells('/', '#address-cells')?.[0] ?? 2;
  const sizeCells = tree.getCells('/', '#size-cells')?.[0] ?? 2;
  const raw: { start: bigint; end: bigint }[] = [];
  for (const node of tree.nodes()) {
    if (!/^\/memory(@[^/]*)?$/.test(node)) continue;
    const reg = tree.getCells(node, 'reg') ?? [];
    const entry = addressCells + sizeCells;
    for (let at = 0; at + entry <= reg.length; at += entry) {
      const start = cellsToBigint(reg, at, addressCells);
      const size = cellsToBigint(reg, at + addressCells, sizeCells);
      if (size > 0n) raw.push({ start, end: start + size });
    }
  }
  raw.push(...assignedLmbs(tree));
  raw.sort((a, b) => (a.start < b.start ? -1 : a.start > b.start ? 1 : 0));
  const ranges: { start: bigint; end: bigint }[] = [];
  for (const r of raw) {
    const last = ranges[ranges.length - 1];
    if (last && r.start <= last.end) {
      if (r.end > last.end) last.end = r.end;
    } else {
      ranges.push({ ...r });
    }
  }
  const lrdr = tree.getCells('/rtas', 'ibm,lrdr-capacity');
  const hotplugMax = lrdr && lrdr.length >= 2 ? cellsToBigint(lrdr, 0, 2) : 0n;
  const lmb = lrdr && lrdr.length >= 4 ? cellsToBigint(lrdr, 2, 2) : 0n;
  let maxAddress = hotplugMax;
  for (const r of ranges) if (r.end > maxAddress) maxAddress = r.end;
  return {
    ranges,
    hotplugMax,
    lrdrPresent: lrdr !== undefined && lrdr.length >= 2,
    lmbSize: lmb > 0n ? lmb : DEFAULT_LMB_SIZE,
    maxAddress,
  };
}

const DEFAULT_LMB_SIZE = 0x10000000n;

/** Where a pseries machine lists hotpluggable memory blocks (PAPR's drconf memory, v2 format). */
const DRCONF_NODE = '/ibm,dynamic-reconfiguration-memory';
const DRCONF_LMB_ASSIGNED = 0x8;
const DRCONF_LMB_RESERVED = 0x80;

/**
 * The LMB runs `ibm,dynamic-memory-v2` marks assigned (memory plugged before this boot, such as
 * a DIMM added before a reset): Linux boots with them as System RAM, like the /memory nodes.
 * Each entry is 6 cells: count, 64-bit base, DRC index, associativity index, flags.
 */
function assignedLmbs(tree: GuestTreeView): { start: bigint; end: bigint }[] {
  const cells = tree.getCells(DRCONF_NODE, 'ibm,dynamic-memory-v2');
  const sizeCells = tree.getCells(DRCONF_NODE, 'ibm,lmb-size');
  if (!cells || !sizeCells || sizeCells.length < 2) return [];
  const lmbSize = cellsToBigint(sizeCells, 0, 2);
  const out: { start: bigint; end: bigint }[] = [];
  for (let i = 0, at = 1; i < (cells[0] ?? 0) && at + 6 <= cells.length; i++, at += 6) {
    const flags = cells[at + 5]!;
    if ((flags & DRCONF_LMB_ASSIGNED) === 0 || (flags & DRCONF_LMB_RESERVED) !== 0) continue;
    const start = cellsToBigint(cells, at + 1, 2);
    out.push({ start, end: start + BigInt(cells[at]!) * lmbSize });
  }
  return out;
}

/**
 * The highest address a DDW must cover, as the generation's ddw_memory_hotplug_max() computes it.
 * 6.12 (NUMA and memory hotplug configured, as distributions build it) takes
 * hot_add_drconf_memory_max(): ibm,lrdr-capacity alone when /rtas has it, even when it is 0
 * (QEMU without maxmem); the dynamic-reconfiguration-memory fallback is not modelled (0).
 * 6.1 and 4.x take the larger of that and the end of every memory node.
 */
export function ddwMaxAddress(generation: LinuxGeneration, ram: RamLayout): bigint {
  if (generation === 'linux-6.12') return ram.lrdrPresent ? ram.hotplugMax : 0n;
  return ram.maxAddress;
}

/** Adds [start, end) to the RAM ranges (kept sorted and merged). */
export function addRamRange(ram: RamLayout, start: bigint, end: bigint): void {
  const all = [...ram.ranges, { start, end }].sort((a, b) =>
    a.start < b.start ? -1 : a.start > b.start ? 1 : 0,
  );
  const merged: { start: bigint; end: bigint }[] = [];
  for (const r of all) {
    const last = merged[merged.length - 1];
    if (last && r.start <= last.end) {
      if (r.end > last.end) last.end = r.end;
    } else merged.push({ ...r });
  }
  ram.ranges = merged;
}

/** Takes [start, end) out of the RAM ranges. */
export function removeRamRange(ram: RamLayout, start: bigint, end: bigint): void {
  const out: { start: bigint; end: bigint }[] = [];
  for (const r of ram.ranges) {
    if (r.end <= start || r.start >= end) {
      out.push(r);
      continue;
    }
    if (r.start < start) out.push({ start: r.start, end: start });
    if (r.end > end) out.push({ start: end, end: r.end });
  }
  ram.ranges = out;
}

/** ceil(log2(n)), and 0 for n <= 1, as the kernel's order_base_2. */
export function orderBase2(n: bigint): number {
  if (n <= 1n) return 0;
  return (n - 1n).toString(2).length;
}

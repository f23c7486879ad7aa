import { cellsToBigint, type GuestTreeView } from './device-tree.js';

/** Guest RAM as Linux learns it from the device tree. */
export interface RamLayout {
  /** System RAM ranges [start, end), sorted, adjacent ones merged (memblock merges them). */
  ranges: { start: bigint; end: bigint }[];
  /** The first 64-bit value of /rtas ibm,lrdr-capacity: the end of hotpluggable memory (0: none). */
  hotplugMax: bigint;
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
  let maxAddress = hotplugMax;
  for (const r of ranges) if (r.end > maxAddress) maxAddress = r.end;
  return { ranges, hotplugMax, maxAddress };
}

/** ceil(log2(n)), and 0 for n <= 1, as the kernel's order_base_2. */
export function orderBase2(n: bigint): number {
  if (n <= 1n) return 0;
  return (n - 1n).toString(2).length;
}

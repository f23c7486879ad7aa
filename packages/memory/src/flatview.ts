import type { AliasRegion } from './alias.js';
import { UINT64_SPAN } from './constants.js';
import type { MemoryRegion } from './region.js';

/**
 * One piece of a rendered address space: `size` bytes at `start` served by terminal region `mr`
 * from `offsetInRegion` (QEMU's FlatRange).
 */
export interface FlatRange {
  readonly start: bigint;
  readonly size: bigint;
  /** start + size (exclusive); 2^64 at most. */
  readonly end: bigint;
  readonly mr: MemoryRegion;
  readonly offsetInRegion: bigint;
  readonly readonly: boolean;
}

/**
 * An address space flattened into sorted, non-overlapping ranges (QEMU's FlatView). Immutable:
 * a topology change renders a new one.
 */
export class FlatView {
  readonly ranges: readonly FlatRange[];
  readonly #starts: bigint[];
  #lastHit = 0;

  constructor(
    readonly root: MemoryRegion | null,
    ranges: FlatRange[],
  ) {
    this.ranges = ranges;
    this.#starts = ranges.map((r) => r.start);
  }

  /** The range containing `addr`, or undefined if nothing is mapped there. */
  lookup(addr: bigint): FlatRange | undefined {
    const ranges = this.ranges;
    const hit = ranges[this.#lastHit];
    if (hit !== undefined && addr >= hit.start && addr < hit.end) return hit;
    const i = this.indexAtOrBefore(addr);
    if (i < 0) return undefined;
    const r = ranges[i]!;
    if (addr >= r.end) return undefined;
    this.#lastHit = i;
    return r;
  }

  /** The first range starting above `addr` (to size an unmapped gap). */
  nextStartAfter(addr: bigint): bigint {
    const next = this.ranges[this.indexAtOrBefore(addr) + 1];
    return next ? next.start : UINT64_SPAN;
  }

  /** Index of the last range whose start is <= addr, or -1. */
  private indexAtOrBefore(addr: bigint): number {
    const starts = this.#starts;
    let lo = 0;
    let hi = starts.length - 1;
    let found = -1;
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1;
      if (starts[mid]! <= addr) {
        found = mid;
        lo = mid + 1;
      } else {
        hi = mid - 1;
      }
    }
    return found;
  }
}

/** Two ranges are the same mapping (flatrange_equal): listeners see no change between them. */
export function sameFlatRange(a: FlatRange, b: FlatRange): boolean {
  return (
    a.mr === b.mr &&
    a.start === b.start &&
    a.size === b.size &&
    a.offsetInRegion === b.offsetInRegion &&
    a.readonly === b.readonly
  );
}

/** Renders the region graph below `root` into a FlatView (render_memory_region + flatview_simplify). */
export function renderFlatView(root: MemoryRegion | null): FlatView {
  const ranges: FlatRange[] = [];
  if (root) renderAt(ranges, root, 0n, 0n, UINT64_SPAN, false);
  return new FlatView(root, simplify(ranges));
}

/**
 * Renders `mr`, whose container's offset 0 sits at `containerBase`, into `ranges`, clipped to
 * [clipStart, clipEnd). Higher-priority siblings rendered earlier keep what they claimed: a
 * region only fills the gaps left in its clip window.
 */
function renderRegion(
  ranges: FlatRange[],
  mr: MemoryRegion,
  containerBase: bigint,
  clipStart: bigint,
  clipEnd: bigint,
  readonly: boolean,
): void {
  renderAt(ranges, mr, containerBase + mr.addr, clipStart, clipEnd, readonly);
}

/** Renders `mr` with its own offset 0 at `base`: subregions first, then itself into the gaps. */
function renderAt(
  ranges: FlatRange[],
  mr: MemoryRegion,
  base: bigint,
  clipStart: bigint,
  clipEnd: bigint,
  readonly: boolean,
): void {
  if (!mr.enabled) return;
  const regionEnd = base + mr.size;
  const start = base > clipStart ? base : clipStart;
  const end = regionEnd < clipEnd ? regionEnd : clipEnd;
  if (start >= end) return;
  const ro = readonly || mr.readonly;
  if (mr.kind === 'alias') {
    // The alias shows its target as if the target's offset 0 sat at base - alias offset.
    const alias = mr as AliasRegion;
    renderAt(ranges, alias.target, base - alias.offset, start, end, ro);
    return;
  }
  for (const sub of mr.subregions) renderRegion(ranges, sub, base, start, end, ro);
  if (mr.terminates) fillGaps(ranges, mr, base, start, end, ro);
}

/** Inserts `mr` into every part of [start, end) that `ranges` (sorted) does not cover yet. */
function fillGaps(
  ranges: FlatRange[],
  mr: MemoryRegion,
  base: bigint,
  start: bigint,
  end: bigint,
  readonly: boolean,
): void {
  let cursor = start;
  let i = firstEndingAfter(ranges, cursor);
  while (cursor < end) {
    const next = ranges[i];
    const gapEnd = next === undefined || next.start > end ? end : next.start;
    if (cursor < gapEnd) {
      const size = gapEnd - cursor;
      ranges.splice(i, 0, {
        start: cursor,
        size,
        end: gapEnd,
        mr,
        offsetInRegion: cursor - base,
        readonly,
      });
      i++;
      cursor = gapEnd;
    }
    if (next === undefined || next.start >= end) break;
    cursor = next.end > cursor ? next.end : cursor;
    i++;
  }
}

/** Index of the first range that ends after `addr` (ranges are sorted and disjoint). */
function firstEndingAfter(ranges: FlatRange[], addr: bigint): number {
  let lo = 0;
  let hi = ranges.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (ranges[mid]!.end <= addr) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/** Merges neighbours that continue each other in the same region (flatview_simplify). */
function simplify(ranges: FlatRange[]): FlatRange[] {
  const out: FlatRange[] = [];
  for (const r of ranges) {
    const last = out[out.length - 1];
    if (
      last &&
      last.mr === r.mr &&
      last.end === r.start &&
      last.offsetInRegion + last.size === r.offsetInRegion &&
      last.readonly === r.readonly
    ) {
      out[out.length - 1] = {
        start: last.start,
        size: last.size + r.size,
        end: r.end,
        mr: last.mr,
        offsetInRegion: last.offsetInRegion,
        readonly: last.readonly,
      };
    } else {
      out.push(r);
    }
  }
  return out;
}

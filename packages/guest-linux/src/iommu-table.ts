/**
 * A guest IOMMU table: one TCE window the DMA API hands out bus pages from. Entries are counted
 * from the window's start; `offset` is the window's first bus page (bus address >> pageShift).
 *
 * The allocator is a next-fit over a sorted list of taken ranges, which is far simpler than
 * Linux's pooled bitmap allocator but gives the same guarantees the model needs: no overlap, the
 * reserved ranges are never handed out, and an entry range is freed exactly once.
 */
export class IommuTable {
  /** Taken ranges [start, end), sorted, never overlapping; reserved ones are flagged. */
  private readonly taken: { start: number; end: number; reserved: boolean }[] = [];
  private hint = 0;

  constructor(
    readonly liobn: number,
    /** Bus address of entry 0. */
    readonly busOffset: bigint,
    readonly pageShift: number,
    /** Number of entries. */
    readonly size: number,
  ) {
    // Bus address 0 means "no mapping" to drivers, so a window that starts there never hands
    // out its first entry.
    if (busOffset === 0n && size > 0) this.reserve(0, 1);
  }

  get offset(): bigint {
    return this.busOffset >> BigInt(this.pageShift);
  }

  /** Keeps [start, end) (entries) out of the allocator; clipped to the table. */
  reserve(start: number, end: number): void {
    const s = Math.max(0, start);
    const e = Math.min(this.size, end);
    if (s >= e) return;
    // Overlapping reservations merge; reserving mapped entries is a bug in the caller.
    const overlapping = this.taken.filter((r) => r.start < e && s < r.end);
    if (overlapping.some((r) => !r.reserved)) throw new Error(`entries [${s}, ${e}) are mapped`);
    const from = Math.min(s, ...overlapping.map((r) => r.start));
    const to = Math.max(e, ...overlapping.map((r) => r.end));
    for (const r of overlapping) this.taken.splice(this.taken.indexOf(r), 1);
    this.insert({ start: from, end: to, reserved: true });
  }

  /** Keeps the bus range [from, to) out of the allocator where it falls inside the window. */
  reserveBus(from: bigint, to: bigint): void {
    const shift = BigInt(this.pageShift);
    const first = (from - this.busOffset) >> shift;
    const last = (to - this.busOffset + (1n << shift) - 1n) >> shift;
    const start = first < 0n ? 0 : first > BigInt(this.size) ? this.size : Number(first);
    const end = last < 0n ? 0 : last > BigInt(this.size) ? this.size : Number(last);
    if (start < end) this.reserve(start, end);
  }

  /** Whether any entry is mapped (reserved ranges do not count). */
  inUse(): boolean {
    return this.taken.some((r) => !r.reserved);
  }

  /**
   * Takes `count` consecutive entries whose first is a multiple of `align`; undefined when the
   * table has no such gap.
   */
  alloc(count: number, align = 1): number | undefined {
    if (count <= 0 || count > this.size) return undefined;
    const found =
      this.findGap(this.hint, this.size, count, align) ?? this.findGap(0, this.hint, count, align);
    if (found === undefined) return undefined;
    this.insert({ start: found, end: found + count, reserved: false });
    this.hint = found + count >= this.size ? 0 : found + count;
    return found;
  }

  /** Gives back an allocation made by alloc(); false if [start, start+count) is not one. */
  free(start: number, count: number): boolean {
    const at = this.indexOf(start);
    const r = this.taken[at];
    if (!r || r.start !== start || r.end !== start + count || r.reserved) return false;
    this.taken.splice(at, 1);
    // Undoing the latest allocation (a mapping that failed) gives its entries straight back.
    if (this.hint === start + count || (this.hint === 0 && start + count === this.size)) this.hint = start;
    return true;
  }

  /** The allocation [start, end) that holds entry `entry`, if any. */
  allocationAt(entry: number): { start: number; end: number } | undefined {
    const r = this.taken[this.firstEndingAfter(entry)];
    return r && !r.reserved && r.start <= entry ? { start: r.start, end: r.end } : undefined;
  }

  /** The lowest aligned start in [from, limit) with `count` free entries after it. */
  private findGap(from: number, limit: number, count: number, align: number): number | undefined {
    let candidate = roundUp(from, align);
    let i = this.firstEndingAfter(candidate);
    while (candidate < limit && candidate + count <= this.size) {
      const r = this.taken[i];
      if (!r || candidate + count <= r.start) return candidate;
      candidate = roundUp(r.end, align);
      i++;
    }
    return undefined;
  }

  /** Index of the first taken range that ends after `entry` (ends are sorted as starts are). */
  private firstEndingAfter(entry: number): number {
    let lo = 0;
    let hi = this.taken.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.taken[mid]!.end <= entry) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  /** Index of the first taken range whose start is >= entry. */
  private indexOf(entry: number): number {
    let lo = 0;
    let hi = this.taken.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.taken[mid]!.start < entry) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  private insert(range: { start: number; end: number; reserved: boolean }): void {
    this.taken.splice(this.indexOf(range.start), 0, range);
  }
}

function roundUp(value: number, align: number): number {
  return align <= 1 ? value : Math.ceil(value / align) * align;
}

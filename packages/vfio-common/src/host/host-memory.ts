/**
 * The host process's virtual memory, as far as the host IOMMU cares: which addresses are backed
 * (so pages can be pinned), by which page size, and their bytes (so a passthrough device's DMA
 * lands somewhere). Guest RAM is one block; QEMU's host pointer for it is the block's vaddr.
 */
export interface HostMemoryBlock {
  readonly name: string;
  readonly vaddr: bigint;
  readonly size: bigint;
  /** The page size backing the block (the host page size, or a hugetlbfs page size). */
  readonly pageSize: bigint;
  /** Backed by hugetlbfs: Linux counts pages above 64K only then. */
  readonly hugetlb: boolean;
  read(offset: bigint, out: Uint8Array): void;
  write(offset: bigint, data: Uint8Array): void;
}

export class HostVirtualMemory {
  readonly #blocks: HostMemoryBlock[] = [];

  add(block: HostMemoryBlock): void {
    const clash = this.#blocks.find(
      (b) => block.vaddr < b.vaddr + b.size && b.vaddr < block.vaddr + block.size,
    );
    if (clash) throw new Error(`host memory block "${block.name}" overlaps "${clash.name}"`);
    this.#blocks.push(block);
    this.#blocks.sort((a, b) => (a.vaddr < b.vaddr ? -1 : 1));
  }

  remove(block: HostMemoryBlock): void {
    const at = this.#blocks.indexOf(block);
    if (at >= 0) this.#blocks.splice(at, 1);
  }

  blocks(): readonly HostMemoryBlock[] {
    return this.#blocks;
  }

  /** The block holding [vaddr, vaddr + size) entirely, if one does. */
  find(vaddr: bigint, size = 1n): { block: HostMemoryBlock; offset: bigint } | undefined {
    for (const block of this.#blocks) {
      if (vaddr >= block.vaddr && vaddr + size <= block.vaddr + block.size) {
        return { block, offset: vaddr - block.vaddr };
      }
    }
    return undefined;
  }

  /** Reads host memory; false (and nothing read) when the range is not wholly backed. */
  read(vaddr: bigint, out: Uint8Array): boolean {
    const hit = this.find(vaddr, BigInt(out.length));
    if (!hit) return false;
    hit.block.read(hit.offset, out);
    return true;
  }

  write(vaddr: bigint, data: Uint8Array): boolean {
    const hit = this.find(vaddr, BigInt(data.length));
    if (!hit) return false;
    hit.block.write(hit.offset, data);
    return true;
  }
}

import type { AddressSpace } from './address-space.js';
import type { MemoryRegion } from './region.js';

/**
 * A piece of an address space handed to listeners (QEMU's MemoryRegionSection): `size` bytes at
 * `offsetWithinAddressSpace`, served by `mr` from `offsetWithinRegion`.
 */
export interface MemoryRegionSection {
  readonly mr: MemoryRegion;
  readonly addressSpace: AddressSpace;
  readonly offsetWithinAddressSpace: bigint;
  readonly offsetWithinRegion: bigint;
  readonly size: bigint;
  readonly readonly: boolean;
}

/**
 * Follows the topology of one address space (QEMU's MemoryListener). Every change is wrapped in
 * begin()/commit(); region_del comes before region_add. Listeners run in ascending `priority` for
 * begin, region_add, region_nop and commit, and in descending priority for region_del.
 */
export interface MemoryListener {
  /** Used in error messages and inspection. */
  readonly name?: string;
  readonly priority?: number;
  begin?(): void;
  commit?(): void;
  regionAdd?(section: MemoryRegionSection): void;
  regionDel?(section: MemoryRegionSection): void;
  /** A range that stayed the same across a topology change. */
  regionNop?(section: MemoryRegionSection): void;
}

/**
 * Values shared by the whole memory API. Numbering follows QEMU's include/exec/memory.h and
 * include/exec/memattrs.h so that codes can be compared with QEMU's own.
 */

/** Outcome of a memory transaction; results of a multi-part access are OR-ed together. */
export const MemTxResult = {
  OK: 0,
  /** The target rejected the access (a device error). */
  ERROR: 1 << 0,
  /** Nothing decodes at that address (QEMU's unassigned memory), or an IOMMU refused it. */
  DECODE_ERROR: 1 << 1,
  /** The access violates the target's rules (size, alignment, read-only). */
  ACCESS_ERROR: 1 << 2,
} as const;
export type MemTxResult = number;

/** IOMMU access permissions; the same numbering as the sPAPR TCE permission bits. */
export const IOMMUAccessFlags = {
  NONE: 0,
  RO: 1,
  WO: 2,
  RW: 3,
} as const;
export type IOMMUAccessFlags = 0 | 1 | 2 | 3;

/** Which IOMMU events a notifier wants. */
export const IOMMUNotifierFlag = {
  NONE: 0,
  UNMAP: 0x1,
  MAP: 0x2,
  MAP_UNMAP: 0x3,
  DEVIOTLB_UNMAP: 0x4,
} as const;
export type IOMMUNotifierFlag = number;

export type Endianness = 'little' | 'big';

/** The target's page size: 4 KiB on ppc64, the fallback minimum IOMMU page size. */
export const TARGET_PAGE_SIZE = 0x1000n;

/** 2^64: the size of a region that covers a whole 64-bit address space. */
export const UINT64_SPAN = 1n << 64n;
export const UINT64_MAX = UINT64_SPAN - 1n;

/** 2^32 as a number: joins and splits the (high, low) 32-bit halves of a 64-bit value without BigInt. */
export const TWO_32 = 0x1_0000_0000;

/** The largest RAM region we back: page and byte offsets inside it stay exact as JS numbers. */
export const MAX_RAM_SIZE = 1n << 52n;

/** Access permission an access needs: bit 0 to read, bit 1 to write (QEMU's `1 << is_write`). */
export function accessPermission(isWrite: boolean): IOMMUAccessFlags {
  return isWrite ? IOMMUAccessFlags.WO : IOMMUAccessFlags.RO;
}

/** The 64-bit arithmetic of ioctl arguments, done on bigints as the kernel does it on u64. */

/** `value` wrapped to a u64, as an ioctl argument reaches the kernel. */
export const u64 = (value: bigint) => BigInt.asUintN(64, value);

/** floor(log2(value)) for value > 0. */
export function log2(value: bigint): number {
  return value.toString(2).length - 1;
}

export function isPowerOfTwo(value: bigint): boolean {
  return value > 0n && (value & (value - 1n)) === 0n;
}

/** Index of the lowest set bit (value > 0). */
export function lowestSetBit(value: bigint): number {
  return log2(value & -value);
}

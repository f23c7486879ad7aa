/**
 * `0x` + lowercase hexadecimal, how ddw writes addresses, sizes, LIOBNs and 64-bit values in
 * messages, trace lines and JSON (QEMU's `0x%" PRIx64` without padding). `value` is a bigint or a
 * non-negative integer; what wraps (a uint32 cell, a uint64 register) is wrapped by the caller.
 */
export function formatHex(value: number | bigint): string {
  return `0x${value.toString(16)}`;
}

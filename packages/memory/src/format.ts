/**
 * `0x` + lowercase hexadecimal, how ddw writes addresses, sizes, LIOBNs and 64-bit values in
 * messages, trace lines and JSON (QEMU's `0x%" PRIx64` without padding). `value` is a bigint or a
 * non-negative integer; what wraps (a uint32 cell, a uint64 register) is wrapped by the caller.
 */
export function formatHex(value: number | bigint): string {
  return `0x${value.toString(16)}`;
}

/**
 * Lowercase hexadecimal padded with zeros to `digits`, without a prefix: how PCI IDs and addresses
 * are written (`15b3:1017`, `0000:01:00.0`, lspci and QEMU's `info pci`).
 */
export function hexDigits(value: number | bigint, digits: number): string {
  return value.toString(16).padStart(digits, '0');
}

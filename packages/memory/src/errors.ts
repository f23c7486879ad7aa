/**
 * Errors for mistakes in how a memory map is built (configuration, not guest behaviour).
 * Guest-visible accesses never throw: they return a MemTxResult.
 */
export class MemoryConfigError extends Error {
  override readonly name = 'MemoryConfigError';
  readonly code = 'MEMORY_CONFIG';
  constructor(
    /** The region (or address space) the mistake concerns. */
    readonly subject: string,
    message: string,
  ) {
    super(`${subject}: ${message}`);
  }
}

/** An IOMMU region refused a notifier (QEMU's notify_flag_changed returning an error). */
export class IommuNotifierRefusedError extends Error {
  override readonly name = 'IommuNotifierRefusedError';
  readonly code = 'IOMMU_NOTIFIER_REFUSED';
  constructor(
    readonly region: string,
    readonly reason: string,
  ) {
    super(`${region}: IOMMU notifier refused: ${reason}`);
  }
}

/**
 * A load or store of a size other than 1, 2, 4 or 8 bytes (ldub/lduw/ldl/ldq and their stores are
 * all there is): a programming error in the caller, never a guest action.
 */
export class InvalidAccessSizeError extends RangeError {
  override readonly name = 'InvalidAccessSizeError';
  readonly code = 'INVALID_ACCESS_SIZE';
  constructor(
    /** The function called, e.g. `AddressSpace.load`. */
    readonly where: string,
    readonly size: unknown,
  ) {
    super(`${where}: access size ${describeValue(size)} is not 1, 2, 4 or 8 bytes`);
  }
}

/**
 * An argument of the wrong type or shape passed to the memory API (a number where a bigint
 * address belongs, a missing root region, a buffer that is not a Uint8Array): a programming error.
 */
export class MemoryArgumentError extends TypeError {
  override readonly name = 'MemoryArgumentError';
  readonly code = 'MEMORY_ARGUMENT';
  constructor(
    readonly where: string,
    message: string,
  ) {
    super(`${where}: ${message}`);
  }
}

/** An access to a RAM backing store outside its bounds: a programming error in the caller. */
export class MemoryRangeError extends RangeError {
  override readonly name = 'MemoryRangeError';
  readonly code = 'MEMORY_RANGE';
  constructor(
    readonly where: string,
    message: string,
  ) {
    super(`${where}: ${message}`);
  }
}

/** How an unexpected argument reads in a message: `3`, `5n`, `"x"`, `undefined`, `an object`. */
export function describeValue(value: unknown): string {
  if (typeof value === 'bigint') return `${value}n`;
  if (typeof value === 'string') return JSON.stringify(value);
  if (value === null || typeof value !== 'object') return String(value);
  return Array.isArray(value) ? 'an array' : 'an object';
}

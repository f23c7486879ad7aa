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

import { ConfigError, formatHex } from '@ddw/machine';
import {
  type HostIommu,
  type HostIommuConfig,
  type HostIommuOp,
  type HostRegisteredRegion,
  type HostVirtualMemory,
  VFIO_SPAPR_TCE_IOMMU,
  VFIO_SPAPR_TCE_v2_IOMMU,
} from '@ddw/vfio-common';
import { isPowerOfTwo } from './bit-math.js';
import { HostState } from './host-state.js';
import { SimulatedSpaprTceContainer } from './simulated-container.js';

/**
 * A simulated Linux host IOMMU: the VFIO sPAPR TCE driver (drivers/vfio/vfio_iommu_spapr_tce.c)
 * over a PowerNV IODA2 platform, as reference section 4 describes it, with the ≥ v6.4 attach rules.
 * All containers of one host belong to one process: they share its locked-memory account and its
 * pre-registered regions, and a MAP may use a region registered through another container.
 */
export class SimulatedSpaprTceHost implements HostIommu {
  readonly config: HostIommuConfig;
  readonly #state: HostState;

  constructor(
    config: HostIommuConfig,
    readonly memory: HostVirtualMemory,
  ) {
    if (!isPowerOfTwo(config.pageSize)) {
      throw new ConfigError(
        'pageSize',
        `${formatHex(config.pageSize)} is not a power of two`,
        'use 4K or 64K, the ppc64 host page sizes',
        { subject: 'host IOMMU options' },
      );
    }
    this.config = Object.freeze({ ...config });
    this.#state = new HostState(this.config, memory);
  }

  checkExtension(type: number): number {
    if (type === VFIO_SPAPR_TCE_IOMMU) return 1;
    if (type === VFIO_SPAPR_TCE_v2_IOMMU) return this.config.type === 'v2' ? 1 : 0;
    return 0;
  }

  openContainer(): SimulatedSpaprTceContainer {
    return new SimulatedSpaprTceContainer(this.#state);
  }

  injectFault(op: HostIommuOp, errno: number, count = 1): void {
    this.#state.faults.inject(op, errno, count);
  }

  /** Bytes on the process's locked-memory account (regions, tables, v1 ENABLE). */
  get lockedBytes(): bigint {
    return BigInt(this.#state.lockedPages) << BigInt(this.#state.hostPageShift);
  }

  /** Every pre-registered region of the process, including ones pinned without an owner. */
  regions(): (HostRegisteredRegion & { refs: number; mapped: number })[] {
    return this.#state.regions.map((r) => ({
      vaddr: r.vaddr,
      size: r.size,
      pageShift: r.pageShift,
      refs: r.refs,
      mapped: this.#state.mappedIn(r),
    }));
  }
}

import { ConfigError, type MachineEventBus } from '@ddw/machine';
import type { AddressSpace } from '@ddw/memory';
import { type SpaprIommuTraces, SpaprTceTable } from './tce-table.js';

/**
 * Every TCE table of a machine by LIOBN (QEMU's global spapr_tce_tables list and
 * spapr_tce_find_by_liobn).
 */
export class SpaprTceTables {
  readonly #byLiobn = new Map<number, SpaprTceTable>();

  constructor(
    private readonly targetAs: AddressSpace,
    readonly traces: SpaprIommuTraces,
    private readonly events: MachineEventBus,
    /** Simulated KVM: new tables start in the kernel (see SpaprTceTable.inKernel). */
    readonly kvm = false,
  ) {}

  /** Creates a disabled table (spapr_tce_new_table); a duplicate LIOBN is a configuration error. */
  create(liobn: number, owner: string): SpaprTceTable {
    if (!Number.isInteger(liobn) || liobn < 0 || liobn > 0xffffffff) {
      throw new ConfigError(`${owner}.liobn`, `0x${liobn.toString(16)} is not a 32-bit LIOBN`);
    }
    const existing = this.#byLiobn.get(liobn);
    if (existing) {
      throw new ConfigError(
        `${owner}.liobn`,
        `Attempted to create TCE table with duplicate LIOBN 0x${liobn.toString(16)} (already used by ${existing.owner})`,
        'give every PHB a distinct index',
      );
    }
    const table = new SpaprTceTable(liobn, this.targetAs, this.traces, this.events, owner, this.kvm);
    this.#byLiobn.set(liobn, table);
    return table;
  }

  /** Forgets a table (its owner went away); disables it first. */
  delete(table: SpaprTceTable): void {
    table.disable();
    this.#byLiobn.delete(table.liobn);
  }

  /**
   * The table for a LIOBN as a guest passes it in a 64-bit register: any of the upper 32 bits set
   * finds nothing, as QEMU ("Request for out-of-bounds LIOBN").
   */
  find(liobn: bigint): SpaprTceTable | undefined {
    if (liobn >> 32n !== 0n) {
      this.events.guestError('spapr-iommu', `Request for out-of-bounds LIOBN 0x${liobn.toString(16)}`);
      return undefined;
    }
    return this.#byLiobn.get(Number(liobn));
  }

  /** QEMU's hcall_dprintf: something the guest did wrong, reported as a guest error. */
  reportGuestError(message: string): void {
    this.events.guestError('spapr-iommu', message);
  }

  get(liobn: number): SpaprTceTable | undefined {
    return this.#byLiobn.get(liobn);
  }

  list(): SpaprTceTable[] {
    return [...this.#byLiobn.values()];
  }
}

import { ConfigError, type MachineEventBus } from '@ddw/machine';
import { type AddressSpace, formatHex } from '@ddw/memory';
import { compatibleHostTable, type KvmHost, type KvmHostIommuTable } from './kvm-tce.js';
import { type SpaprIommuTraces, SpaprTceTable } from './tce-table.js';

/** errno values of KVM_SET_DEVICE_ATTR (KVM_DEV_VFIO_GROUP_SET_SPAPR_TCE). */
const EBADF = 9;
const EINVAL = 22;

/**
 * Every TCE table of a machine by LIOBN (QEMU's global spapr_tce_tables list and
 * spapr_tce_find_by_liobn).
 */
export class SpaprTceTables {
  readonly #byLiobn = new Map<number, SpaprTceTable>();
  #kvmHost: KvmHost | undefined;

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
      throw new ConfigError(`${owner}.liobn`, `${formatHex(liobn)} is not a 32-bit LIOBN`);
    }
    const existing = this.#byLiobn.get(liobn);
    if (existing) {
      throw new ConfigError(
        `${owner}.liobn`,
        `Attempted to create TCE table with duplicate LIOBN ${formatHex(liobn)} (already used by ${existing.owner})`,
        'give every PHB a distinct index',
      );
    }
    const table = new SpaprTceTable(liobn, this.targetAs, this.traces, this.events, owner, this.kvm);
    table.kvmHost = this.#kvmHost;
    this.#byLiobn.set(liobn, table);
    return table;
  }

  /**
   * The simulated KVM's host (capabilities, memslots), given by the VFIO plugin from the host model
   * (@ddw/vfio-common, over @ddw/host-linux); undefined means a host without KVM_CAP_SPAPR_TCE_VFIO.
   */
  get kvmHost(): KvmHost | undefined {
    return this.#kvmHost;
  }

  set kvmHost(host: KvmHost | undefined) {
    this.#kvmHost = host;
    for (const table of this.#byLiobn.values()) table.kvmHost = host;
  }

  /**
   * KVM_SET_DEVICE_ATTR(KVM_DEV_VFIO_GROUP, KVM_DEV_VFIO_GROUP_SET_SPAPR_TCE) on the KVM-VFIO
   * device (kvm_spapr_tce_attach_iommu_group): attaches the host IOMMU tables of a VFIO group to the
   * in-kernel table whose fd is `tablefd`. 0, -EBADF for an fd that is no table, -EINVAL when no
   * host table of the group fits the guest window (same start, pages no larger, covering it).
   * Attaching a host table already attached takes one more reference.
   */
  kvmSetSpaprTce(tablefd: number, hostTables: readonly KvmHostIommuTable[]): number {
    if (!this.kvm || tablefd < 0) return -EBADF;
    const table = [...this.#byLiobn.values()].find((t) => t.fd === tablefd);
    if (!table) return -EBADF;
    const tbl = compatibleHostTable(table, hostTables);
    if (!tbl) return -EINVAL;
    const known = table.kvmIommuTables.find((a) => a.tbl === tbl);
    if (known) known.refs++;
    else table.kvmIommuTables.push({ tbl, refs: 1 });
    return 0;
  }

  /**
   * KVM_DEV_VFIO_GROUP_DEL (kvm_spapr_tce_release_iommu_group): the group's host tables lose one
   * reference on every in-kernel table holding them, and go at the last one.
   */
  kvmReleaseGroup(hostTables: readonly KvmHostIommuTable[]): void {
    for (const table of this.#byLiobn.values()) {
      const list = table.kvmIommuTables;
      for (let i = list.length - 1; i >= 0; i--) {
        const a = list[i]!;
        if (!hostTables.includes(a.tbl)) continue;
        if (--a.refs === 0) list.splice(i, 1);
      }
    }
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
      this.events.guestError('spapr-iommu', `Request for out-of-bounds LIOBN ${formatHex(liobn)}`);
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

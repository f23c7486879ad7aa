import { token } from '@ddw/machine';
import { type AddressSpace, RamRegion } from '@ddw/memory';
import type { VfioKvm } from './container.js';
import type { HostKvmTable } from './host/host-iommu.js';

/**
 * The part of @ddw/spapr-iommu's SpaprTceTables (the simulated KVM's in-kernel TCE tables) that
 * VFIO uses, declared here by shape so vfio-common needs no dependency on that package: the token
 * is the same Symbol.for key.
 */
export interface KvmTceTables {
  /** kvm_enabled(): the tables start in the kernel. */
  readonly kvm: boolean;
  /** The host's KVM: KVM_CAP_SPAPR_TCE_VFIO and the memslots (guest RAM's host addresses). */
  kvmHost: { spaprTceVfio: boolean; gpaToUa(gpa: bigint): bigint | undefined } | undefined;
  kvmSetSpaprTce(tablefd: number, hostTables: readonly HostKvmTable[]): number;
  kvmReleaseGroup(hostTables: readonly HostKvmTable[]): void;
}

export const KvmTceTablesToken = token<KvmTceTables>('spapr-iommu', 'Tables');

/** The first fd a group gets in the simulated QEMU process (fds are not reproducible anyway). */
const GROUP_FD_BASE = 24;

/**
 * Tells the simulated KVM about the host (KVM_CAP_SPAPR_TCE_VFIO from the host configuration; its
 * memslots: guest RAM at its host pointer) and returns the KVM-VFIO device the containers use, or
 * undefined under TCG.
 */
export function connectKvm(
  tables: KvmTceTables,
  spaprTceVfio: boolean,
  systemMemory: AddressSpace,
  hostPointer: (mr: RamRegion, offset: bigint) => bigint | undefined,
  groupNumber: (group: string) => number,
): VfioKvm | undefined {
  tables.kvmHost = {
    spaprTceVfio,
    gpaToUa(gpa) {
      const x = systemMemory.translate(gpa, false, 1n);
      return x.mr instanceof RamRegion ? hostPointer(x.mr, x.xlat) : undefined;
    },
  };
  if (!tables.kvm) return undefined;
  return {
    setSpaprTce: (tablefd, hostTables) => tables.kvmSetSpaprTce(tablefd, hostTables),
    releaseGroup: (hostTables) => tables.kvmReleaseGroup(hostTables),
    groupFd: (group) => GROUP_FD_BASE + groupNumber(group),
  };
}

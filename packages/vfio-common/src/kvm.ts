import { token } from '@ddw/machine';
import { type AddressSpace, RamRegion } from '@ddw/memory';
import type { HostKvmTable } from './host/host-iommu.js';

/**
 * The KVM side VFIO talks to under `-accel kvm` (QEMU's KVM-VFIO device): attaching a group to an
 * in-kernel TCE table, and letting it go.
 */
export interface VfioKvm {
  /**
   * KVM_SET_DEVICE_ATTR(KVM_DEV_VFIO_GROUP_SET_SPAPR_TCE) for a group whose host tables are
   * `hostTables`, to the in-kernel table `tablefd`: 0 or -errno.
   */
  setSpaprTce(tablefd: number, hostTables: readonly HostKvmTable[]): number;
  /** KVM_DEV_VFIO_GROUP_DEL: the group's host tables leave every in-kernel table. */
  releaseGroup(hostTables: readonly HostKvmTable[]): void;
  /** The fd QEMU holds for a group (/dev/vfio/N), for messages and traces. */
  groupFd(group: string): number;
}

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

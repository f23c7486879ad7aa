import { H_PARAMETER, H_SUCCESS } from '@ddw/machine';
import { type AddressSpace, UINT64_SPAN } from '@ddw/memory';
import type { SpaprTceTable } from './tce-table.js';

/**
 * The simulated host kernel's in-kernel TCE acceleration with VFIO (Linux
 * arch/powerpc/kvm/book3s_64_vio.c): once QEMU attached a VFIO group to an in-kernel TCE table
 * (KVM_DEV_VFIO_GROUP_SET_SPAPR_TCE), the guest's TCE hypercalls on that table are handled by KVM,
 * which validates them with its own rules and writes the host IOMMU table directly. QEMU's IOMMU
 * notifiers never hear of them. Whatever KVM cannot do itself (H_TOO_HARD) is passed to QEMU, which
 * handles the hypercall as it would for a userspace table (traces, notifiers, VFIO ioctls).
 */

/** KVM's "let userspace do it" answer: the hypercall continues in QEMU. */
export const H_TOO_HARD = 'H_TOO_HARD' as const;
export type KvmTceResult = bigint | typeof H_TOO_HARD;

/** The most TCEs one H_PUT_TCE_INDIRECT carries (the list is one 4 KiB page). */
const TCE_LIST_MAX = 512n;

/**
 * A host IOMMU table as KVM holds it after KVM_DEV_VFIO_GROUP_SET_SPAPR_TCE (the iommu_table of a
 * VFIO group's table group). Provided by the host IOMMU (see @ddw/vfio-common's HostKvmTable,
 * which has this shape); addresses are bus addresses.
 */
export interface KvmHostIommuTable {
  /** it_offset << it_page_shift. */
  readonly startAddr: bigint;
  /** it_page_shift. */
  readonly pageShift: number;
  /** it_size << it_page_shift: the IOVA the table's entries cover. */
  readonly span: bigint;
  /**
   * mm_iommu_lookup + mm_iommu_ua_to_hpa: the host page of this table's size at userspace
   * address `ua` lies in memory pre-registered with pages at least that large.
   */
  canMap(ua: bigint): boolean;
  /**
   * kvmppc_tce_iommu_do_map for one IOMMU page of this table at bus address `iova` (write implies
   * read, as PowerNV sets it): 0, or H_TOO_HARD when KVM must leave it to userspace.
   */
  map(iova: bigint, ua: bigint, write: boolean): 0 | typeof H_TOO_HARD;
  /** kvmppc_tce_iommu_do_unmap for one IOMMU page at `iova`. */
  unmap(iova: bigint): 0 | typeof H_TOO_HARD;
}

/** What the simulated KVM knows of its host (set by @ddw/vfio-common from the host model). */
export interface KvmHost {
  /** KVM_CAP_SPAPR_TCE_VFIO: in-kernel TCE tables can drive VFIO groups (kvmppc_has_cap_spapr_vfio). */
  spaprTceVfio: boolean;
  /**
   * kvmppc_tce_to_ua: the host userspace address of guest physical `gpa` through KVM's memslots
   * (guest RAM), undefined when no memslot holds it.
   */
  gpaToUa(gpa: bigint): bigint | undefined;
}

/** One attachment (kvmppc_spapr_tce_iommu_table): a host table and its reference count. */
export interface KvmTceAttachment {
  readonly tbl: KvmHostIommuTable;
  refs: number;
}

/** kvmppc_ioba_validate: ioba page aligned, and [ioba, ioba + npages pages) inside the window. */
function iobaValid(t: SpaprTceTable, ioba: bigint, npages: bigint): boolean {
  const shift = BigInt(t.pageShift);
  const mask = (1n << shift) - 1n;
  const idx = ioba >> shift;
  const offset = t.busOffset >> shift;
  if ((ioba & mask) !== 0n || idx < offset) return false;
  if (idx - offset + npages > BigInt(t.nbTable)) return false;
  // The kernel's wrap check on idx + npages (unsigned long).
  return idx + npages < UINT64_SPAN;
}

/** kvmppc_tce_validate: a mapping TCE must be page aligned, in a memslot and mappable by every attached table. */
function tceValid(t: SpaprTceTable, host: KvmHost, tce: bigint): boolean {
  if ((tce & 3n) === 0n) return true; // userspace may poison the table
  const gpa = tce & ~3n;
  if ((gpa & ((1n << BigInt(t.pageShift)) - 1n)) !== 0n) return false; // iommu_tce_check_gpa
  const ua = host.gpaToUa(gpa);
  if (ua === undefined) return false;
  return t.kvmIommuTables.every((a) => a.tbl.canMap(ua));
}

/** kvmppc_tce_iommu_map / _unmap: one guest TCE is 2^(guest shift - host shift) host entries. */
function iommuUpdate(
  t: SpaprTceTable,
  tbl: KvmHostIommuTable,
  ioba: bigint,
  ua: bigint,
  perm: bigint,
): 0 | typeof H_TOO_HARD {
  const subpages = 1n << BigInt(t.pageShift - tbl.pageShift);
  const step = 1n << BigInt(tbl.pageShift);
  for (let i = 0n; i < subpages; i++) {
    const ret =
      perm === 0n ? tbl.unmap(ioba + i * step) : tbl.map(ioba + i * step, ua + i * step, perm >= 2n);
    if (ret !== 0) return ret;
  }
  return 0;
}

/** kvmppc_clear_tce: the host entries behind one guest TCE are cleared. */
function clearTce(t: SpaprTceTable, tbl: KvmHostIommuTable, ioba: bigint): void {
  const subpages = 1n << BigInt(t.pageShift - tbl.pageShift);
  const step = 1n << BigInt(tbl.pageShift);
  for (let i = 0n; i < subpages; i++) tbl.unmap(ioba + i * step);
}

/** Writes one validated TCE through every attached host table, then into the table (kvmppc_tce_put). */
function putOne(t: SpaprTceTable, host: KvmHost, ioba: bigint, tce: bigint): KvmTceResult {
  const perm = tce & 3n;
  // The kernel translates every TCE, unmaps included (kvmppc_tce_to_ua); a TCE outside the memslots is refused.
  const ua = host.gpaToUa(tce & ~3n);
  if (ua === undefined) return H_PARAMETER;
  for (const a of t.kvmIommuTables) {
    const ret = iommuUpdate(t, a.tbl, ioba, ua, perm);
    if (ret !== 0) {
      clearTce(t, a.tbl, ioba);
      return ret;
    }
  }
  t.kernelPut(ioba, tce);
  return H_SUCCESS;
}

/** H_PUT_TCE in KVM (kvmppc_h_put_tce): the ioba must be aligned, nothing is masked. */
export function kvmPutTce(t: SpaprTceTable, host: KvmHost, ioba: bigint, tce: bigint): KvmTceResult {
  if (!iobaValid(t, ioba, 1n)) return H_PARAMETER;
  if (!tceValid(t, host, tce)) return H_TOO_HARD;
  const perm = tce & 3n;
  if (perm !== 0n) return putOne(t, host, ioba, tce);
  // An unmap needs no translation in H_PUT_TCE (only a mapping direction does).
  for (const a of t.kvmIommuTables) {
    const ret = iommuUpdate(t, a.tbl, ioba, 0n, 0n);
    if (ret !== 0) {
      clearTce(t, a.tbl, ioba);
      return ret;
    }
  }
  t.kernelPut(ioba, tce);
  return H_SUCCESS;
}

/** H_GET_TCE in KVM (kvmppc_h_get_tce). */
export function kvmGetTce(t: SpaprTceTable, ioba: bigint): { ret: bigint; tce: bigint } {
  if (!iobaValid(t, ioba, 1n)) return { ret: H_PARAMETER, tce: 0n };
  const index = Number((ioba - t.busOffset) >> BigInt(t.pageShift));
  return { ret: H_SUCCESS, tce: t.entry(index) };
}

/**
 * H_PUT_TCE_INDIRECT in KVM (kvmppc_h_put_tce_indirect): the whole range must fit (no partial
 * write on a range error), npages 0 succeeds, every TCE is validated before any is written.
 */
export function kvmPutTceIndirect(
  t: SpaprTceTable,
  host: KvmHost,
  guestMemory: AddressSpace,
  ioba: bigint,
  tceList: bigint,
  npages: bigint,
): KvmTceResult {
  if (npages > TCE_LIST_MAX) return H_PARAMETER;
  if ((tceList & 0xfffn) !== 0n) return H_PARAMETER;
  if (!iobaValid(t, ioba, npages)) return H_PARAMETER;
  if (host.gpaToUa(tceList) === undefined) return H_TOO_HARD;
  const count = Number(npages);
  const bytes = new Uint8Array(count * 8);
  guestMemory.read(tceList, bytes);
  const view = new DataView(bytes.buffer);
  const tces: bigint[] = [];
  for (let i = 0; i < count; i++) tces.push(view.getBigUint64(i * 8));
  for (const tce of tces) if (!tceValid(t, host, tce)) return H_TOO_HARD;
  const step = 1n << BigInt(t.pageShift);
  for (let i = 0; i < count; i++) {
    const ret = putOne(t, host, ioba + BigInt(i) * step, tces[i]!);
    if (ret !== H_SUCCESS) return ret;
  }
  return H_SUCCESS;
}

/**
 * H_STUFF_TCE in KVM (kvmppc_h_stuff_tce): only clearing is allowed (a value with a permission bit
 * is H_PARAMETER: the kernel lets the guest poison entries, not map them).
 */
export function kvmStuffTce(t: SpaprTceTable, ioba: bigint, tceValue: bigint, npages: bigint): KvmTceResult {
  if (!iobaValid(t, ioba, npages)) return H_PARAMETER;
  if ((tceValue & 3n) !== 0n) return H_PARAMETER;
  const step = 1n << BigInt(t.pageShift);
  for (const a of t.kvmIommuTables) {
    for (let i = 0n; i < npages; i++) {
      const ret = iommuUpdate(t, a.tbl, ioba + i * step, 0n, 0n);
      if (ret === H_TOO_HARD) return H_TOO_HARD;
    }
  }
  for (let i = 0n; i < npages; i++) t.kernelPut(ioba + i * step, tceValue);
  return H_SUCCESS;
}

/**
 * kvm_spapr_tce_attach_iommu_group's table check: the first host table of the group whose pages are
 * no larger than the guest's, which starts where the guest window starts and covers all of it.
 */
export function compatibleHostTable(
  t: SpaprTceTable,
  hostTables: readonly KvmHostIommuTable[],
): KvmHostIommuTable | undefined {
  const size = BigInt(t.nbTable) << BigInt(t.pageShift);
  return hostTables.find(
    (tbl) => tbl.pageShift <= t.pageShift && tbl.startAddr === t.busOffset && tbl.span >= size,
  );
}

import {
  H_GET_TCE,
  H_PARAMETER,
  H_PUT_TCE,
  H_PUT_TCE_INDIRECT,
  H_STUFF_TCE,
  H_SUCCESS,
  type HypercallRegistry,
  type HypercallResult,
} from '@ddw/machine';
import { type AddressSpace, formatHex } from '@ddw/memory';
import {
  H_TOO_HARD,
  type KvmTceResult,
  kvmGetTce,
  kvmPutTce,
  kvmPutTceIndirect,
  kvmStuffTce,
} from './kvm-tce.js';
import type { SpaprTceTables } from './tables.js';
import { isPciLiobn } from './tce-table.js';

/** Most entries one H_PUT_TCE_INDIRECT may carry: one 4 KiB page of TCEs. */
export const TCE_LIST_MAX = 512;
const SPAPR_TCE_PAGE_OFFSET_MASK = 0xfffn;

/**
 * Whether QEMU handles (and traces) a TCE hypercall on `table`: always for a userspace table; for
 * an in-kernel one only when KVM passed it on, which only a VFIO-accelerated table does here.
 */
function reachesQemu(table: { inKernel: boolean; kvmAccelerated: boolean }): boolean {
  return !table.inKernel || table.kvmAccelerated;
}

const FAILED: HypercallResult = { ret: H_PARAMETER };
const SUCCEEDED: HypercallResult = { ret: H_SUCCESS };

/** KVM's answer as the guest sees it; undefined when KVM passed the call to QEMU (H_TOO_HARD). */
function kernelAnswer(ret: KvmTceResult): HypercallResult | undefined {
  if (ret === H_TOO_HARD) return undefined;
  return ret === H_SUCCESS ? SUCCEEDED : { ret };
}

/** The bus address mask of each page shift, computed once. */
const PAGE_MASKS = Array.from({ length: 65 }, (_, shift) =>
  BigInt.asUintN(64, ~((1n << BigInt(shift)) - 1n)),
);

function pageMask(pageShift: number): bigint {
  return PAGE_MASKS[pageShift] ?? BigInt.asUintN(64, ~((1n << BigInt(pageShift)) - 1n));
}

/**
 * Registers H_GET_TCE, H_PUT_TCE, H_STUFF_TCE and H_PUT_TCE_INDIRECT with the checks, return codes,
 * partial updates and trace lines of QEMU 7.2's hw/ppc/spapr_iommu.c. Tables in the (simulated)
 * kernel get the same results without trace lines: under KVM those calls never reach QEMU. A table
 * kept in the kernel for VFIO (KVM_CAP_SPAPR_TCE_VFIO) is KVM's: its rules and its direct host
 * IOMMU updates (kvm-tce.ts), and QEMU's handling, traced, only where KVM answers H_TOO_HARD.
 */
export function registerTceHypercalls(
  hypercalls: HypercallRegistry,
  tables: SpaprTceTables,
  guestMemory: AddressSpace,
  owner: string,
  options: { multiTce: boolean } = { multiTce: true },
): void {
  const t = tables.traces;
  // One guest page of TCEs, read at once: the list is 4 KiB aligned and at most 4 KiB long.
  const listBytes = new Uint8Array(TCE_LIST_MAX * 8);
  const list = new DataView(listBytes.buffer);

  hypercalls.register(
    H_PUT_TCE,
    'H_PUT_TCE',
    ([liobn = 0n, ioba = 0n, tce = 0n]) => {
      const table = tables.find(liobn);
      if (!table) return FAILED;
      if (table.kvmAccelerated && table.kvmHost) {
        const answer = kernelAnswer(kvmPutTce(table, table.kvmHost, ioba, tce));
        if (answer) return answer;
      }
      const masked = ioba & pageMask(table.pageShift);
      const ret = table.putEntry(masked, tce);
      const ev = isPciLiobn(table.liobn) ? t.pciPut : t.put;
      if (ev.enabled && reachesQemu(table)) ev.emit(liobn, masked, tce, ret);
      return ret === H_SUCCESS ? SUCCEEDED : FAILED;
    },
    owner,
  );

  hypercalls.register(
    H_GET_TCE,
    'H_GET_TCE',
    ([liobn = 0n, ioba = 0n]) => {
      const table = tables.find(liobn);
      if (!table) return FAILED;
      if (table.kvmAccelerated) {
        const got = kvmGetTce(table, ioba);
        return got.ret === H_SUCCESS ? { ret: got.ret, outputs: [got.tce] } : FAILED;
      }
      const masked = ioba & pageMask(table.pageShift);
      const index = BigInt.asUintN(64, masked - table.busOffset) >> BigInt(table.pageShift);
      let ret = H_PARAMETER;
      let tce = 0n;
      if (index < BigInt(table.nbTable)) {
        tce = table.entry(Number(index));
        ret = H_SUCCESS;
      } else {
        tables.reportGuestError(`spapr_iommu_get_tce on out-of-bounds IOBA ${formatHex(masked)}`);
      }
      const ev = isPciLiobn(table.liobn) ? t.pciGet : t.get;
      if (ev.enabled && reachesQemu(table)) ev.emit(liobn, masked, ret, tce);
      return ret === H_SUCCESS ? { ret, outputs: [tce] } : FAILED;
    },
    owner,
  );

  if (!options.multiTce) return;

  hypercalls.register(
    H_PUT_TCE_INDIRECT,
    'H_PUT_TCE_INDIRECT',
    ([liobn = 0n, ioba = 0n, tceList = 0n, npages = 0n]) => {
      const table = tables.find(liobn);
      if (!table) return FAILED;
      if (table.kvmAccelerated && table.kvmHost) {
        const answer = kernelAnswer(
          kvmPutTceIndirect(table, table.kvmHost, guestMemory, ioba, tceList, npages),
        );
        if (answer) return answer;
      }
      if (npages > BigInt(TCE_LIST_MAX) || (tceList & SPAPR_TCE_PAGE_OFFSET_MASK) !== 0n) return FAILED;
      const count = Number(npages);
      const start = ioba & pageMask(table.pageShift);
      // An unreadable list reads as zeros, as QEMU's ldq_be_phys of unassigned memory.
      guestMemory.read(tceList, count === TCE_LIST_MAX ? listBytes : listBytes.subarray(0, count * 8));
      const stored = table.putList(start, count, list);
      const ok = count > 0 && stored === count;
      if (!ok && count > 0)
        tables.reportGuestError(
          `spapr_vio_put_tce on out-of-bounds IOBA ${formatHex(start + (BigInt(stored) << BigInt(table.pageShift)))}`,
        );
      const ev = isPciLiobn(table.liobn) ? t.pciIndirect : t.indirect;
      if (ev.enabled && reachesQemu(table)) {
        // QEMU traces the index before the one that stopped the loop, and the TCE it last read.
        const lastRead = ok ? count - 1 : stored;
        const idx = ok ? count - 1 : stored > 0 ? stored - 1 : 0;
        const tceN = count > 0 ? list.getBigUint64(lastRead * 8) : 0n;
        ev.emit(liobn, ioba, tceList, idx, tceN, ok ? H_SUCCESS : H_PARAMETER);
      }
      return ok ? SUCCEEDED : FAILED;
    },
    owner,
  );

  hypercalls.register(
    H_STUFF_TCE,
    'H_STUFF_TCE',
    ([liobn = 0n, ioba = 0n, tceValue = 0n, npages = 0n]) => {
      const table = tables.find(liobn);
      if (!table) return FAILED;
      if (table.kvmAccelerated) {
        const answer = kernelAnswer(kvmStuffTce(table, ioba, tceValue, npages));
        if (answer) return answer;
      }
      if (npages > BigInt(table.nbTable)) return FAILED;
      const count = Number(npages);
      const start = ioba & pageMask(table.pageShift);
      const high = Number(tceValue >> 32n) >>> 0;
      const low = Number(tceValue & 0xffffffffn) >>> 0;
      const stored = table.putRepeated(start, count, high, low);
      const ok = count > 0 && stored === count;
      if (!ok && count > 0)
        tables.reportGuestError(
          `spapr_vio_put_tce on out-of-bounds IOBA ${formatHex(start + (BigInt(stored) << BigInt(table.pageShift)))}`,
        );
      const ev = isPciLiobn(table.liobn) ? t.pciStuff : t.stuff;
      // QEMU prints the ioba its loop reached, not the one the guest passed.
      if (ev.enabled && reachesQemu(table))
        ev.emit(
          liobn,
          BigInt.asUintN(64, start + (BigInt(stored) << BigInt(table.pageShift))),
          tceValue,
          npages,
          ok ? H_SUCCESS : H_PARAMETER,
        );
      return ok ? SUCCEEDED : FAILED;
    },
    owner,
  );
}

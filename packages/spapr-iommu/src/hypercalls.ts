import type { HypercallRegistry, HypercallResult } from '@ddw/machine';
import type { AddressSpace } from '@ddw/memory';
import type { SpaprTceTables } from './tables.js';
import { H_PARAMETER, H_SUCCESS, isPciLiobn } from './tce-table.js';

export const H_GET_TCE = 0x1c;
export const H_PUT_TCE = 0x20;
export const H_STUFF_TCE = 0x138;
export const H_PUT_TCE_INDIRECT = 0x13c;

/** Most entries one H_PUT_TCE_INDIRECT may carry: one 4 KiB page of TCEs. */
export const TCE_LIST_MAX = 512;
const SPAPR_TCE_PAGE_OFFSET_MASK = 0xfffn;

const FAILED: HypercallResult = { ret: H_PARAMETER };
const SUCCEEDED: HypercallResult = { ret: H_SUCCESS };

function pageMask(pageShift: number): bigint {
  return BigInt.asUintN(64, ~((1n << BigInt(pageShift)) - 1n));
}

/**
 * Registers H_GET_TCE, H_PUT_TCE, H_STUFF_TCE and H_PUT_TCE_INDIRECT with the checks, return codes,
 * partial updates and trace lines of QEMU 7.2's hw/ppc/spapr_iommu.c. Tables in the (simulated)
 * kernel get the same results without trace lines: under KVM those calls never reach QEMU.
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
  const listHigh = (i: number) => list.getUint32(i * 8);
  const listLow = (i: number) => list.getUint32(i * 8 + 4);

  hypercalls.register(
    H_PUT_TCE,
    'H_PUT_TCE',
    ([liobn = 0n, ioba = 0n, tce = 0n]) => {
      const table = tables.find(liobn);
      if (!table) return FAILED;
      const masked = ioba & pageMask(table.pageShift);
      const ret = table.putEntry(masked, tce);
      const ev = isPciLiobn(table.liobn) ? t.pciPut : t.put;
      if (ev.enabled && !table.inKernel) ev.emit(liobn, masked, tce, ret);
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
      const masked = ioba & pageMask(table.pageShift);
      const index = BigInt.asUintN(64, masked - table.busOffset) >> BigInt(table.pageShift);
      let ret = H_PARAMETER;
      let tce = 0n;
      if (index < BigInt(table.nbTable)) {
        tce = table.entry(Number(index));
        ret = H_SUCCESS;
      } else {
        tables.reportGuestError(`spapr_iommu_get_tce on out-of-bounds IOBA 0x${masked.toString(16)}`);
      }
      const ev = isPciLiobn(table.liobn) ? t.pciGet : t.get;
      if (ev.enabled && !table.inKernel) ev.emit(liobn, masked, ret, tce);
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
      if (npages > BigInt(TCE_LIST_MAX) || (tceList & SPAPR_TCE_PAGE_OFFSET_MASK) !== 0n) return FAILED;
      const count = Number(npages);
      const start = ioba & pageMask(table.pageShift);
      // An unreadable list reads as zeros, as QEMU's ldq_be_phys of unassigned memory.
      guestMemory.read(tceList, listBytes.subarray(0, count * 8));
      const stored = table.putEntries(start, count, listHigh, listLow);
      const ok = count > 0 && stored === count;
      if (!ok && count > 0)
        tables.reportGuestError(
          `spapr_vio_put_tce on out-of-bounds IOBA 0x${(start + (BigInt(stored) << BigInt(table.pageShift))).toString(16)}`,
        );
      const ev = isPciLiobn(table.liobn) ? t.pciIndirect : t.indirect;
      if (ev.enabled && !table.inKernel) {
        // QEMU traces the index before the one that stopped the loop, and the TCE it last read.
        const lastRead = ok ? count - 1 : stored;
        const idx = ok ? count - 1 : stored > 0 ? stored - 1 : 0;
        const tceN = count > 0 ? (BigInt(listHigh(lastRead)) << 32n) | BigInt(listLow(lastRead)) : 0n;
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
      if (npages > BigInt(table.nbTable)) return FAILED;
      const count = Number(npages);
      const start = ioba & pageMask(table.pageShift);
      const high = Number(tceValue >> 32n) >>> 0;
      const low = Number(tceValue & 0xffffffffn) >>> 0;
      const stored = table.putEntries(
        start,
        count,
        () => high,
        () => low,
      );
      const ok = count > 0 && stored === count;
      if (!ok && count > 0)
        tables.reportGuestError(
          `spapr_vio_put_tce on out-of-bounds IOBA 0x${(start + (BigInt(stored) << BigInt(table.pageShift))).toString(16)}`,
        );
      const ev = isPciLiobn(table.liobn) ? t.pciStuff : t.stuff;
      // QEMU prints the ioba its loop reached, not the one the guest passed.
      if (ev.enabled && !table.inKernel)
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

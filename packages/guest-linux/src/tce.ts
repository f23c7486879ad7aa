import { formatHex, H_NOT_ENOUGH_RESOURCES, H_PUT_TCE, H_PUT_TCE_INDIRECT, H_STUFF_TCE } from '@ddw/machine';
import type { LinuxGeneration, LinuxGuestPort } from './api.js';

/** TCE permission bits (reference 1.3): the device may read / may write the page. */
export const TCE_READ = 1n;
export const TCE_WRITE = 2n;
/** One 4 KiB page of 8-byte TCEs: the most one H_PUT_TCE_INDIRECT or (6.1) H_STUFF_TCE carries. */
export const TCES_PER_CALL = 512;
const TWO_32 = 2 ** 32;

export interface PutResult {
  /** Whether the caller should treat the operation as failed. */
  failed: boolean;
  /** The return code that made it fail (or the last non-zero one that was only logged). */
  rc: bigint;
}

/**
 * The guest's TCE hypercall layer: how Linux turns "these pages, from this bus address" into
 * H_PUT_TCE, H_PUT_TCE_INDIRECT and H_STUFF_TCE calls. Lists go through one guest page at
 * `listAddress`, filled with a DataView so that large populates stay cheap.
 */
export class TceCalls {
  private readonly listBytes = new Uint8Array(TCES_PER_CALL * 8);
  private readonly listView = new DataView(this.listBytes.buffer);
  /** Hypercalls issued, by name, for reports. */
  readonly counts = { H_PUT_TCE: 0, H_PUT_TCE_INDIRECT: 0, H_STUFF_TCE: 0 };

  constructor(
    private readonly port: LinuxGuestPort,
    private readonly generation: LinuxGeneration,
    /** Whether /rtas ibm,hypertas-functions has hcall-multi-tce. */
    readonly multiTce: boolean,
    private readonly listAddress: bigint,
    private readonly log: (line: string) => void,
  ) {}

  putTce(liobn: number, ioba: bigint, tce: bigint): bigint {
    this.counts.H_PUT_TCE++;
    return this.port.hcall(H_PUT_TCE, BigInt(liobn), ioba, tce).ret;
  }

  stuffTce(liobn: number, ioba: bigint, value: bigint, count: number): bigint {
    this.counts.H_STUFF_TCE++;
    return this.port.hcall(H_STUFF_TCE, BigInt(liobn), ioba, value, BigInt(count)).ret;
  }

  /**
   * A DMA-API mapping of `count` pages: `count` TCEs for consecutive pages from `firstTce`,
   * at consecutive bus pages from `ioba`. One page, or no multi-TCE: an H_PUT_TCE per page;
   * otherwise indirect lists. Only H_NOT_ENOUGH_RESOURCES fails the mapping (what was already set
   * is cleared again); anything else is logged and the mapping stands, as in Linux.
   */
  mapPages(liobn: number, ioba: bigint, pageShift: number, firstTce: bigint, count: number): PutResult {
    const pageSize = 1n << BigInt(pageShift);
    let lastBad = 0n;
    if (count === 1 || !this.multiTce) {
      for (let i = 0; i < count; i++) {
        const step = BigInt(i) * pageSize;
        const rc = this.putTce(liobn, ioba + step, firstTce + step);
        if (rc === H_NOT_ENOUGH_RESOURCES) {
          this.freePages(liobn, ioba, pageShift, i);
          return { failed: true, rc };
        }
        if (rc !== 0n) {
          lastBad = rc;
          this.log(
            `tce_build: H_PUT_TCE liobn ${formatHex(liobn)} ioba ${busAddressHex(ioba + step)} rc ${rc}`,
          );
        }
      }
      return { failed: false, rc: lastBad };
    }
    for (let done = 0; done < count; done += TCES_PER_CALL) {
      const k = Math.min(TCES_PER_CALL, count - done);
      const offset = BigInt(done) * pageSize;
      const rc = this.putIndirect(liobn, ioba + offset, firstTce + offset, pageShift, k);
      if (rc === H_NOT_ENOUGH_RESOURCES) {
        this.freePages(liobn, ioba, pageShift, done);
        return { failed: true, rc };
      }
      if (rc !== 0n) {
        lastBad = rc;
        this.log(
          `tce_buildmulti: H_PUT_TCE_INDIRECT liobn ${formatHex(liobn)} ioba ${busAddressHex(ioba + offset)} npages ${k} rc ${rc}`,
        );
      }
    }
    return { failed: false, rc: lastBad };
  }

  /**
   * Populating a direct window over [phys, phys + count pages): with multi-TCE, lists of up to
   * 512 until a call fails (that call's rc is the error); without, an H_PUT_TCE per page where
   * only H_NOT_ENOUGH_RESOURCES is an error (and the entries set so far are cleared).
   */
  populate(liobn: number, windowAddr: bigint, phys: bigint, pageShift: number, count: number): bigint {
    const pageSize = 1n << BigInt(pageShift);
    const tce0 = phys | TCE_READ | TCE_WRITE;
    if (!this.multiTce) {
      for (let i = 0; i < count; i++) {
        const step = BigInt(i) * pageSize;
        const rc = this.putTce(liobn, windowAddr + phys + step, tce0 + step);
        if (rc === H_NOT_ENOUGH_RESOURCES) {
          this.freePages(liobn, windowAddr + phys, pageShift, i);
          return rc;
        }
      }
      return 0n;
    }
    // Like the kernel's do-while, a range shorter than one TCE still makes a call (of 0 entries).
    let rc = 0n;
    let done = 0;
    do {
      const k = Math.min(TCES_PER_CALL, count - done);
      const offset = BigInt(done) * pageSize;
      rc = this.putIndirect(liobn, windowAddr + phys + offset, tce0 + offset, pageShift, k);
      done += k;
    } while (done < count && rc === 0n);
    return rc;
  }

  /**
   * Frees `count` entries from `ioba` as the DMA API and a table's initial clear do: 6.1 sends
   * H_STUFF_TCE chunks of up to 512 (logging failures and going on), 4.x one H_STUFF_TCE for the
   * whole count; without multi-TCE, an H_PUT_TCE of 0 per entry.
   */
  freePages(liobn: number, ioba: bigint, pageShift: number, count: number): void {
    if (count <= 0) return;
    const pageSize = 1n << BigInt(pageShift);
    if (!this.multiTce) {
      for (let i = 0; i < count; i++) {
        const at = ioba + BigInt(i) * pageSize;
        const rc = this.putTce(liobn, at, 0n);
        if (rc !== 0n)
          this.log(`tce_free: H_PUT_TCE liobn ${formatHex(liobn)} ioba ${busAddressHex(at)} rc ${rc}`);
      }
      return;
    }
    if (this.generation === 'linux-4.x') {
      const rc = this.stuffTce(liobn, ioba, 0n, count);
      if (rc !== 0n)
        this.log(`tce_freemulti: H_STUFF_TCE liobn ${formatHex(liobn)} npages ${count} rc ${rc}`);
      return;
    }
    for (let done = 0; done < count; done += TCES_PER_CALL) {
      const k = Math.min(TCES_PER_CALL, count - done);
      const at = ioba + BigInt(done) * pageSize;
      const rc = this.stuffTce(liobn, at, 0n, k);
      if (rc !== 0n) {
        this.log(
          `tce_freemulti: H_STUFF_TCE liobn ${formatHex(liobn)} ioba ${busAddressHex(at)} npages ${k} rc ${rc}`,
        );
      }
    }
  }

  /**
   * Clearing a range of a direct window (a failed populate, a window being removed): H_STUFF_TCE
   * chunks of up to 512 that stop at the first failure, with no H_PUT_TCE fallback. Returns the
   * failing rc or 0.
   */
  clearRange(liobn: number, ioba: bigint, pageShift: number, count: bigint): bigint {
    const pageSize = 1n << BigInt(pageShift);
    let rc = 0n;
    let left = count;
    let at = ioba;
    // A count of 0 still makes one call with 0 entries, as the kernel's do-while loop does.
    do {
      const k = left < BigInt(TCES_PER_CALL) ? Number(left) : TCES_PER_CALL;
      rc = this.stuffTce(liobn, BigInt.asUintN(64, at), 0n, k);
      at += BigInt(k) * pageSize;
      left -= BigInt(k);
    } while (left > 0n && rc === 0n);
    return rc;
  }

  private putIndirect(
    liobn: number,
    ioba: bigint,
    firstTce: bigint,
    pageShift: number,
    count: number,
  ): bigint {
    const view = this.listView;
    const pageSize = 2 ** pageShift;
    const first = Number(firstTce);
    if (Number.isSafeInteger(first + count * pageSize)) {
      // Halves kept apart so the loop is integer additions, not a division per entry.
      let high = Math.floor(first / TWO_32);
      let low = first - high * TWO_32;
      if (pageSize < TWO_32) {
        // int32 words: a wrap of the low word is the carry into the high one.
        const step = pageSize | 0;
        high |= 0;
        low |= 0;
        for (let p = 0, end = count * 8; p < end; p += 8) {
          view.setInt32(p, high);
          view.setInt32(p + 4, low);
          const next = (low + step) | 0;
          if (next >>> 0 < low >>> 0) high = (high + 1) | 0;
          low = next;
        }
      } else {
        for (let j = 0; j < count; j++) {
          view.setUint32(j * 8, high);
          view.setUint32(j * 8 + 4, low);
          low += pageSize;
          if (low >= TWO_32) {
            const carry = Math.floor(low / TWO_32);
            high += carry;
            low -= carry * TWO_32;
          }
        }
      }
    } else {
      for (let j = 0; j < count; j++) {
        view.setBigUint64(j * 8, BigInt.asUintN(64, firstTce + (BigInt(j) << BigInt(pageShift))));
      }
    }
    this.port.memory.write(this.listAddress, this.listBytes.subarray(0, count * 8));
    this.counts.H_PUT_TCE_INDIRECT++;
    return this.port.hcall(H_PUT_TCE_INDIRECT, BigInt(liobn), ioba, this.listAddress, BigInt(count)).ret;
  }
}

/** A bus address as the kernel's 0x%llx prints it: wrapped to 64 bits. */
function busAddressHex(v: bigint): string {
  return formatHex(BigInt.asUintN(64, v));
}
